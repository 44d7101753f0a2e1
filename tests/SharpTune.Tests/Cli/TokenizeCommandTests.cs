// `sharptune tokenize` on the real Llama 3 and stories260K tokenizer files: it prints the library's TokenizeReport
// ({"ids","count","pieces"}, plus "mask" with --chat, as docs/data.md says), ids equal the published/known ids, the
// flags change exactly what they say, and --chat reads a JSON message array in the chat format.
using System.Text.Json;
using SharpTune.Tests.Tokenizers;

namespace SharpTune.Tests.Cli;

public sealed class TokenizeCommandTests
{
    private const string Sentence = "Hello world! Below is an instruction that describes a task.";
    private static readonly int[] SentenceIds = [9906, 1917, 0, 21883, 374, 459, 7754, 430, 16964, 264, 3465, 13];

    private sealed record Report(int[] Ids, int Count, string[] Pieces, bool[]? Mask);

    private static Report Parse(CliResult r)
    {
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal(root.TryGetProperty("mask", out _) ? ["ids", "count", "pieces", "mask"] : ["ids", "count", "pieces"],
            root.EnumerateObject().Select(p => p.Name));
        return new Report(
            [.. root.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32())],
            root.GetProperty("count").GetInt32(),
            [.. root.GetProperty("pieces").EnumerateArray().Select(e => e.GetString()!)],
            root.TryGetProperty("mask", out var m) ? [.. m.EnumerateArray().Select(e => e.GetBoolean())] : null);
    }

    [SharedDataFact(TokenizerFiles.Llama3Json)]
    public void Tokenize_Llama3Text_PrintsIdsCountAndPieces()
    {
        var path = SharedData.PathOf(TokenizerFiles.Llama3Json);
        var r = Parse(CliHarness.Run("tokenize", "--tokenizer", path, "--text", Sentence));
        Assert.Equal([128000, .. SentenceIds], r.Ids);
        Assert.Equal(r.Ids.Length, r.Count);
        Assert.Equal(r.Ids.Length, r.Pieces.Length);
        Assert.Equal("<|begin_of_text|>" + Sentence, string.Concat(r.Pieces));
        Assert.Null(r.Mask);
        Assert.Equal([.. SentenceIds, 128001], Parse(CliHarness.Run("tokenize", "--tokenizer", path, "--text", Sentence, "--no-bos", "--eos")).Ids);
    }

    [SharedDataFact(TokenizerFiles.Llama3Json)]
    public void Tokenize_Llama3ChatPlainText_UserPromptMaskedEndOnlyWithEos()
    {
        // <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n Hello world!...: a prompt, open for the reply
        var path = SharedData.PathOf(TokenizerFiles.Llama3Json);
        var r = Parse(CliHarness.Run("tokenize", "--tokenizer", path, "--text", Sentence, "--chat"));
        Assert.Equal([128000, 128006, 882, 128007, 271, .. SentenceIds], r.Ids); // 882 "user", 271 "\n\n"
        Assert.Equal(r.Ids.Length, r.Mask!.Length);
        Assert.All(r.Mask, Assert.True); // a user message is not trained on
        // --eos closes the turn (<|eot_id|>) and the sequence (<|end_of_text|>), as a training sample ends.
        var closed = Parse(CliHarness.Run("tokenize", "--tokenizer", path, "--text", Sentence, "--chat", "--eos"));
        Assert.Equal([.. r.Ids, 128009, 128001], closed.Ids);
    }

    [SharedDataFact(TokenizerFiles.Llama3Json)]
    public void Tokenize_Llama3ChatJsonMessages_AppliesFormatAndMask()
    {
        const string messages = """[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]""";
        var r = Parse(CliHarness.Run("tokenize", "--tokenizer", SharedData.PathOf(TokenizerFiles.Llama3Json), "--text", messages, "--chat"));
        var tok = TokenizerFiles.Llama3;
        // Two turns of the Llama 3 format, then <|end_of_text|> because the last message is the assistant's.
        int[] expected = [128000, 128006, .. tok.Encode("user", false, false), 128007, .. tok.Encode("\n\nHi", false, false), 128009,
            128006, .. tok.Encode("assistant", false, false), 128007, .. tok.Encode("\n\nHello", false, false), 128009, 128001];
        Assert.Equal(expected, r.Ids);
        Assert.DoesNotContain(tok.Encode("role", false, false)[0], r.Ids); // the JSON is parsed, not encoded as text
        var hello = Array.IndexOf(r.Pieces, "Hello");
        Assert.True(hello > 0, string.Join("|", r.Pieces));
        Assert.False(r.Mask![hello]);                                 // the assistant's reply is trained on
        Assert.True(r.Mask[Array.IndexOf(r.Pieces, "Hi")]);           // the user's turn is not
    }

    [SharedDataFact(TokenizerFiles.Llama3Json)]
    public void Tokenize_ChatMalformedJson_OneLineError()
    {
        var r = CliHarness.Run("tokenize", "--tokenizer", SharedData.PathOf(TokenizerFiles.Llama3Json), "--text", """[{"role":"user"}]""", "--chat");
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("error: --chat: expected a JSON array", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Tokenize_FileWithSentencePiece_PiecesKeepWordSpaces()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "Once upon a time");
            var r = Parse(CliHarness.Run("tokenize", "--tokenizer", SharedData.PathOf(TokenizerFiles.Tok512Model), "--file", file));
            Assert.Equal(TokenizerFiles.Tok512.Encode("Once upon a time", addBos: true, addEos: false), r.Ids);
            Assert.Equal("Once upon a time", string.Concat(r.Pieces).Replace("<s>", "").Trim());
            Assert.Equal(" upon", r.Pieces[2]);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void Tokenize_TextAndFileTogether_UsageError()
    {
        var r = CliHarness.Run("tokenize", "--tokenizer", "x", "--text", "a", "--file", "b");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("exactly one of --text and --file", r.Err + r.Out);
    }
}

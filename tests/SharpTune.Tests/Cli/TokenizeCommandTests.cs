// `sharptune tokenize` on the real Llama 3 and stories260K tokenizer files: ids equal the published/known ids, the
// flags change exactly what they say, --chat applies the chat format.
using System.Text.Json;
using SharpTune.Tests.Tokenizers;

namespace SharpTune.Tests.Cli;

public sealed class TokenizeCommandTests
{
    private const string Sentence = "Hello world! Below is an instruction that describes a task.";
    private static readonly int[] SentenceIds = [9906, 1917, 0, 21883, 374, 459, 7754, 430, 16964, 264, 3465, 13];

    private static int[] Ids(CliResult r)
    {
        Assert.True(r.ExitCode == 0, r.Err);
        return JsonSerializer.Deserialize<int[]>(r.Out)!;
    }

    [SharedDataFact(TokenizerFiles.Llama3Json)]
    public void Tokenize_Llama3Text_PrintsKnownIdsWithBos()
    {
        var path = SharedData.PathOf(TokenizerFiles.Llama3Json);
        Assert.Equal([128000, .. SentenceIds], Ids(CliHarness.Run("tokenize", "--tokenizer", path, "--text", Sentence)));
        Assert.Equal([.. SentenceIds, 128001], Ids(CliHarness.Run("tokenize", "--tokenizer", path, "--text", Sentence, "--no-bos", "--eos")));
    }

    [SharedDataFact(TokenizerFiles.Llama3Json)]
    public void Tokenize_Llama3Chat_WrapsUserMessage()
    {
        // <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n Hello world!...<|eot_id|>
        var ids = Ids(CliHarness.Run("tokenize", "--tokenizer", SharedData.PathOf(TokenizerFiles.Llama3Json), "--text", Sentence, "--chat"));
        Assert.Equal([128000, 128006], ids[..2]);
        Assert.Equal(128007, ids[3]);
        Assert.Equal(271, ids[4]); // "\n\n"
        Assert.Equal(SentenceIds, ids[5..(5 + SentenceIds.Length)]);
        Assert.Equal(128009, ids[5 + SentenceIds.Length]);
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Tokenize_FileWithPieces_MatchesTokenizerAndDecodes()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "Once upon a time");
            var r = CliHarness.Run("tokenize", "--tokenizer", SharedData.PathOf(TokenizerFiles.Tok512Model), "--file", file, "--pieces");
            Assert.True(r.ExitCode == 0, r.Err);
            var pieces = JsonSerializer.Deserialize<JsonElement[]>(r.Out)!;
            var expected = TokenizerFiles.Tok512.Encode("Once upon a time", addBos: true, addEos: false);
            Assert.Equal(expected, pieces.Select(p => p.GetProperty("id").GetInt32()).ToArray());
            Assert.Equal("Once upon a time", string.Concat(pieces.Select(p => p.GetProperty("text").GetString())).Replace("<s>", "").Trim());
            Assert.Equal(" upon", pieces[2].GetProperty("text").GetString());
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

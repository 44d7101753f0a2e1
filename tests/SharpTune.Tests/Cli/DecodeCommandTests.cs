// `sharptune decode` inverts `tokenize` on the real stories260K SentencePiece tokenizer: tokenize's ids (or its whole
// JSON output) decode back to the text, special tokens are printed or skipped as asked, and bad input is refused
// with the item and the vocabulary range.
using System.Text.Json;
using SharpTune.Cli.Commands;
using SharpTune.Tests.Tokenizers;

namespace SharpTune.Tests.Cli;

public sealed class DecodeCommandTests
{
    private const string Text = "Once upon a time, there was a little girl named Lily.";

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Decode_TokenizeOutput_GivesTheTextBack()
    {
        var tok = SharedData.PathOf(TokenizerFiles.Tok512Model);
        var tokenized = CliHarness.Run("tokenize", "--tokenizer", tok, "--text", Text, "--eos");
        Assert.True(tokenized.ExitCode == 0, tokenized.Err);
        var ids = JsonDocument.Parse(tokenized.Out).RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(1, ids[0]); // BOS

        var skipped = CliHarness.Run("decode", "--tokenizer", tok, "--ids", string.Join(' ', ids), "--skip-special");
        Assert.True(skipped.ExitCode == 0, skipped.Err);
        Assert.Equal(Text + "\n", skipped.Out);

        var file = Path.Combine(Path.GetTempPath(), $"sharptune-ids-{Guid.NewGuid():N}.json");
        File.WriteAllText(file, tokenized.Out);
        try
        {
            var whole = CliHarness.Run("decode", "--tokenizer", tok, "--file", file);
            Assert.True(whole.ExitCode == 0, whole.Err);
            Assert.StartsWith("<s>", whole.Out, StringComparison.Ordinal); // special tokens printed unless skipped
            Assert.Contains(Text, whole.Out, StringComparison.Ordinal);
        }
        finally { File.Delete(file); }
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Decode_IdOutsideVocabulary_RefusedWithRange()
    {
        var r = CliHarness.Run("decode", "--tokenizer", SharedData.PathOf(TokenizerFiles.Tok512Model), "--ids", "1,2,512");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("id 512 is outside the tokenizer's vocabulary [0, 512)", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void ParseIds_SeparatorsJsonAndJunk()
    {
        Assert.Equal([1, 2, 3, 4], DecodeCommand.ParseIds("1 2,3\n4", "x"));
        Assert.Equal([5, 6], DecodeCommand.ParseIds("[5, 6]", "x"));
        Assert.Equal([7], DecodeCommand.ParseIds("{\"ids\":[7],\"count\":1}", "x"));
        var e = Assert.Throws<ArgumentException>(() => DecodeCommand.ParseIds("1 two 3", "ids.txt"));
        Assert.Contains("ids.txt: 'two' (item 2) is not an integer token id", e.Message, StringComparison.Ordinal);
    }
}

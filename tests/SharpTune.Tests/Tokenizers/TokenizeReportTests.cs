using System.Text.Json;
using SharpTune.Cli.Commands;
using SharpTune.Tokenizers;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Tokenizers;

public sealed class TokenizeReportTests
{
    [SharedDataFact(Llama3Json)]
    public void ToJson_PlainText_PrintsPublishedIdsAsJson()
    {
        var json = TokenizeReport.ToJson(TokenizerLoader.Load(SharedData.PathOf("tokenizers/llama3")),
            "Hello world! Below is an instruction that describes a task.", chat: false, addBos: true, addEos: false);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal([128_000, 9906, 1917, 0, 21883, 374, 459, 7754, 430, 16964, 264, 3465, 13],
            doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(" world", doc.RootElement.GetProperty("pieces")[2].GetString());
    }

    [SharedDataFact(Qwen3Json)]
    public void ToJson_ChatJson_PrintsChatMlIdsAndMask()
    {
        var json = TokenizeReport.ToJson(TokenizerLoader.Load(SharedData.PathOf(Qwen3Json)),
            """[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]""", chat: true, addBos: true, addEos: false);
        using var doc = JsonDocument.Parse(json);
        var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(151_644, ids[0]);
        Assert.Equal(151_645, ids[^1]);
        var mask = doc.RootElement.GetProperty("mask").EnumerateArray().Select(e => e.GetBoolean()).ToArray();
        Assert.True(mask[0]);
        Assert.False(mask[^1]);
    }

    [Fact]
    public void Validate_TextAndFileBoth_Fails()
    {
        var r = new TokenizeCommand.Settings { Tokenizer = "x", Text = "a", File = "b" }.Validate();
        Assert.False(r.Successful);
    }
}

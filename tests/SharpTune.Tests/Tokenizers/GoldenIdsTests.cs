// Compares our ids with golden ids produced by Hugging Face's own JavaScript tokenizer implementation
// (@huggingface/tokenizers 0.2.0, reading the same tokenizer.json/tokenizer_config.json) on Unicode edge cases and
// Alpaca fields (referenced by shard/row/field; the text itself is read from the shared data, not stored here).
using System.Text.Json;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;
using SharpTune.Tokenizers;

namespace SharpTune.Tests.Tokenizers;

public sealed class GoldenIdsTests
{
    private static readonly Lazy<JsonDocument> s_golden = new(() => JsonDocument.Parse(File.ReadAllBytes(
        Path.Combine(SharedData.RepoRoot, "tests", "SharpTune.Tests", "Tokenizers", "Golden", "hf_tokenizers_js_ids.json"))));

    [SharedDataTheory(Llama3Json, Qwen3Json, Alpaca)]
    [InlineData("llama3")]
    [InlineData("qwen3")]
    public void Encode_EdgeCasesAndAlpaca_EqualHuggingFaceIds(string family)
    {
        ITokenizer tok = family == "llama3" ? TokenizerFiles.Llama3 : TokenizerFiles.Qwen;
        var root = s_golden.Value.RootElement;
        var edge = root.GetProperty("edge").EnumerateArray().Select(e => e.GetString()!).ToArray();
        var edgeIds = root.GetProperty(family).GetProperty("edge").EnumerateArray().ToArray();
        var failures = new List<string>();
        for (var i = 0; i < edge.Length; i++)
        {
            var expected = edgeIds[i].EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var actual = tok.Encode(edge[i], addBos: false, addEos: false).ToArray();
            if (!expected.SequenceEqual(actual)) failures.Add($"edge {i} '{edge[i]}': HF [{string.Join(",", expected)}] vs [{string.Join(",", actual)}]");
        }
        var shards = new Dictionary<int, JsonElement>();
        var checkedAlpaca = 0;
        foreach (var g in root.GetProperty(family).GetProperty("alpaca").EnumerateArray())
        {
            var shard = g.GetProperty("shard").GetInt32();
            if (!shards.TryGetValue(shard, out var rows))
                shards[shard] = rows = JsonDocument.Parse(File.ReadAllBytes(SharedData.PathOf($"alpaca/alpaca_data_cleaned_{shard}.json"))).RootElement;
            var text = rows[g.GetProperty("row").GetInt32()].GetProperty(g.GetProperty("field").GetString()!).GetString()!;
            var expected = g.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var actual = tok.Encode(text, addBos: false, addEos: false).ToArray();
            if (!expected.SequenceEqual(actual)) failures.Add($"alpaca {shard}/{g.GetProperty("row")}: '{text[..Math.Min(60, text.Length)]}'");
            checkedAlpaca++;
        }
        Assert.True(checkedAlpaca > 200, $"only {checkedAlpaca} golden Alpaca strings");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }
}

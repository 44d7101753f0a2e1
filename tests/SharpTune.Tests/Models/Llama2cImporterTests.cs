using Microsoft.ML.Tokenizers;
using Xunit.Abstractions;
using SharpTune.Eval;
using SharpTune.Models;
using SharpTune.Models.Llama2c;
using SharpTune.Modules;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Models;

public sealed class Llama2cImporterTests(ITestOutputHelper output)
{
    private const string Bin = "models/stories260K/stories260K.bin";
    private const string Tok = "models/stories260K/tok512.model";
    private const string Expected = "models/stories260K/EXPECTED_greedy.txt";

    [SharedDataFact(Bin, Tok, Expected)]
    public void Generate_Stories260KGreedyFromBos_EqualsAuthorsDocumentedOutput()
    {
        // Given Karpathy's stories260K imported from llama2.c format into HF layout
        TorchRuntime.EnsureLoaded();
        var imported = Llama2cImporter.Read(SharedData.PathOf(Bin));
        using var model = HfModels.FromConfig(imported.Config);
        model.LoadStateDict(imported.StateDict);

        // When generating greedily from BOS over 256 positions (run.c: 256 forwards, stop if BOS is produced)
        var result = Generation.Generate(model, [], new GenerationOptions { BosId = 1, MaxNewTokens = 256, StopTokens = [1] });

        // Then SentencePiece decoding (which drops the leading space after BOS, as run.c does) is the documented text
        using var stream = File.OpenRead(SharedData.PathOf(Tok));
        var tokenizer = LlamaTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false);
        var generated = result.GeneratedTokens.Where(t => t != 1).ToList();
        var text = tokenizer.Decode(generated);
        Assert.Equal(File.ReadAllText(SharedData.PathOf(Expected)).TrimEnd('\n'), text.TrimEnd('\n'));
        Assert.True(result.TokensPerSecond > 0);
        output.WriteLine($"stories260K greedy: {result.GeneratedTokens.Count} tokens, {result.TokensPerSecond:F0} tokens/s (prefill {result.PrefillTime.TotalMilliseconds:F0} ms)");
    }

    [SharedDataFact(Bin)]
    public void Read_Stories260K_HeaderAndShapesMatchSourceDescription()
    {
        TorchRuntime.EnsureLoaded();
        var m = Llama2cImporter.Read(SharedData.PathOf(Bin));
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (m.Config.HiddenSize, m.Config.IntermediateSize, m.Config.NumHiddenLayers,
            m.Config.NumAttentionHeads, m.Config.NumKeyValueHeads, m.Config.VocabSize, m.Config.MaxPositionEmbeddings));
        Assert.True(m.Config.TieWordEmbeddings);
        Assert.DoesNotContain("lm_head.weight", m.StateDict.Keys);
        Assert.Equal(new long[] { 32, 64 }, m.StateDict["model.layers.0.self_attn.k_proj.weight"].shape);
        // 260K parameters + RoPE tables = 264,128 floats in the file; the state dict holds all but the 4,096 RoPE floats.
        Assert.Equal(264_128 - 4_096, m.StateDict.Values.Sum(t => t.numel()));
    }

    [Fact]
    public void PermuteToRotateHalf_InterleavedPairs_BecomeHalves()
    {
        // Given one head of dim 4 whose rows are the interleaved pairs (r0, r1), (r2, r3)
        TorchRuntime.EnsureLoaded();
        var w = arange(8, dtype: ScalarType.Float32).reshape(4, 2); // rows [0,1],[2,3],[4,5],[6,7]
        // When permuted, the rotate-half layout lists the first elements of each pair, then the second elements
        var p = Llama2cImporter.PermuteToRotateHalf(w, 1);
        Assert.Equal(new float[] { 0, 1, 4, 5, 2, 3, 6, 7 }, p.data<float>().ToArray());
    }

    [Fact]
    public void Read_TruncatedFile_ErrorNamesFileAndSizes()
    {
        TorchRuntime.EnsureLoaded();
        var path = Path.GetTempFileName();
        try
        {
            var header = new[] { 8, 16, 1, 2, 2, 10, 8 };
            var bytes = new byte[28 + 40];
            Buffer.BlockCopy(header, 0, bytes, 0, 28);
            File.WriteAllBytes(path, bytes);
            var e = Assert.Throws<InvalidDataException>(() => Llama2cImporter.Read(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("expected", e.Message);
        }
        finally { File.Delete(path); }
    }
}

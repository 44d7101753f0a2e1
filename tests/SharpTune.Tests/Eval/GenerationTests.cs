using SharpTune.Eval;
using SharpTune.Models.Llama2;
using SharpTune.Modules;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Eval;

public sealed class GenerationTests
{
    public GenerationTests() => TorchRuntime.EnsureLoaded();

    private static TransformerDecoder Model(bool tie = true)
    {
        manual_seed(11);
        return Llama2Models.Tiny(tie);
    }

    [Fact]
    public void Generate_Greedy_EqualsArgmaxOfFullRecomputationEachStep()
    {
        using var model = Model();
        model.eval();
        int[] prompt = [3, 17, 42];
        var result = Generation.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 8 });
        // Reference: no cache, re-run the whole sequence each step and take the argmax of the last position
        var seq = prompt.Select(t => (long)t).ToList();
        using (no_grad())
            for (var i = 0; i < 8; i++)
            {
                var logits = model.Forward(tensor(seq.ToArray()).unsqueeze(0));
                seq.Add(logits[0, -1].argmax().item<long>());
            }
        Assert.Equal(seq.Skip(3).Select(t => (int)t), result.GeneratedTokens);
        Assert.False(model.CachesEnabled);
    }

    [Fact]
    public void Generate_SeededSampling_IsReproducibleAndSeedDependent()
    {
        using var model = Model(tie: false); // untied: a flatter next-token distribution than a random tied table
        var o = new GenerationOptions { MaxNewTokens = 12, Temperature = 1.5, TopK = 20, TopP = 0.95, Seed = 5 };
        var a = Generation.Generate(model, [1], o).GeneratedTokens;
        var b = Generation.Generate(model, [1], o).GeneratedTokens;
        var c = Generation.Generate(model, [1], o with { Seed = 6 }).GeneratedTokens;
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void Generate_TopKOne_EqualsGreedy()
    {
        using var model = Model();
        var greedy = Generation.Generate(model, [4, 5], new GenerationOptions { MaxNewTokens = 6 }).GeneratedTokens;
        var topK1 = Generation.Generate(model, [4, 5], new GenerationOptions { MaxNewTokens = 6, Temperature = 0.7, TopK = 1, Seed = 3 }).GeneratedTokens;
        Assert.Equal(greedy, topK1);
    }

    [Fact]
    public void Generate_StopToken_EndsAfterIt()
    {
        using var model = Model();
        var free = Generation.Generate(model, [9], new GenerationOptions { MaxNewTokens = 6 }).GeneratedTokens;
        var stopAt = free[2];
        var firstIndex = free.ToList().IndexOf(stopAt);
        var stopped = Generation.Generate(model, [9], new GenerationOptions { MaxNewTokens = 6, StopTokens = [stopAt] });
        Assert.True(stopped.StoppedAtStopToken);
        Assert.Equal(free.Take(firstIndex + 1), stopped.GeneratedTokens);
    }

    [Fact]
    public void Generate_EmptyPrompt_StartsFromBosOrFailsClearly()
    {
        using var model = Model();
        var fromBos = Generation.Generate(model, [], new GenerationOptions { MaxNewTokens = 3, BosId = 1 });
        Assert.Equal([1], fromBos.PromptTokens);
        Assert.Equal(Generation.Generate(model, [1], new GenerationOptions { MaxNewTokens = 3 }).GeneratedTokens, fromBos.GeneratedTokens);
        var e = Assert.Throws<ArgumentException>(() => Generation.Generate(model, [], new GenerationOptions()));
        Assert.Contains("BOS", e.Message);
    }

    [Fact]
    public void Sample_TopP_NeverPicksTokensOutsideTheNucleus()
    {
        // probabilities 0.5, 0.3, 0.15, 0.05: with top_p 0.7 only ids 0 and 1 are kept (0.5 < 0.7 <= 0.8)
        var logits = tensor(new[] { 0.5f, 0.3f, 0.15f, 0.05f }).log();
        using var g = new Generator(1, CPU);
        var picks = Enumerable.Range(0, 300).Select(_ => Generation.Sample(logits, new GenerationOptions { Temperature = 1, TopP = 0.7 }, g)).ToList();
        Assert.All(picks, p => Assert.InRange(p, 0, 1));
        Assert.Contains(0, picks);
        Assert.Contains(1, picks);
        // Without top_p the tail is reachable (the test can fail)
        var all = Enumerable.Range(0, 300).Select(_ => Generation.Sample(logits, new GenerationOptions { Temperature = 1 }, g)).ToList();
        Assert.Contains(all, p => p >= 2);
    }
}

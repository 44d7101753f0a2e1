using SharpTune.Eval;
using SharpTune.Models;
using SharpTune.Models.Llama2;
using SharpTune.Models.Llama2c;
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

    // Prompts of different lengths (1 to 9 tokens), so the batch has rows with 0 to 8 left pads.
    private static List<IReadOnlyList<int>> MixedPrompts(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(i => (IReadOnlyList<int>)Enumerable.Range(0, 1 + i % 9).Select(_ => rng.Next(2, vocab)).ToList()).ToList();
    }

    [Fact]
    public void GenerateBatch_GreedyLeftPadded_EachRowEqualsItsBatchOfOne()
    {
        // Given a random model and 12 prompts of 1..9 tokens
        using var model = Model(tie: false);
        var prompts = MixedPrompts(12, model.VocabSize, seed: 3);
        var options = new GenerationOptions { MaxNewTokens = 10 };

        // When decoding them as one left-padded batch and one by one
        var batch = Generation.GenerateBatch(model, prompts, options);

        // Then every row is what its prompt alone gives (pads neither attended nor counted in positions)
        for (var i = 0; i < prompts.Count; i++)
        {
            Assert.Equal(prompts[i], batch.PromptTokens[i]);
            Assert.Equal(Generation.Generate(model, prompts[i], options).GeneratedTokens, batch.GeneratedTokens[i]);
        }
        Assert.False(model.CachesEnabled);
    }

    [Fact]
    public void GenerateBatch_PerRowStopToken_EndsThatRowOnly()
    {
        using var model = Model(tie: false);
        var prompts = MixedPrompts(4, model.VocabSize, seed: 8);
        var free = Generation.GenerateBatch(model, prompts, new GenerationOptions { MaxNewTokens = 8 });
        var stopAt = free.GeneratedTokens[1][2]; // row 1 produces this id at step 2 (or earlier)
        var stopped = Generation.GenerateBatch(model, prompts, new GenerationOptions { MaxNewTokens = 8, StopTokens = [stopAt] });
        for (var i = 0; i < prompts.Count; i++)
        {
            var first = free.GeneratedTokens[i].ToList().IndexOf(stopAt);
            var expected = first < 0 ? free.GeneratedTokens[i] : free.GeneratedTokens[i].Take(first + 1).ToList();
            Assert.Equal(expected, stopped.GeneratedTokens[i]);
            Assert.Equal(first >= 0, stopped.StoppedAtStopToken[i]);
        }
        Assert.True(stopped.StoppedAtStopToken[1]);
    }

    [Fact]
    public void GenerateBatch_SeededSampling_ReproducibleFromTheSeedAndGeneratorState()
    {
        using var model = Model(tie: false);
        var prompts = MixedPrompts(6, model.VocabSize, seed: 5);
        var o = new GenerationOptions { MaxNewTokens = 12, Temperature = 1.3, TopK = 30, TopP = 0.9, Seed = 17 };
        var a = Generation.GenerateBatch(model, prompts, o).GeneratedTokens;
        var b = Generation.GenerateBatch(model, prompts, o).GeneratedTokens;
        var c = Generation.GenerateBatch(model, prompts, o with { Seed = 18 }).GeneratedTokens;
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        // A caller's generator continues where it stopped: restoring its state repeats the draws
        using var g = new Generator(17, CPU);
        var state = g.get_state();
        var first = Generation.GenerateBatch(model, prompts, o, g).GeneratedTokens;
        Assert.Equal(a, first);
        var second = Generation.GenerateBatch(model, prompts, o, g).GeneratedTokens;
        Assert.NotEqual(first, second);
        g.set_state(state);
        Assert.Equal(first, Generation.GenerateBatch(model, prompts, o, g).GeneratedTokens);
    }

    [Fact]
    public void GenerateBatch_StreamingCallback_SeesEveryTokenInOrder()
    {
        using var model = Model(tie: false);
        var prompts = MixedPrompts(3, model.VocabSize, seed: 2);
        var seen = prompts.Select(_ => new List<int>()).ToArray();
        var r = Generation.GenerateBatch(model, prompts, new GenerationOptions { MaxNewTokens = 5 }, onToken: (row, t) => seen[row].Add(t));
        for (var i = 0; i < prompts.Count; i++) Assert.Equal(r.GeneratedTokens[i], seen[i]);
    }

    [SharedDataFact("models/stories260K/stories260K.bin")]
    public void GenerateBatch_Stories260KGreedyBatch32_EqualsBatchOfOnePerPrompt()
    {
        // Given the real stories260K model and 32 story openings of different lengths
        var imported = Llama2cImporter.Read(SharedData.PathOf("models/stories260K/stories260K.bin"));
        using var model = HfModels.FromConfig(imported.Config);
        model.LoadStateDict(imported.StateDict);
        var rng = new Random(7);
        var prompts = Enumerable.Range(0, 32).Select(i => (IReadOnlyList<int>)new[] { 1 }.Concat(Enumerable.Range(0, i % 11).Select(_ => rng.Next(3, 512))).ToList()).ToList();
        var options = new GenerationOptions { MaxNewTokens = 64, StopTokens = [2] };

        // When decoding them as one batch of 32 and one at a time
        var batch = Generation.GenerateBatch(model, prompts, options);

        // Then the batch gives each prompt's own greedy continuation
        for (var i = 0; i < prompts.Count; i++)
            Assert.Equal(Generation.Generate(model, prompts[i], options).GeneratedTokens, batch.GeneratedTokens[i]);
    }
}

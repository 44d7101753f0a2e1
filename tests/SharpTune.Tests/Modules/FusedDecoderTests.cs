// The fused one-token decoding step against the module path it replaces: the same hidden states within a float32
// bound derived from the arithmetic, the same greedy tokens across the model variants it handles (GQA, q/k/v bias,
// LoRA with a non-zero adapter, tied and untied output, left padding), and fresh weights on every generation.
using SharpTune.Eval;
using SharpTune.Models.Llama2;
using SharpTune.Modules;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Modules;

public sealed class FusedDecoderTests
{
    public FusedDecoderTests() => TorchRuntime.EnsureLoaded();

    private static TransformerDecoder Model(bool tie = true, bool qkvBias = false, bool lora = false, int seed = 11)
    {
        manual_seed(seed);
        var model = lora ? Llama2Models.LoraTiny(["q_proj", "k_proj", "v_proj", "o_proj"], applyLoraToMlp: true, tieEmbeddings: tie, qkvBias: qkvBias)
            : Llama2Models.Tiny(tie, qkvBias);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (name.Contains("lora_B", StringComparison.Ordinal) || name.EndsWith(".bias", StringComparison.Ordinal)) p.normal_(0, 0.1); // B = 0 would merge to W
        model.eval();
        return model;
    }

    private static List<List<int>> Prompts(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(i => Enumerable.Range(0, 1 + i % 7).Select(_ => rng.Next(2, vocab)).ToList()).ToList();
    }

    [Theory]
    [InlineData(true, false, false, true)]
    [InlineData(false, true, false, true)]
    [InlineData(false, false, true, true)]
    [InlineData(true, true, true, true)]
    [InlineData(true, false, false, false)]
    [InlineData(false, true, true, false)]
    public void Step_LeftPaddedBatch_HiddenStatesMatchModulePathWithinFloat32Bound(bool tie, bool qkvBias, bool lora, bool hostKernels)
    {
        // Given a tiny GQA model and 6 prompts of 1..6 tokens, left-padded, and the same 5 tokens fed to every row
        using var model = Model(tie, qkvBias, lora);
        var rows = Prompts(6, model.VocabSize, seed: 4);
        var p = rows.Max(r => r.Count);
        const int steps = 5;
        var capacity = p + steps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var (tokens, padSlots, positions) = Generation.Layout(rows, p, capacity, CPU);
        Assert.NotNull(padSlots);
        var keyMask = padSlots!.logical_not().unsqueeze(1); // [b, 1, c]
        var prefillMask = Generation.PrefillMask(keyMask, p);
        var feed = randint(2, model.VocabSize, [steps, rows.Count], dtype: ScalarType.Int64);

        // When decoding through the modules
        model.SetupCaches(rows.Count, capacity);
        model.ForwardHidden(tokens, prefillMask, positions.narrow(1, 0, p));
        var expected = Enumerable.Range(0, steps).Select(t => model.ForwardHidden(feed[t].unsqueeze(1), keyMask, positions.narrow(1, p + t, 1)).select(1, 0)).ToList();
        model.RemoveCaches();
        // and through the fused step
        using var fused = FusedDecoder.TryCreate(model, rows.Count, capacity, positions, padSlots, hostKernels);
        Assert.NotNull(fused);
        model.ForwardHidden(tokens, prefillMask, positions.narrow(1, 0, p));
        var actual = Enumerable.Range(0, steps).Select(t => fused!.Step(feed[t], p + t)).ToList();
        model.RemoveCaches();

        // Then the final hidden states agree within the bound of reordering every dot product on the deepest path:
        // per layer the q/k/v projection (d terms), attention (h_d terms, then <= c slots), o_proj (n_h h_d), the
        // MLP (d, then f terms), each relative to its operands' absolute sums; the final norm rescales by O(1) weights.
        // First-order bound, assuming the layers do not amplify a relative perturbation (tiny random weights).
        var a = model.Args;
        long terms = a.NumLayers * (a.EmbedDim + a.ResolvedHeadDim + capacity + a.NumHeads * a.ResolvedHeadDim + a.EmbedDim + a.IntermediateDim);
        for (var t = 0; t < steps; t++)
        {
            var scale = expected[t].abs().max().item<float>();
            var bound = 2 * FloatBounds.Gamma(terms) * scale * 8; // two evaluations; 8 = the chained norm, RoPE and softmax roundings per layer
            var diff = (actual[t] - expected[t]).abs().max().item<float>();
            Assert.True(diff <= bound, $"step {t}: max |fused - module| = {diff:E3} > bound {bound:E3} (scale {scale:F3})");
        }
    }

    [Theory]
    [InlineData(true, false, false)]
    [InlineData(false, true, true)]
    public void GenerateBatch_Greedy_FusedEqualsModulePath(bool tie, bool qkvBias, bool lora)
    {
        // Given a model and 8 prompts of different lengths
        using var model = Model(tie, qkvBias, lora);
        var prompts = Prompts(8, model.VocabSize, seed: 9).Select(r => (IReadOnlyList<int>)r).ToList();
        var options = new GenerationOptions { MaxNewTokens = 12 };

        // When generating with the fused step and through the modules only
        var fused = Generation.GenerateBatch(model, prompts, options);
        var modules = Generation.GenerateBatch(model, prompts, options with { ModulePathOnly = true });

        // Then every row picks the same tokens, and the caches are gone afterwards
        Assert.Equal(modules.GeneratedTokens, fused.GeneratedTokens);
        Assert.False(model.CachesEnabled);
    }

    [Fact]
    public void GenerateBatch_WeightsChangedBetweenGenerations_UsesTheNewWeights()
    {
        // Given a model that generated once, then received another model's weights (as a training step changes them)
        using var model = Model(seed: 11);
        using var other = Model(seed: 12);
        var prompts = Prompts(4, model.VocabSize, seed: 1).Select(r => (IReadOnlyList<int>)r).ToList();
        var options = new GenerationOptions { MaxNewTokens = 10 };
        var before = Generation.GenerateBatch(model, prompts, options).GeneratedTokens;
        using (no_grad())
        {
            var source = other.state_dict();
            foreach (var (name, p) in model.state_dict()) p.copy_(source[name]);
        }

        // When it generates again
        var after = Generation.GenerateBatch(model, prompts, options).GeneratedTokens;

        // Then it generates what the other model does, not what it did before
        Assert.Equal(Generation.GenerateBatch(other, prompts, options).GeneratedTokens, after);
        Assert.NotEqual(before, after);
    }
}

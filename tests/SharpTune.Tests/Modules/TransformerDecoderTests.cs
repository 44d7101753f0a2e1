using SharpTune.Models.Llama2;
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Modules;

public sealed class TransformerDecoderTests
{
    public TransformerDecoderTests() => TorchRuntime.EnsureLoaded();

    private static TransformerDecoder Tiny(bool tie = true, bool bias = false)
    {
        manual_seed(7);
        var m = Llama2Models.Tiny(tie, bias);
        m.eval();
        return m;
    }

    [Fact]
    public void Forward_WithKvCacheTokenByToken_EqualsFullRecomputation()
    {
        using var model = Tiny(bias: true);
        var tokens = randint(0, 64, [2, 10], dtype: ScalarType.Int64);
        using var _ = no_grad();
        var full = model.Forward(tokens); // [2, 10, v]
        model.SetupCaches(2, 16);
        var prefill = model.Forward(tokens.narrow(1, 0, 4)); // first 4 positions at once
        var steps = new List<Tensor> { prefill };
        for (var i = 4; i < 10; i++) steps.Add(model.Forward(tokens.narrow(1, i, 1)));
        var cached = cat(steps, 1);
        Assert.True(cached.allclose(full, rtol: 1e-4, atol: 1e-5), $"max diff {(cached - full).abs().max().item<float>()}");
        Assert.Equal(10, model.CachePosition);
        model.ResetCaches();
        Assert.True(model.Forward(tokens.narrow(1, 0, 4)).allclose(full.narrow(1, 0, 4), rtol: 1e-4, atol: 1e-5));
    }

    [Theory]
    [InlineData(true, ScalarType.Float32)]
    [InlineData(false, ScalarType.Float32)]
    [InlineData(true, ScalarType.BFloat16)]
    [InlineData(false, ScalarType.BFloat16)]
    public void ApplyOutput_SequenceChunksOfABatch_EqualLinearAndCarryGradients(bool tie, ScalarType dtype)
    {
        // Given hidden states of a batch of 2 split along s (strided views, as the recipes' chunked output makes them)
        manual_seed(7);
        using var model = SharpTune.Models.DecoderBuilder.Build(Llama2Models.TinyArgs(tie, false), null, null, dtype);
        using var scope = NewDisposeScope();
        manual_seed(3);
        var hidden = randn(2, 12, model.Args.EmbedDim).to(dtype).requires_grad_(true); // [b, s, d]
        var chunks = hidden.tensor_split(3, dim: 1);                                    // 3 x [b, 4, d]

        // When each chunk goes through ApplyOutput
        var logits = chunks.Select(model.ApplyOutput).ToList(); // 3 x [b, 4, v]

        // Then each equals linear(chunk, W) computed the plain way, shape [b, s_i, v]: the same products, summed in
        // fp32 by either kernel, so the results differ by fp32 reordering (~d x 2^-24 relative) before the final
        // rounding to the dtype, which can move a bf16 value by one unit in the last place (2^-8 relative)
        var (rtol, atol) = dtype == ScalarType.BFloat16 ? (1e-2, 1e-2) : (1e-5, 1e-5);
        for (var i = 0; i < chunks.Length; i++)
        {
            using var noGrad = no_grad();
            var expected = nn.functional.linear(chunks[i].contiguous(), model.OutputWeight); // [b, 4, v]
            Assert.Equal(expected.shape, logits[i].shape);
            Assert.True(logits[i].allclose(expected, rtol, atol), $"chunk {i} differs");
        }
        // and gradients match those of the plain formula's autograd (a weighted sum, so every logit's gradient counts)
        var weights = randn(2, 12, model.OutputWeight.shape[0]).to(dtype); // [b, s, v]
        (cat(logits, 1) * weights).sum().backward();
        var reference = hidden.detach().clone().requires_grad_(true);
        (cat(reference.tensor_split(3, dim: 1).Select(c => nn.functional.linear(c, model.OutputWeight)).ToList(), 1) * weights).sum().backward();
        Assert.NotNull(hidden.grad);
        Assert.True(hidden.grad.allclose(reference.grad!, rtol, atol),
            $"gradients differ by up to {(hidden.grad - reference.grad!).abs().max().to(ScalarType.Float32).item<float>()}");
    }

    [Fact]
    public void ChunkedOutputAndHidden_Any_EqualFullLogits()
    {
        using var model = Tiny(tie: false);
        var tokens = randint(0, 64, [2, 8], dtype: ScalarType.Int64);
        using var _ = no_grad();
        var full = model.Forward(tokens);
        var hidden = model.ForwardHidden(tokens);
        var chunks = model.ChunkedOutput(hidden, 3);
        Assert.Equal(new long[] { 3, 3, 2 }, chunks.Select(c => c.shape[1]).ToArray()); // tensor_split of 8 into 3
        Assert.True(cat(chunks, 1).allclose(full, rtol: 1e-5, atol: 1e-6));
        Assert.True(Assert.Single(model.ChunkedOutput(hidden, 0)).allclose(full, rtol: 1e-5, atol: 1e-6));
        Assert.True(hidden.matmul(model.OutputWeight.t()).allclose(full, rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void ForwardHidden_CheckpointActivations_SameGradientsAndLayersRecomputed()
    {
        // Given the same decoder run plainly and with each layer checkpointed
        using var model = Tiny(tie: false);
        model.train();
        var tokens = randint(0, 64, [2, 8], dtype: ScalarType.Int64);
        var grads = new List<Tensor[]>();
        var recomputed = new List<long>();
        foreach (var checkpoint in new[] { false, true })
        {
            model.CheckpointActivations = checkpoint;
            model.zero_grad();
            var before = ActivationCheckpointing.RecomputationsOnThisThread;
            model.ForwardHidden(tokens).square().sum().backward();
            recomputed.Add(ActivationCheckpointing.RecomputationsOnThisThread - before);
            grads.Add(model.parameters().Where(p => p.grad is not null).Select(p => p.grad!.clone()).ToArray()); // lm_head has none
        }

        // Then the checkpointed run recomputed every layer once and got the plain gradients (the same operations in
        // the same order: the recomputation repeats the forward exactly, so the results agree to the last bit)
        Assert.Equal(new long[] { 0, model.Model.Layers.Count }, recomputed);
        Assert.Equal(grads[0].Length, grads[1].Length);
        for (var i = 0; i < grads[0].Length; i++) Assert.True(grads[0][i].eq(grads[1][i]).all().item<bool>(), $"parameter {i} gradient differs");

        // And evaluation runs the plain forward
        var evalBefore = ActivationCheckpointing.RecomputationsOnThisThread;
        model.eval();
        model.ForwardHidden(tokens).sum().backward();
        Assert.Equal(evalBefore, ActivationCheckpointing.RecomputationsOnThisThread);
    }

    [Fact]
    public void Forward_PackedBlockCausalMaskWithRestartedPositions_EqualsEachSampleAlone()
    {
        // Given samples A (5 tokens) and B (3 tokens) packed in one row with a block-causal mask and positions 0..4, 0..2
        using var model = Tiny();
        var a = randint(0, 64, [1, 5], dtype: ScalarType.Int64);
        var b = randint(0, 64, [1, 3], dtype: ScalarType.Int64);
        var packed = cat([a, b], 1);
        var mask = zeros(1, 8, 8, dtype: ScalarType.Bool);
        mask[0, TensorIndex.Slice(0, 5), TensorIndex.Slice(0, 5)] = ones(5, 5, dtype: ScalarType.Bool).tril();
        mask[0, TensorIndex.Slice(5, 8), TensorIndex.Slice(5, 8)] = ones(3, 3, dtype: ScalarType.Bool).tril();
        var pos = tensor(new long[] { 0, 1, 2, 3, 4, 0, 1, 2 }).unsqueeze(0);
        using var _ = no_grad();
        var packedLogits = model.Forward(packed, mask, pos);
        // Then B's logits do not see A at all
        Assert.True(packedLogits.narrow(1, 5, 3).allclose(model.Forward(b), rtol: 1e-4, atol: 1e-5));
        Assert.True(packedLogits.narrow(1, 0, 5).allclose(model.Forward(a), rtol: 1e-4, atol: 1e-5));
        // And without the mask they would (the test can fail)
        Assert.False(model.Forward(packed).narrow(1, 5, 3).allclose(model.Forward(b), rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void StateDict_TiedAndUntied_KeysAreHfKeysWithoutRopeTables()
    {
        using var tied = Tiny(tie: true, bias: true);
        var keys = tied.state_dict().Keys.ToHashSet();
        Assert.Contains("model.embed_tokens.weight", keys);
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", keys);
        Assert.Contains("model.layers.0.self_attn.q_proj.bias", keys);
        Assert.Contains("model.layers.1.self_attn.o_proj.weight", keys);
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", keys);
        Assert.Contains("model.layers.0.mlp.up_proj.weight", keys);
        Assert.Contains("model.layers.0.mlp.down_proj.weight", keys);
        Assert.Contains("model.layers.0.input_layernorm.weight", keys);
        Assert.Contains("model.layers.0.post_attention_layernorm.weight", keys);
        Assert.Contains("model.norm.weight", keys);
        Assert.DoesNotContain("lm_head.weight", keys);
        Assert.DoesNotContain(keys, k => k.Contains("rope") || k.Contains("freq") || k.Contains("cache"));
        // 1 embedding + 2 layers x (4 proj weights + 3 biases + 3 mlp + 2 norms) + final norm
        Assert.Equal(1 + 2 * 12 + 1, keys.Count);
        using var untied = Tiny(tie: false);
        Assert.Contains("lm_head.weight", untied.state_dict().Keys);
    }

    [Fact]
    public void TiedEmbeddings_OutputWeight_IsTheSameParameterRegisteredOnce()
    {
        using var model = Tiny(tie: true);
        // Same storage (not a copy): writing through the embedding changes the output weight
        Assert.Equal(ModuleParameters.DataAddress(model.Model.EmbedTokens.weight), ModuleParameters.DataAddress(model.OutputWeight));
        using (no_grad()) model.Model.EmbedTokens.weight.fill_(0.5);
        Assert.Equal(0.5f, model.OutputWeight[3, 4].item<float>());
        var all = model.named_parameters().Select(p => ModuleParameters.DataAddress(p.parameter)).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.Equal(all.Count, ModuleParameters.Trainable(model).Count);
    }

    [Fact]
    public void UniqueNamed_WeightSharedByTwoLinears_ListedOnce()
    {
        // Given two Linear children sharing one weight (torch-style tying by assignment)
        using var twice = new TwoLinears();
        // Then the helper lists it once whatever TorchSharp's enumeration does (0.107 already folds this case; a
        // Parameter re-wrapped around the same storage is folded only by the storage-address check)
        Assert.Single(ModuleParameters.UniqueNamed(twice));
        Assert.Equal(6, ModuleParameters.Count(twice));
    }

    private sealed class TwoLinears : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.Linear a;
        private readonly TorchSharp.Modules.Linear b;

        public TwoLinears() : base("two")
        {
            a = nn.Linear(2, 3, false);
            b = nn.Linear(2, 3, false);
            b.weight = new TorchSharp.Modules.Parameter(a.weight!.detach()); // a second wrapper over the same storage
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => a.call(x) + b.call(x);
    }

    [Fact]
    public void LoadStateDict_SeveralProblems_ListsEveryOneInOneError()
    {
        using var model = Tiny(tie: true);
        var sd = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        sd.Remove("model.norm.weight");
        sd["model.layers.0.mlp.up_proj.weight"] = zeros(3, 3);
        sd["model.layers.1.input_layernorm.weight"] = sd["model.layers.1.input_layernorm.weight"].to_type(ScalarType.BFloat16);
        sd["lm_head.weight"] = zeros(64, 32);
        var e = Assert.Throws<InvalidDataException>(() => model.LoadStateDict(sd, sourceName: "model.safetensors"));
        Assert.Contains("4 problems", e.Message);
        Assert.Contains("missing from model.safetensors: 'model.norm.weight'", e.Message);
        Assert.Contains("unexpected in model.safetensors: 'lm_head.weight'", e.Message);
        Assert.Contains("shape mismatch: 'model.layers.0.mlp.up_proj.weight': model.safetensors [3, 3], model [48, 32]", e.Message);
        Assert.Contains("dtype mismatch: 'model.layers.1.input_layernorm.weight'", e.Message);
    }

    [Fact]
    public void LoadStateDict_FromAnotherModel_ReproducesItsLogits()
    {
        using var source = Tiny(tie: false, bias: true);
        manual_seed(99);
        using var target = Llama2Models.Tiny(false, true);
        target.eval();
        var tokens = randint(0, 64, [1, 6], dtype: ScalarType.Int64);
        using var _ = no_grad();
        Assert.False(target.Forward(tokens).allclose(source.Forward(tokens)));
        target.LoadStateDict(source.state_dict());
        Assert.True(target.Forward(tokens).allclose(source.Forward(tokens)));
    }
}

public sealed class TransformerDecoderPrecisionAndGradTests
{
    public TransformerDecoderPrecisionAndGradTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    public void Forward_Bf16Model_StaysBf16AndCloseToFloat32()
    {
        manual_seed(31);
        using var f32 = Llama2Models.Tiny(tieEmbeddings: false);
        using var bf16 = SharpTune.Models.DecoderBuilder.Build(Llama2Models.TinyArgs(tieEmbeddings: false), dtype: ScalarType.BFloat16);
        bf16.LoadStateDict(f32.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.to_type(ScalarType.BFloat16)));
        var tokens = randint(0, 64, [2, 7], dtype: ScalarType.Int64);
        using var _ = no_grad();
        var low = bf16.Forward(tokens);
        Assert.Equal(ScalarType.BFloat16, low.dtype);
        var reference = f32.Forward(tokens);
        var relErr = (low.to_type(ScalarType.Float32) - reference).abs().max().item<float>() / reference.abs().max().item<float>();
        Assert.True(relErr < 0.05f, $"relative error {relErr}");
    }

    [Fact]
    public void Forward_ExplicitPositions_OnlyRelativeOffsetsMatter()
    {
        manual_seed(32);
        using var m = Llama2Models.Tiny();
        var tokens = randint(0, 64, [2, 6], dtype: ScalarType.Int64);
        using var _ = no_grad();
        var pos = arange(6, dtype: ScalarType.Int64).unsqueeze(0).expand(2, 6);
        Assert.True(m.Forward(tokens, null, pos).allclose(m.Forward(tokens), rtol: 1e-6, atol: 1e-6));
        // RoPE only sees relative positions: a uniform shift changes nothing, a gap does
        Assert.True(m.Forward(tokens, null, pos + 3).allclose(m.Forward(tokens), rtol: 1e-4, atol: 1e-5));
        var gapped = pos + (pos > 2).to_type(ScalarType.Int64) * 5;
        Assert.False(m.Forward(tokens, null, gapped).allclose(m.Forward(tokens), rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void Backward_LoraModel_GradientsReachOnlyAdapters()
    {
        manual_seed(33);
        using var m = Llama2Models.LoraTiny(["q_proj", "v_proj"], applyLoraToMlp: true);
        m.train();
        var tokens = randint(0, 64, [2, 5], dtype: ScalarType.Int64);
        // B starts at zero, so A receives no gradient on the first step; B must.
        m.Forward(tokens).pow(2).mean().backward();
        foreach (var (name, p) in m.named_parameters())
        {
            if (name.EndsWith(".lora_B.weight")) Assert.True(p.grad is not null && p.grad.abs().sum().item<float>() > 0, name);
            else if (!SharpTune.Modules.Peft.Adapters.IsAdapterKey(name)) Assert.True(p.grad is null, name);
        }
    }
}

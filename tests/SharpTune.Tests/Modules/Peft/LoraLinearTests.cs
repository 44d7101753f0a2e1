using SharpTune.Models;
using SharpTune.Models.Llama2;
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using SharpTune.Native;
using static TorchSharp.torch;

namespace SharpTune.Tests.Modules.Peft;

public sealed class LoraLinearTests
{
    public LoraLinearTests() => TorchRuntime.EnsureLoaded();

    private static void RandomizeB(LoraLinear l)
    {
        using var _ = no_grad();
        l.LoraB.copy_(randn(l.LoraB.shape) * 0.1);
    }

    [Fact]
    public void Forward_FreshAdapter_EqualsBaseLinear()
    {
        // B = 0 at init, so y = W0 x + b exactly
        manual_seed(1);
        using var lora = new LoraLinear(6, 5, rank: 2, alpha: 4, hasBias: true);
        var x = randn(3, 6);
        Assert.Equal(0f, lora.LoraB.abs().sum().item<float>());
        Assert.True(lora.call(x).allclose(nn.functional.linear(x, lora.Weight, lora.Bias), rtol: 0, atol: 0));
    }

    [Fact]
    public void Forward_NonZeroAdapter_EqualsClosedForm()
    {
        manual_seed(2);
        using var lora = new LoraLinear(6, 5, rank: 2, alpha: 4, hasBias: true);
        RandomizeB(lora);
        var x = randn(3, 6);
        // y = W0 x + b + (alpha/r) B A x with alpha/r = 2
        var expected = x.matmul(lora.Weight.t()) + lora.Bias! + 2.0 * x.matmul(lora.LoraA.t()).matmul(lora.LoraB.t());
        Assert.True(lora.call(x).allclose(expected, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void Init_LoraA_IsKaimingUniformWithASqrt5Bound()
    {
        // kaiming_uniform(a = sqrt 5) on fan_in = 600 has bound sqrt(6 / ((1 + 5) * 600)) = 1/sqrt(600)
        manual_seed(3);
        using var lora = new LoraLinear(600, 4, rank: 16, alpha: 16);
        var bound = 1 / Math.Sqrt(600);
        var a = lora.LoraA;
        Assert.True(a.abs().max().item<float>() <= bound + 1e-7);
        Assert.True(a.abs().max().item<float>() > 0.9 * bound); // uniform over the whole range, not a narrower init
        Assert.False(lora.Weight.requires_grad);
        Assert.True(lora.LoraA.requires_grad && lora.LoraB.requires_grad);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MergedWeight_AfterTraining_EqualsUnmergedForward(bool useDora)
    {
        manual_seed(4);
        using var lora = new LoraLinear(8, 6, rank: 4, alpha: 8, hasBias: true, useDora: useDora);
        RandomizeB(lora);
        if (useDora) using (no_grad()) lora.Magnitude!.mul_(rand(6) + 0.5); // a trained magnitude
        var x = randn(5, 8);
        var merged = nn.functional.linear(x, lora.MergedWeight(), lora.Bias);
        Assert.True(lora.call(x).allclose(merged, rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void Dora_FreshMagnitude_EqualsRowNormsAndBaseOutput()
    {
        manual_seed(5);
        using var dora = new LoraLinear(8, 6, rank: 4, alpha: 8, useDora: true);
        var rowNorms = dora.Weight.pow(2).sum(1).sqrt();
        Assert.True(dora.Magnitude!.allclose(rowNorms, rtol: 1e-5));
        var x = randn(2, 8);
        Assert.True(dora.call(x).allclose(x.matmul(dora.Weight.t()), rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void LoraModel_AdaptersAndMerge_BehaveLikeTheBase()
    {
        // Given a tiny LoRA model (q, v, o, MLP, untied output) whose base weights come from a plain model
        manual_seed(6);
        using var plain = Llama2Models.Tiny(tieEmbeddings: false);
        using var lora = Llama2Models.LoraTiny(["q_proj", "v_proj", "output_proj"], applyLoraToMlp: true, applyLoraToOutput: true, tieEmbeddings: false);
        plain.eval(); lora.eval();
        var missing = lora.LoadStateDict(plain.state_dict()).MissingKeys;
        Assert.All(missing, k => Assert.True(Adapters.IsAdapterKey(k), k));
        var tokens = randint(0, 64, [1, 6], dtype: ScalarType.Int64);
        using var _ = no_grad();
        // Then a fresh adapter model equals the base
        Assert.True(lora.Forward(tokens).allclose(plain.Forward(tokens), rtol: 1e-5, atol: 1e-6));
        // And after changing B, the merged state dict loaded into a plain model reproduces the LoRA model
        foreach (var (_, layer) in Adapters.LoraLayers(lora)) RandomizeB(layer);
        var loraLogits = lora.Forward(tokens);
        Assert.False(loraLogits.allclose(plain.Forward(tokens), rtol: 1e-3, atol: 1e-4));
        plain.LoadStateDict(Adapters.MergedStateDict(lora));
        Assert.True(plain.Forward(tokens).allclose(loraLogits, rtol: 1e-4, atol: 1e-5));
        // And the adapter state dict / PEFT target modules use HF names
        var adapterKeys = Adapters.AdapterStateDict(lora).Keys.ToHashSet();
        Assert.Contains("model.layers.0.self_attn.q_proj.lora_A.weight", adapterKeys);
        Assert.Contains("model.layers.1.mlp.down_proj.lora_B.weight", adapterKeys);
        Assert.Contains("lm_head.lora_A.weight", adapterKeys);
        Assert.Equal(["down_proj", "gate_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj"], Adapters.TargetModules(lora));
    }

    [Fact]
    public void LoadStateDict_BaseCheckpointIntoDoraModel_InitialisesMagnitudesFromLoadedWeights()
    {
        manual_seed(8);
        using var plain = Llama2Models.Tiny();
        using var dora = Llama2Models.LoraTiny(["q_proj", "v_proj"], applyLoraToMlp: true, useDora: true);
        plain.eval(); dora.eval();
        dora.LoadStateDict(plain.state_dict());
        var tokens = randint(0, 64, [1, 5], dtype: ScalarType.Int64);
        using var _ = no_grad();
        Assert.True(dora.Forward(tokens).allclose(plain.Forward(tokens), rtol: 1e-4, atol: 1e-5));
        Assert.Contains("model.layers.0.self_attn.q_proj.lora_magnitude_vector", Adapters.AdapterStateDict(dora).Keys);
    }

    [Fact]
    public void TrainableParameters_LoraModel_AreExactlyTheAdapters()
    {
        using var lora = Llama2Models.LoraTiny(["q_proj", "k_proj"], loraRank: 4);
        // d = 32, q: 32 -> 32, k: 32 -> 16, rank 4: per layer 4*(32+32) + 4*(32+16) = 448; 2 layers
        Assert.Equal(896, ModuleParameters.CountTrainable(lora));
        Assert.All(ModuleParameters.UniqueNamed(lora), p => Assert.Equal(Adapters.IsAdapterKey(p.Name), p.Parameter.requires_grad));
    }

    [Fact]
    public void Build_LoraOnTiedOutput_ClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => Llama2Models.LoraTiny(applyLoraToOutput: true, tieEmbeddings: true));
        Assert.Contains("apply_lora_to_output", e.Message);
        var e2 = Assert.Throws<ArgumentException>(() => Llama2Models.LoraTiny(["qkv"]));
        Assert.Contains("'qkv'", e2.Message);
    }
}

/// <summary>The adapter folded into one matrix for fused-linear losses: same outputs and the same adapter gradients as
/// the layer's own forward (the matmuls group the same products differently: a few float32 roundings of terms of size
/// |W| |x| over in = 12 inputs, so 1e-5 relative covers them).</summary>
public sealed class LoraEffectiveWeightTests
{
    public LoraEffectiveWeightTests() => TorchRuntime.EnsureLoaded();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EffectiveWeight_ProjectsAndBackpropagatesAsForward(bool useDora)
    {
        manual_seed(11);
        using var lora = new LoraLinear(12, 7, rank: 3, alpha: 6, useDora: useDora);
        using (no_grad()) lora.LoraB.copy_(randn(lora.LoraB.shape) * 0.1);
        var x = randn(5, 12);
        var target = randn(5, 7);

        var viaForward = (lora.call(x) - target).square().sum();
        viaForward.backward();
        var (gradA, gradB) = (lora.LoraA.grad!.clone(), lora.LoraB.grad!.clone());
        lora.LoraA.grad!.zero_();
        lora.LoraB.grad!.zero_();
        var viaWeight = (x.matmul(lora.EffectiveWeight().t()) - target).square().sum();
        viaWeight.backward();

        Assert.Equal(viaForward.item<float>(), viaWeight.item<float>(), viaForward.item<float>() * 1e-5);
        Assert.True(gradA.allclose(lora.LoraA.grad!, rtol: 1e-5, atol: 1e-6), "lora_A gradient differs");
        Assert.True(gradB.allclose(lora.LoraB.grad!, rtol: 1e-5, atol: 1e-6), "lora_B gradient differs");
        Assert.True(gradB.abs().max().item<float>() > 1e-3, "the adapter must receive a gradient");
    }

    [Fact]
    public void EffectiveWeight_DropoutActiveInTraining_Refused()
    {
        using var lora = new LoraLinear(4, 3, rank: 2, alpha: 2, dropout: 0.1);
        lora.train();
        var e = Assert.Throws<NotSupportedException>(() => lora.EffectiveWeight());
        Assert.Contains("lora_dropout", e.Message);
        lora.eval();
        using var w = lora.EffectiveWeight(); // no dropout in eval mode
        Assert.Equal(new long[] { 3, 4 }, w.shape);
    }
}

using SharpTune.Modules;
using SharpTune.Tests.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Tests.Modules;

[Collection(GlobalTorchStateCollection.Name)]
public sealed class ActivationCheckpointingTests
{
    /// <summary>A residual MLP block with dropout: y = x + W2 drop(gelu(W1 norm(x))).</summary>
    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        private readonly LayerNorm norm;
        private readonly Linear up;
        private readonly Linear down;
        private readonly Dropout drop;

        public Block(int dim) : base(nameof(Block))
        {
            norm = nn.LayerNorm(dim);
            up = nn.Linear(dim, 4 * dim);
            down = nn.Linear(4 * dim, dim);
            drop = nn.Dropout(0.3);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => x + down.call(drop.call(nn.functional.gelu(up.call(norm.call(x)))));
    }

    private static Sequential Stack(bool checkpoint)
    {
        manual_seed(5);
        var layers = Enumerable.Range(0, 3).Select(i =>
        {
            nn.Module<Tensor, Tensor> b = new Block(8);
            return ($"{i}", checkpoint ? new Checkpointed(b) : b);
        }).ToArray();
        return nn.Sequential(layers);
    }

    private static (List<Tensor> Grads, Tensor InputGrad, Tensor Output) Step(Sequential model)
    {
        model.train();
        var x = randn(new long[] { 2, 5, 8 }, generator: new Generator(9)).requires_grad_(true);
        manual_seed(77); // same dropout draws in both runs
        var y = model.call(x);
        (y * y).sum().backward();
        return (model.parameters().Select(p => p.grad!.clone()).ToList(), x.grad!.clone(), y.detach());
    }

    [Fact]
    public void CheckpointedStack_WithDropout_GradientsEqualPlain()
    {
        using var plain = Stack(checkpoint: false);
        using var ckpt = Stack(checkpoint: true);
        var a = Step(plain);
        var b = Step(ckpt);

        Assert.True(a.Output.allclose(b.Output, rtol: 0, atol: 0), "forward outputs differ");
        Assert.Equal(a.Grads.Count, b.Grads.Count);
        for (var i = 0; i < a.Grads.Count; i++)
            Assert.True(a.Grads[i].allclose(b.Grads[i], rtol: 1e-6, atol: 1e-7), $"parameter {i} gradient differs");
        Assert.True(a.InputGrad.allclose(b.InputGrad, rtol: 1e-6, atol: 1e-7), "input gradient differs");
    }

    [Fact]
    public void Run_WithoutRngReplay_DropoutGradientsDiffer()
    {
        // Guards the test above: replaying the RNG is what keeps the recomputed dropout mask identical.
        manual_seed(5);
        using var block = new Block(8);
        block.train();
        var x = randn(new long[] { 2, 5, 8 }, generator: new Generator(9)).requires_grad_(true);
        manual_seed(77);
        block.call(x).square().sum().backward();
        var expected = x.grad!.clone();
        x.grad!.zero_();
        manual_seed(77);
        ActivationCheckpointing.Run(block, x, preserveRngState: false).square().sum().backward();
        Assert.False(x.grad!.allclose(expected, rtol: 1e-6, atol: 1e-7));
    }

    /// <summary>A block run through <see cref="ActivationCheckpointing.Run(nn.Module{Tensor, Tensor}, Tensor, bool)"/>.</summary>
    private sealed class Checkpointed : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> inner;

        public Checkpointed(nn.Module<Tensor, Tensor> inner) : base(nameof(Checkpointed))
        {
            this.inner = inner;
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => ActivationCheckpointing.Run(inner, x);
    }
}

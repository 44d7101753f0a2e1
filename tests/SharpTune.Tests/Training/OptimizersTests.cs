using SharpTune.Modules;
using SharpTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Tests.Training;

public sealed class OptimizersTests
{
    private sealed class Tied : nn.Module<Tensor, Tensor>
    {
        private readonly Parameter _shared;

        public Tied() : base(nameof(Tied))
        {
            _shared = nn.Parameter(tensor(new float[] { 1f, -2f, 3f }));
            register_parameter("embed", _shared);
            register_parameter("lm_head", _shared);
        }

        public override Tensor forward(Tensor x) => (x * _shared).sum();
    }

    /// <summary>An embedding whose weight is shared with the output projection, as in Llama 3.2 1B and Qwen2 0.5B.</summary>
    private sealed class TiedLm : nn.Module<Tensor, Tensor>
    {
        private readonly Embedding embed_tokens;
        private readonly Linear lm_head;

        public TiedLm() : base(nameof(TiedLm))
        {
            embed_tokens = nn.Embedding(5, 3);
            lm_head = nn.Linear(3, 5, hasBias: false);
            lm_head.weight = embed_tokens.weight!;
            RegisterComponents();
        }

        public override Tensor forward(Tensor ids) => lm_head.call(embed_tokens.call(ids));
    }

    [Fact]
    public void Deduplicate_TiedAcrossSubmodules_ListedOnce()
    {
        using var m = new TiedLm();
        var all = m.parameters().ToList();
        Assert.Equal(2, all.Count); // TorchSharp lists the shared weight once per owning module
        Assert.Single(ModuleParameters.Deduplicate(all));
        Assert.Single(ModuleParameters.Trainable(m));
    }

    [Fact]
    public void Deduplicate_TiedWithinOneModule_ListedOnce()
    {
        using var m = new Tied();
        Assert.Single(ModuleParameters.Deduplicate(m.parameters()));
    }

    [Fact]
    public void AdamW_TiedWeight_UpdatedOncePerStep()
    {
        // Given a weight registered twice and gradient g = x
        using var m = new Tied();
        using var opt = Optimizers.AdamW(m.parameters(), lr: 0.1, weightDecay: 0.0, eps: 1e-8);
        using var x = tensor(new float[] { 0.5f, 0.25f, -1f });
        m.call(x).backward();
        opt.step();
        // Then the first AdamW step moves each entry by exactly lr * g/(|g|+eps) ≈ lr * sign(g), once.
        var p = m.parameters().First().data<float>().ToArray();
        Assert.Equal(1f - 0.1f, p[0], 5);
        Assert.Equal(-2f - 0.1f, p[1], 5);
        Assert.Equal(3f + 0.1f, p[2], 5);
    }

    [Fact]
    public void AdamW_WeightTiedAcrossSubmodules_MovesOneStep()
    {
        // A first AdamW step moves every entry with a non-zero gradient by lr * g/(|g|+eps) ~= lr; a weight listed
        // twice would move 2 lr.
        manual_seed(1);
        using var m = new TiedLm();
        using var opt = Optimizers.AdamW(m.parameters(), lr: 0.01, weightDecay: 0.0);
        var before = m.parameters().First().detach().clone();
        using var ids = tensor(new long[] { 0, 1, 2, 3, 4 });
        using var w = randn(5, 5, generator: new Generator(3));
        (m.call(ids) * w).sum().backward();
        opt.step();
        var moved = (m.parameters().First().detach() - before).abs();
        Assert.True(moved.allclose(full_like(moved, 0.01), rtol: 1e-3, atol: 0), $"max move {moved.max().item<float>()}");
    }

    [Fact]
    public void AdamW_ThreeSteps_MatchesDecoupledWeightDecayFormula()
    {
        // Reference: Loshchilov & Hutter Algorithm 2 as written in torch.optim.AdamW's docs, evaluated in float64.
        double lr = 0.05, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1;
        double[] p0 = { 0.3, -0.7 };
        double[][] grads = { new[] { 0.2, -0.1 }, new[] { -0.4, 0.3 }, new[] { 0.05, 0.6 } };
        var expected = (double[])p0.Clone();
        double[] mom = { 0, 0 }, v = { 0, 0 };
        for (var t = 1; t <= 3; t++)
            for (var i = 0; i < 2; i++)
            {
                var g = grads[t - 1][i];
                expected[i] *= 1 - lr * wd;
                mom[i] = b1 * mom[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                var mh = mom[i] / (1 - Math.Pow(b1, t));
                var vh = v[i] / (1 - Math.Pow(b2, t));
                expected[i] -= lr * mh / (Math.Sqrt(vh) + eps);
            }

        var param = nn.Parameter(tensor(p0, dtype: ScalarType.Float64));
        using var opt = Optimizers.AdamW(new[] { param }, lr, new[] { b1, b2 }, eps, wd);
        foreach (var g in grads)
        {
            opt.zero_grad();
            using var gt = tensor(g, dtype: ScalarType.Float64);
            (param * gt).sum().backward();
            opt.step();
        }
        var actual = param.data<double>().ToArray();
        Assert.Equal(expected[0], actual[0], 1e-9);
        Assert.Equal(expected[1], actual[1], 1e-9);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AdamW_FourSteps_BitIdenticalToTorchSharpsAdamW(bool amsgrad)
    {
        // Given two copies of the same parameters, one under our AdamW (its step disposes its Scalars) and one under
        // TorchSharp's, with a learning rate that changes between steps as a schedule does
        manual_seed(9);
        using var init = randn(3, 5);
        var ours = nn.Parameter(init.clone());
        var theirs = nn.Parameter(init.clone());
        using var opt = Optimizers.AdamW(new[] { ours }, lr: 0.01, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1, amsgrad: amsgrad);
        using var reference = torch.optim.AdamW(new[] { theirs }, 0.01, 0.8, 0.95, 1e-6, 0.1, amsgrad);

        // When both take four steps on the same gradients
        for (var step = 0; step < 4; step++)
        {
            using var g = randn(3, 5);
            ours.grad = g.clone();
            theirs.grad = g.clone();
            Optimizers.SetLearningRate(opt, 0.01 / (step + 1));
            Optimizers.SetLearningRate(reference, 0.01 / (step + 1));
            opt.step();
            reference.step();
        }

        // Then the weights agree bit for bit (same operations, same order, same coefficients)
        Assert.Equal(theirs.data<float>().ToArray(), ours.data<float>().ToArray());
    }

    [Fact]
    public void Sgd_MomentumTwoSteps_MatchesHeavyBallFormula()
    {
        // b1 = g1, p1 = p0 - lr b1; b2 = mu b1 + g2, p2 = p1 - lr b2 (dampening 0).
        double lr = 0.1, mu = 0.9;
        var param = nn.Parameter(tensor(new[] { 1.0 }, dtype: ScalarType.Float64));
        using var opt = Optimizers.Sgd(new[] { param }, lr, momentum: mu);
        foreach (var g in new[] { 2.0, -1.0 })
        {
            opt.zero_grad();
            (param * g).sum().backward();
            opt.step();
        }
        var expected = 1.0 - lr * 2.0 - lr * (mu * 2.0 - 1.0);
        Assert.Equal(expected, param.data<double>()[0], 1e-12);
    }

    [Fact]
    public void AdamW_ThreeBetas_ThrowsNamingKey()
    {
        var param = nn.Parameter(zeros(2));
        var e = Assert.Throws<ArgumentException>(() => Optimizers.AdamW(new[] { param }, betas: new[] { 0.9, 0.99, 0.5 }));
        Assert.Contains("optimizer.betas", e.Message);
    }

    [Fact]
    public void AdamW_AllFrozen_ThrowsClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => Optimizers.AdamW(Array.Empty<Parameter>()));
        Assert.Contains("frozen", e.Message);
    }
}

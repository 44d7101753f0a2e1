// LocalGradientSync, the one-process gradient sync: one normalisation per step over uneven micro-batches, clipping,
// the float64-accurate norm, and a tiny training run against the plain reference in TinyTask.
using SharpTune.MpiWorker;
using SharpTune.Tests.Distributed;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Training;

[Collection(GlobalTorchStateCollection.Name)]
public sealed class GradientSyncTests
{
    private const long Ignore = -100;

    private static (Tensor Logits, Tensor Labels) Data()
    {
        var gen = new Generator(7);
        var x = randn(new long[] { 4, 5, 6 }, dtype: ScalarType.Float64, generator: gen); // [b, s, d]
        // Uneven padding per row: 5, 2, 4, 1 valid tokens.
        var labels = tensor(new long[,]
        {
            { 1, 2, 0, 3, 1 },
            { 2, 2, Ignore, Ignore, Ignore },
            { 0, 1, 3, 3, Ignore },
            { 3, Ignore, Ignore, Ignore, Ignore },
        });
        return (x, labels);
    }

    private static TorchSharp.Modules.Linear Head()
    {
        manual_seed(3);
        return nn.Linear(6, 4, dtype: ScalarType.Float64);
    }

    // The whole batch's mean CE over valid tokens, its gradient wrt the head's weight; the gradients are cleared after.
    private static (double Loss, Tensor WeightGrad) OneBatchMean(TorchSharp.Modules.Linear head, Tensor x, Tensor labels)
    {
        var full = nn.functional.cross_entropy(head.call(x).reshape(-1, 4), labels.reshape(-1), ignore_index: Ignore);
        full.backward();
        var grad = head.weight!.grad!.clone();
        head.zero_grad();
        return (full.item<double>(), grad);
    }

    private static Tensor SummedCe(nn.Module<Tensor, Tensor> head, Tensor x, Tensor labels)
    {
        var logits = head.call(x); // [b, s, v]
        return nn.functional.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), ignore_index: Ignore, reduction: nn.Reduction.Sum);
    }

    [Fact]
    public void Finish_TwoUnevenMicroBatches_EqualsOneBatchMeanOverTokens()
    {
        var (x, labels) = Data();
        using var head = Head();

        // One batch: mean over all 12 valid tokens.
        var (expectedLoss, expectedGrad) = OneBatchMean(head, x, labels);

        // Two micro-batches of 2 rows: 7 and 5 valid tokens.
        using var acc = new LocalGradientSync(head.parameters());
        acc.Backward(SummedCe(head, x[..2], labels[..2]), 7);
        acc.Backward(SummedCe(head, x[2..], labels[2..]), 5);
        var step = acc.Finish();

        Assert.Equal(12, step.Tokens);
        Assert.Equal(expectedLoss, step.Loss, 1e-12);
        Assert.True(head.weight!.grad!.allclose(expectedGrad, rtol: 1e-12, atol: 1e-14));
        Assert.Equal(0, acc.MicroBatches);
    }

    [Fact]
    public void Finish_MeanOfMicroBatchMeans_WouldDiffer()
    {
        // Guards the test above: with uneven padding, averaging per-micro-batch means is a different gradient.
        var (x, labels) = Data();
        using var head = Head();
        var (_, expectedGrad) = OneBatchMean(head, x, labels);
        var a = nn.functional.cross_entropy(head.call(x[..2]).reshape(-1, 4), labels[..2].reshape(-1), ignore_index: Ignore);
        var b = nn.functional.cross_entropy(head.call(x[2..]).reshape(-1, 4), labels[2..].reshape(-1), ignore_index: Ignore);
        ((a + b) / 2).backward();
        Assert.False(head.weight!.grad!.allclose(expectedGrad, rtol: 1e-6));
    }

    [Fact]
    public void Finish_NormFiveClipOne_ScalesToMax()
    {
        var p = nn.Parameter(zeros(2));
        using var g = tensor(new float[] { 3f, 4f });
        using var sync = new LocalGradientSync(new[] { p }, maxGradNorm: 1.0);
        sync.Backward((p * g).sum(), 1);
        var norm = sync.Finish().GradNorm;
        Assert.Equal(5.0, norm, 5);
        var clipped = p.grad!.data<float>().ToArray();
        Assert.Equal(0.6f, clipped[0], 4);
        Assert.Equal(0.8f, clipped[1], 4);
    }

    [Fact]
    public void GradientNorm_RowsAndTails_MatchFloat64WithinTheFloat32RowBound()
    {
        // Given tensors of whole 4,096-element rows with a ragged tail, only a tail, and bf16
        manual_seed(5);
        var tensors = new[] { randn(3 * 4096 + 17), randn(100), randn(2, 4096).mul_(1e-3), randn(5000).to(ScalarType.BFloat16) };
        var exact = Math.Sqrt(tensors.Sum(t => t.to(ScalarType.Float64).square().sum().item<double>()));

        // When the norm is computed
        var norm = GradientNorm.Of(tensors);

        // Then it is the float64 norm up to each row's float32 sum of 4,096 squares (gamma(4096) relative on the
        // squared norm, half of it on the norm) and the float64 rest
        Assert.True(Math.Abs(norm - exact) <= FloatBounds.Gamma(4096) / 2 * exact + 1e-12, $"norm {norm:R} vs float64 {exact:R}");
        // and a tail alone is float64 throughout
        Assert.Equal(Math.Sqrt(tensors[1].to(ScalarType.Float64).square().sum().item<double>()), GradientNorm.Of([tensors[1]]), 12);
    }

    [Fact]
    public void Finish_NoValidTokens_ThrowsClearError()
    {
        var p = nn.Parameter(ones(1));
        using var acc = new LocalGradientSync(new[] { p });
        acc.Backward((p * 0).sum(), 0);
        var e = Assert.Throws<InvalidOperationException>(() => acc.Finish());
        Assert.Contains("no valid tokens", e.Message);
    }

    [Theory]
    [InlineData("sgd", 0.4)]
    [InlineData("adamw", null)]
    [InlineData("adamw", 1e-3)]
    public void LocalGradientSync_TinyRun_EqualsPlainReference(string optimizer, double? clip)
    {
        var s = new TinyTrainingSettings { Optimizer = optimizer, MaxGradNorm = clip };
        Determinism.Seed(s.Seed);
        using var reference = TinyTask.Model();
        var expectedRun = TinyTask.TrainReference(s, reference);
        var expected = TinyTask.Flatten(reference);

        Determinism.Seed(s.Seed);
        using var model = TinyTask.Model();
        var loader = TinyTask.Loader(s);
        using var sync = new LocalGradientSync(model.parameters(), s.MaxGradNorm);
        var (losses, norms) = TinyTask.Train(s, model, sync, epoch => loader.Batches(epoch), loader.BatchesPerEpoch);

        SameTinyRun.Assert(expectedRun, expected, TinyTask.Flatten(model), losses, s, $"{optimizer}, clip {clip}");
        if (clip is { } c) Assert.Contains(norms, n => n > c); // the clip actually bit at least once
    }

    /// <summary>The reported norm against a float64 sum of squares of the token-normalised gradients; parameter sizes
    /// give whole 4,096-element rows and a ragged tail, and values of very different scales.</summary>
    [Fact]
    public void Finish_GradNorm_EqualsFloat64Reference()
    {
        Determinism.Seed(3);
        var parameters = new[] { 10_000L, 4_096, 7, 123_457 }.Select(n => new TorchSharp.Modules.Parameter(zeros(n))).ToList();
        using var sync = new LocalGradientSync(parameters);
        using (var scope = NewDisposeScope())
        {
            var loss = parameters.Select((p, i) => (p * (randn(p.shape) * Math.Pow(10, i - 2))).sum()).Aggregate((a, b) => a + b);
            sync.Backward(loss, 7);
        }
        var expected = Math.Sqrt(parameters.Sum(p => p.grad!.to_type(ScalarType.Float64).square().sum().item<double>())) / 7; // Finish divides by the tokens

        var step = sync.Finish();

        // Each fp32 row norm is a sum of 4,096 squares (gamma(4096) relative, one rounding per square); the float64
        // sums over rows and parameters and the square root add nothing at this scale; dividing by 7 in fp32 adds u.
        Assert.Equal(expected, step.GradNorm, expected * FloatBounds.Gamma(4096 + 2));
        foreach (var p in parameters) p.Dispose();
    }

    [Fact]
    public void Finish_ParameterWithoutGradient_StaysWithoutGradient()
    {
        using var used = nn.Linear(3, 1);
        using var unused = nn.Linear(3, 1);
        using var sync = new LocalGradientSync(used.parameters().Concat(unused.parameters()));

        sync.Backward(used.call(ones(2, 3)).sum(), 2);
        var step = sync.Finish();

        Assert.All(unused.parameters(), p => Assert.Null(p.grad));
        Assert.Equal(2, step.Tokens);
        Assert.Equal(1.0, used.bias!.grad!.item<float>(), 6); // d(sum of 2 rows of w·x + b)/db = 2, divided by 2 tokens
    }
}

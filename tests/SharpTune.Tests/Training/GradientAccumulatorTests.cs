using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Training;

[Collection(GlobalTorchStateCollection.Name)]
public sealed class GradientAccumulatorTests
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

    private static Tensor SummedCe(nn.Module<Tensor, Tensor> head, Tensor x, Tensor labels)
    {
        var logits = head.call(x); // [b, s, v]
        return nn.functional.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), ignore_index: Ignore, reduction: nn.Reduction.Sum);
    }

    [Fact]
    public void Finish_TwoUnevenMicroBatches_EqualsOneBatchMeanOverTokens()
    {
        var (x, labels) = Data();
        manual_seed(3);
        using var head = nn.Linear(6, 4, dtype: ScalarType.Float64);

        // One batch: mean over all 12 valid tokens.
        var full = nn.functional.cross_entropy(head.call(x).reshape(-1, 4), labels.reshape(-1), ignore_index: Ignore);
        full.backward();
        var expectedGrad = head.weight!.grad!.clone();
        var expectedLoss = full.item<double>();
        head.zero_grad();

        // Two micro-batches of 2 rows: 7 and 5 valid tokens.
        var acc = new GradientAccumulator(head.parameters());
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
        manual_seed(3);
        using var head = nn.Linear(6, 4, dtype: ScalarType.Float64);
        var full = nn.functional.cross_entropy(head.call(x).reshape(-1, 4), labels.reshape(-1), ignore_index: Ignore);
        full.backward();
        var expectedGrad = head.weight!.grad!.clone();
        head.zero_grad();
        var a = nn.functional.cross_entropy(head.call(x[..2]).reshape(-1, 4), labels[..2].reshape(-1), ignore_index: Ignore);
        var b = nn.functional.cross_entropy(head.call(x[2..]).reshape(-1, 4), labels[2..].reshape(-1), ignore_index: Ignore);
        ((a + b) / 2).backward();
        Assert.False(head.weight!.grad!.allclose(expectedGrad, rtol: 1e-6));
    }

    [Fact]
    public void ClipGradNorm_NormFive_ScalesToMax()
    {
        var p = nn.Parameter(zeros(2));
        using var g = tensor(new float[] { 3f, 4f });
        (p * g).sum().backward();
        var norm = GradientAccumulator.ClipGradNorm(new[] { p }, 1.0);
        Assert.Equal(5.0, norm, 5);
        var clipped = p.grad!.data<float>().ToArray();
        Assert.Equal(0.6f, clipped[0], 4);
        Assert.Equal(0.8f, clipped[1], 4);
    }

    [Fact]
    public void Finish_NoValidTokens_ThrowsClearError()
    {
        var p = nn.Parameter(ones(1));
        var acc = new GradientAccumulator(new[] { p });
        acc.Backward((p * 0).sum(), 0);
        var e = Assert.Throws<InvalidOperationException>(() => acc.Finish());
        Assert.Contains("no valid tokens", e.Message);
    }
}

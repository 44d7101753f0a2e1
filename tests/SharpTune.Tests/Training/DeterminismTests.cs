using SharpTune.Training;

namespace SharpTune.Tests.Training;

[Collection(GlobalTorchStateCollection.Name)]
public sealed class DeterminismTests
{
    [Fact]
    public void TwoRuns_SameSeed_BitIdenticalWeights()
    {
        using var a = new TinyRun(seed: 42);
        a.RunUntil(12);
        using var b = new TinyRun(seed: 42);
        b.RunUntil(12);
        Assert.Equal(a.WeightBytes(), b.WeightBytes());
    }

    [Fact]
    public void TwoRuns_DifferentSeed_DifferentWeights()
    {
        using var a = new TinyRun(seed: 42);
        a.RunUntil(3);
        using var b = new TinyRun(seed: 43);
        b.RunUntil(3);
        Assert.NotEqual(a.WeightBytes(), b.WeightBytes());
    }

    [Fact]
    public void ShuffledOrder_SameSeedAndEpoch_SamePermutation()
    {
        var first = Determinism.ShuffledOrder(100, 5, 2);
        Assert.Equal(first, Determinism.ShuffledOrder(100, 5, 2));
        Assert.Equal(Enumerable.Range(0, 100), first.Order());
        Assert.NotEqual(first, Determinism.ShuffledOrder(100, 5, 3));
        Assert.NotEqual(first, Determinism.ShuffledOrder(100, 6, 2));
        Assert.NotEqual(Enumerable.Range(0, 100), first);
    }
}

using SharpTune.Training;
using static TorchSharp.torch;

namespace SharpTune.Tests.Training;

public sealed class LrSchedulersTests
{
    // Closed-form points of torchtune's cosine-with-warmup (W = 10, T = 110, num_cycles = 0.5).
    [Theory]
    [InlineData(0, 0.0)]
    [InlineData(5, 0.5)]
    [InlineData(10, 1.0)]
    [InlineData(35, 0.85355339059327373)] // (1 + cos(pi/4)) / 2
    [InlineData(60, 0.5)]
    [InlineData(85, 0.14644660940672627)] // (1 - cos(pi/4)) / 2
    [InlineData(110, 0.0)]
    public void CosineWithWarmup_KeyPoints_MatchClosedForm(long step, double expected) =>
        Assert.Equal(expected, LrSchedulers.CosineWithWarmup(step, 10, 110), 1e-12);

    [Fact]
    public void CosineWithWarmup_PastTrainingSteps_RisesAgainLikeTorchtune()
    {
        // torchtune clamps only negative values, so past T the half cosine climbs back: (1 + cos(1.4 pi)) / 2.
        Assert.Equal(0.34549150281252633, LrSchedulers.CosineWithWarmup(150, 10, 110), 1e-12);
    }

    [Fact]
    public void CosineWithWarmup_OneFullCycle_ReturnsToPeak()
    {
        Assert.Equal(1.0, LrSchedulers.CosineWithWarmup(110, 10, 110, numCycles: 1.0), 1e-12);
        Assert.Equal(0.0, LrSchedulers.CosineWithWarmup(60, 10, 110, numCycles: 1.0), 1e-12);
    }

    [Fact]
    public void Scheduler_FreshOptimizer_FollowsLambdaLrSemantics()
    {
        var p = nn.Parameter(zeros(1));
        using var opt = Optimizers.AdamW(new[] { p }, lr: 3e-4);
        var s = LrSchedulers.GetCosineScheduleWithWarmup(opt, numWarmupSteps: 4, numTrainingSteps: 12);
        Assert.Equal(0.0, s.CurrentLearningRate, 15); // step 0 of warmup
        for (var i = 0; i < 2; i++) s.Step();
        Assert.Equal(3e-4 * 0.5, s.CurrentLearningRate, 15);
        for (var i = 0; i < 6; i++) s.Step(); // step 8: progress 0.5 -> 0.5
        Assert.Equal(3e-4 * 0.5, s.CurrentLearningRate, 15);
        Assert.Equal(8, s.LastEpoch);
    }

    [Fact]
    public void Restore_SavedLastEpoch_AppliesSameLearningRate()
    {
        var p = nn.Parameter(zeros(1));
        using var opt = Optimizers.AdamW(new[] { p }, lr: 1e-3);
        var s = LrSchedulers.GetLinearScheduleWithWarmup(opt, 2, 10);
        s.Restore(6);
        Assert.Equal(6, s.LastEpoch);
        Assert.Equal(1e-3 * 4.0 / 8.0, s.CurrentLearningRate, 15); // (T - s)/(T - W)
    }

    [Fact]
    public void Linear_AfterEnd_ClampedAtZero() =>
        Assert.Equal(0.0, LrSchedulers.LinearWithWarmup(20, 2, 10));

    [Fact]
    public void Constant_AfterWarmup_IsBaseRate()
    {
        var p = nn.Parameter(zeros(1));
        using var opt = Optimizers.Sgd(new[] { p }, lr: 0.2);
        var s = LrSchedulers.GetConstantScheduleWithWarmup(opt, numWarmupSteps: 2);
        Assert.Equal(0.0, s.CurrentLearningRate);
        s.Step();
        Assert.Equal(0.1, s.CurrentLearningRate, 15);
        s.Step();
        s.Step();
        Assert.Equal(0.2, s.CurrentLearningRate, 15);
    }

    [Fact]
    public void Cosine_NegativeWarmup_ThrowsNamingKey()
    {
        var p = nn.Parameter(zeros(1));
        using var opt = Optimizers.Sgd(new[] { p });
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => LrSchedulers.GetCosineScheduleWithWarmup(opt, -1, 10));
        Assert.Contains("num_warmup_steps", e.Message);
    }
}

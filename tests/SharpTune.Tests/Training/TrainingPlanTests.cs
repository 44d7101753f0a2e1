using SharpTune.Training;

namespace SharpTune.Tests.Training;

public sealed class TrainingPlanTests
{
    [Fact]
    public void StepsPerEpoch_FloorOfBatchesOverAccumulation_CappedByMax()
    {
        // torchtune: steps_per_epoch = len(dataloader) // gradient_accumulation_steps, then min with max_steps_per_epoch.
        Assert.Equal(12, new TrainingPlan(100, 8, 1).StepsPerEpoch);
        Assert.Equal(5, new TrainingPlan(100, 8, 1, maxStepsPerEpoch: 5).StepsPerEpoch);
        Assert.Equal(36, new TrainingPlan(100, 8, 3).TotalSteps);
    }

    [Fact]
    public void PositionOf_MidSecondEpoch_EpochAndFirstMicroBatch()
    {
        var plan = new TrainingPlan(100, 8, 3);
        Assert.Equal((0, 0L), plan.PositionOf(0));
        Assert.Equal((1, 0L), plan.PositionOf(12));
        Assert.Equal((1, 24L), plan.PositionOf(15));
        Assert.Equal((3, 0L), plan.PositionOf(36)); // finished
    }

    [Fact]
    public void PositionOf_BeyondPlan_ExplainsLikelyCause()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TrainingPlan(10, 1, 1).PositionOf(11));
        Assert.Contains("max_steps_per_epoch", e.Message);
    }

    [Fact]
    public void Constructor_FewerBatchesThanAccumulation_Throws() =>
        Assert.Contains("no optimizer step", Assert.Throws<ArgumentException>(() => new TrainingPlan(3, 8, 1)).Message);

    [Fact]
    public void ThroughputMeter_TokensOverTime_RateAndReset()
    {
        var meter = new ThroughputMeter();
        meter.Add(1000);
        Thread.Sleep(50);
        var rate = meter.Reset();
        Assert.InRange(rate, 1000 / 5.0, 1000 / 0.05);
        Assert.Equal(0, meter.Tokens);
    }
}

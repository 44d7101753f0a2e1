// Learning-rate schedules as step -> multiplier functions applied to the optimizer's base learning rate, with the
// semantics of torch.optim.lr_scheduler.LambdaLR: building the schedule sets lr = base * f(0); each Step() after an
// optimizer step advances to f(1), f(2), ... `LastEpoch` is the number of Step() calls, which is all a resume needs.
// References: torchtune/training/lr_schedulers.py `get_cosine_schedule_with_warmup` (num_cycles = 0.5);
// Hugging Face transformers optimization.py `get_linear_schedule_with_warmup`, `get_constant_schedule_with_warmup`.
using SharpTune.Config;
using TorchSharp;

namespace SharpTune.Training;

/// <summary>A learning-rate schedule bound to an optimizer (LambdaLR semantics).</summary>
public sealed class LrScheduler
{
    private readonly torch.optim.Optimizer _optimizer;
    private readonly Func<long, double> _multiplier;

    /// <summary>Binds <paramref name="multiplier"/> to <paramref name="optimizer"/> and applies step <paramref name="lastEpoch"/> + 1.</summary>
    /// <param name="optimizer">The optimizer whose groups' learning rates are set.</param>
    /// <param name="multiplier">Maps the step index to a factor on the base learning rate.</param>
    /// <param name="name">Schedule name for messages and recipe state.</param>
    /// <param name="lastEpoch">-1 for a fresh run (torch's convention); the saved <see cref="LastEpoch"/> to resume.</param>
    public LrScheduler(torch.optim.Optimizer optimizer, Func<long, double> multiplier, string name, long lastEpoch = -1)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(multiplier);
        if (lastEpoch < -1) throw new ArgumentOutOfRangeException(nameof(lastEpoch), lastEpoch, "last_epoch must be >= -1");
        _optimizer = optimizer;
        _multiplier = multiplier;
        Name = name;
        BaseLearningRates = optimizer.ParamGroups.Select(g => g.InitialLearningRate).ToArray();
        LastEpoch = lastEpoch;
        Step();
    }

    /// <summary>Schedule name (e.g. <c>cosine_with_warmup</c>).</summary>
    public string Name { get; }

    /// <summary>Each parameter group's learning rate before scaling.</summary>
    public IReadOnlyList<double> BaseLearningRates { get; }

    /// <summary>Index of the step whose learning rate is currently applied (torch's <c>last_epoch</c>).</summary>
    public long LastEpoch { get; private set; }

    /// <summary>The learning rate of the first group as currently applied.</summary>
    public double CurrentLearningRate => _optimizer.ParamGroups.First().LearningRate;

    /// <summary>The multiplier the schedule gives step <paramref name="step"/>.</summary>
    public double MultiplierAt(long step) => _multiplier(step);

    /// <summary>Advances one step and sets each group's learning rate to base × multiplier. Call after optimizer.step().</summary>
    public void Step()
    {
        LastEpoch++;
        var factor = _multiplier(LastEpoch);
        var i = 0;
        foreach (var group in _optimizer.ParamGroups) group.LearningRate = BaseLearningRates[i++] * factor;
    }

    /// <summary>Restores the position saved from <see cref="LastEpoch"/> (for resume) and reapplies its learning rate.</summary>
    public void Restore(long lastEpoch)
    {
        if (lastEpoch < 0) throw new ArgumentOutOfRangeException(nameof(lastEpoch), lastEpoch, "a saved scheduler step must be >= 0");
        LastEpoch = lastEpoch - 1;
        Step();
    }
}

/// <summary>Schedule factories; each is a config component (<c>lr_scheduler: _component_: ...</c>).</summary>
public static class LrSchedulers
{
    /// <summary>
    /// Linear warmup from 0 to the base rate over <paramref name="numWarmupSteps"/>, then a cosine decay:
    /// <c>f(s) = s / max(1, W)</c> for <c>s &lt; W</c>, else
    /// <c>max(0, ½(1 + cos(π · numCycles · 2 · (s − W) / max(1, T − W))))</c>.
    /// </summary>
    [Component("sharptune.training.lr_schedulers.get_cosine_schedule_with_warmup")]
    [Component("torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup")]
    [Component("torchtune.modules.get_cosine_schedule_with_warmup")]
    public static LrScheduler GetCosineScheduleWithWarmup(
        torch.optim.Optimizer optimizer, int numWarmupSteps, int? numTrainingSteps = null, double numCycles = 0.5, int lastEpoch = -1)
    {
        var total = Validate(numWarmupSteps, numTrainingSteps);
        return new LrScheduler(optimizer, s => CosineWithWarmup(s, numWarmupSteps, total, numCycles), "cosine_with_warmup", lastEpoch);
    }

    /// <summary>
    /// Linear warmup, then a linear decay to 0 at <paramref name="numTrainingSteps"/>:
    /// <c>f(s) = max(0, (T − s) / max(1, T − W))</c> after warmup.
    /// </summary>
    [Component("sharptune.training.lr_schedulers.get_linear_schedule_with_warmup")]
    public static LrScheduler GetLinearScheduleWithWarmup(
        torch.optim.Optimizer optimizer, int numWarmupSteps, int? numTrainingSteps = null, int lastEpoch = -1)
    {
        var total = Validate(numWarmupSteps, numTrainingSteps);
        return new LrScheduler(optimizer, s => LinearWithWarmup(s, numWarmupSteps, total), "linear_with_warmup", lastEpoch);
    }

    /// <summary>Linear warmup over <paramref name="numWarmupSteps"/> (0 for none), then the base rate.</summary>
    [Component("sharptune.training.lr_schedulers.get_constant_schedule_with_warmup")]
    public static LrScheduler GetConstantScheduleWithWarmup(torch.optim.Optimizer optimizer, int numWarmupSteps = 0, int lastEpoch = -1)
    {
        if (numWarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(numWarmupSteps), numWarmupSteps, "num_warmup_steps must be >= 0");
        return new LrScheduler(optimizer, s => s < numWarmupSteps ? (double)s / Math.Max(1, numWarmupSteps) : 1.0, "constant_with_warmup", lastEpoch);
    }

    /// <summary>The cosine-with-warmup multiplier at step <paramref name="step"/>.</summary>
    public static double CosineWithWarmup(long step, int numWarmupSteps, int numTrainingSteps, double numCycles = 0.5)
    {
        if (step < numWarmupSteps) return (double)step / Math.Max(1, numWarmupSteps);
        var progress = (double)(step - numWarmupSteps) / Math.Max(1, numTrainingSteps - numWarmupSteps);
        return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * numCycles * 2.0 * progress)));
    }

    /// <summary>The linear-with-warmup multiplier at step <paramref name="step"/>.</summary>
    public static double LinearWithWarmup(long step, int numWarmupSteps, int numTrainingSteps)
    {
        if (step < numWarmupSteps) return (double)step / Math.Max(1, numWarmupSteps);
        return Math.Max(0.0, (double)(numTrainingSteps - step) / Math.Max(1, numTrainingSteps - numWarmupSteps));
    }

    // num_training_steps is optional in configs (torchtune's recipes compute it from epochs and steps per epoch and
    // pass it), but a schedule cannot be built without it.
    private static int Validate(int numWarmupSteps, int? numTrainingSteps)
    {
        if (numWarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(numWarmupSteps), numWarmupSteps, "num_warmup_steps must be >= 0");
        if (numTrainingSteps is not { } total)
            throw new ArgumentException("num_training_steps is missing: set it in the config or let the recipe supply it", nameof(numTrainingSteps));
        if (total <= 0) throw new ArgumentOutOfRangeException(nameof(numTrainingSteps), numTrainingSteps, "num_training_steps must be > 0");
        return total;
    }
}

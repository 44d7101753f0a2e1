// Step arithmetic every recipe repeats: optimizer steps per epoch (torchtune: batches // gradient_accumulation_steps,
// capped by max_steps_per_epoch), the schedule's num_training_steps, and where a resumed run continues (epoch and
// batch index in that epoch's shuffled order). Plus a tokens-per-second meter for the `tokens_per_second` metric.
// References: torchtune recipes/knowledge_distillation_single_device.py (_steps_per_epoch, max_steps_per_epoch,
// epochs_run, steps_run; log tokens_per_second_per_gpu = tokens / time since last log).
using System.Diagnostics;

namespace SharpTune.Training;

/// <summary>How many optimizer steps a run takes and where a given step falls.</summary>
public sealed record TrainingPlan
{
    /// <param name="batchesPerEpoch">Micro-batches the data loader yields per epoch (drop_last).</param>
    /// <param name="gradientAccumulationSteps">Micro-batches per optimizer step.</param>
    /// <param name="epochs">Configured epochs.</param>
    /// <param name="maxStepsPerEpoch">Optional cap on optimizer steps per epoch.</param>
    public TrainingPlan(int batchesPerEpoch, int gradientAccumulationSteps, int epochs, int? maxStepsPerEpoch = null)
    {
        if (batchesPerEpoch <= 0) throw new ArgumentOutOfRangeException(nameof(batchesPerEpoch), batchesPerEpoch, "the data loader yields no batch (data set smaller than batch_size?)");
        if (gradientAccumulationSteps <= 0) throw new ArgumentOutOfRangeException(nameof(gradientAccumulationSteps), gradientAccumulationSteps, "gradient_accumulation_steps must be >= 1");
        if (epochs <= 0) throw new ArgumentOutOfRangeException(nameof(epochs), epochs, "epochs must be >= 1");
        if (maxStepsPerEpoch is <= 0) throw new ArgumentOutOfRangeException(nameof(maxStepsPerEpoch), maxStepsPerEpoch, "max_steps_per_epoch must be >= 1 or null");
        var full = batchesPerEpoch / gradientAccumulationSteps;
        if (full == 0)
            throw new ArgumentException($"an epoch has {batchesPerEpoch} batches, fewer than gradient_accumulation_steps {gradientAccumulationSteps}: no optimizer step would run", nameof(gradientAccumulationSteps));
        BatchesPerEpoch = batchesPerEpoch;
        GradientAccumulationSteps = gradientAccumulationSteps;
        Epochs = epochs;
        MaxStepsPerEpoch = maxStepsPerEpoch;
        StepsPerEpoch = maxStepsPerEpoch is { } cap ? Math.Min(full, cap) : full;
    }

    /// <summary>Micro-batches per epoch.</summary>
    public int BatchesPerEpoch { get; }
    /// <summary>Micro-batches per optimizer step.</summary>
    public int GradientAccumulationSteps { get; }
    /// <summary>Configured epochs.</summary>
    public int Epochs { get; }
    /// <summary>Cap on optimizer steps per epoch, or null.</summary>
    public int? MaxStepsPerEpoch { get; }
    /// <summary>Optimizer steps per epoch.</summary>
    public int StepsPerEpoch { get; }
    /// <summary>Optimizer steps in the whole run (the schedule's num_training_steps).</summary>
    public long TotalSteps => (long)StepsPerEpoch * Epochs;

    /// <summary>
    /// Where optimizer step <paramref name="stepsRun"/> (0-based, = steps already completed) starts: its epoch and
    /// the index of its first micro-batch in that epoch's order.
    /// </summary>
    public (int Epoch, long BatchIndex) PositionOf(long stepsRun)
    {
        if (stepsRun < 0 || stepsRun > TotalSteps)
            throw new ArgumentOutOfRangeException(nameof(stepsRun), stepsRun, $"steps_run must be in [0, {TotalSteps}] for this plan (did epochs, batch_size or max_steps_per_epoch change since the checkpoint?)");
        var epoch = (int)(stepsRun / StepsPerEpoch);
        var inEpoch = stepsRun % StepsPerEpoch;
        return (epoch, inEpoch * GradientAccumulationSteps);
    }
}

/// <summary>Measures valid tokens per second between two log points.</summary>
public sealed class ThroughputMeter
{
    private readonly Stopwatch _watch = Stopwatch.StartNew();
    private long _tokens;

    /// <summary>Counts <paramref name="tokens"/> processed since the last <see cref="Reset"/>.</summary>
    public void Add(long tokens)
    {
        if (tokens < 0) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "token count must be >= 0");
        _tokens += tokens;
    }

    /// <summary>Tokens counted since the last reset.</summary>
    public long Tokens => _tokens;

    /// <summary>Time since the last reset.</summary>
    public TimeSpan Elapsed => _watch.Elapsed;

    /// <summary>Tokens per second since the last reset (0 before any time passed).</summary>
    public double TokensPerSecond => _watch.Elapsed.TotalSeconds > 0 ? _tokens / _watch.Elapsed.TotalSeconds : 0;

    /// <summary>Returns the rate and starts a new interval.</summary>
    public double Reset()
    {
        var rate = TokensPerSecond;
        _tokens = 0;
        _watch.Restart();
        return rate;
    }
}

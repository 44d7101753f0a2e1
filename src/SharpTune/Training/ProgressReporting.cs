// How the library tells a user what a run is doing without touching the console: recipes call an
// IProgressReporter; the CLI implements it with a Spectre.Console live progress bar (epoch, step/total, loss,
// tokens/s, ETA); tests and embedders use NullProgressReporter or their own.
namespace SharpTune.Training;

/// <summary>A snapshot of training progress after an optimizer step.</summary>
/// <param name="Epoch">Current epoch (0-based).</param>
/// <param name="TotalEpochs">Configured epochs.</param>
/// <param name="Step">Optimizer steps completed in the run.</param>
/// <param name="TotalSteps">Optimizer steps the run will take.</param>
/// <param name="Loss">Latest loss.</param>
/// <param name="TokensPerSecond">Latest throughput in valid tokens per second.</param>
/// <param name="Elapsed">Wall time since the run (or its resume) started.</param>
public sealed record TrainingProgress(
    int Epoch, int TotalEpochs, long Step, long TotalSteps, double Loss, double TokensPerSecond, TimeSpan Elapsed)
{
    /// <summary>Estimated time left, from the average pace so far (null before the first step).</summary>
    public TimeSpan? Eta(long stepsAtStart = 0)
    {
        var done = Step - stepsAtStart;
        if (done <= 0 || TotalSteps <= Step) return done <= 0 ? null : TimeSpan.Zero;
        return TimeSpan.FromTicks((long)(Elapsed.Ticks / (double)done * (TotalSteps - Step)));
    }
}

/// <summary>Receives progress and messages from a recipe; the CLI renders them.</summary>
public interface IProgressReporter
{
    /// <summary>A run (or resumed run) starts: <paramref name="totalSteps"/> optimizer steps over <paramref name="totalEpochs"/> epochs.</summary>
    void Started(long totalSteps, int totalEpochs, long stepsAlreadyRun);

    /// <summary>An optimizer step finished.</summary>
    void Progress(TrainingProgress progress);

    /// <summary>Informational message (checkpoint saved, resumed from ...).</summary>
    void Info(string message);

    /// <summary>Something the user should know but that does not stop the run (e.g. slow bf16 on this CPU).</summary>
    void Warn(string message);

    /// <summary>The run finished.</summary>
    void Completed();
}

/// <summary>Discards everything.</summary>
public sealed class NullProgressReporter : IProgressReporter
{
    /// <summary>The shared instance.</summary>
    public static NullProgressReporter Instance { get; } = new();

    /// <inheritdoc />
    public void Started(long totalSteps, int totalEpochs, long stepsAlreadyRun) { }
    /// <inheritdoc />
    public void Progress(TrainingProgress progress) { }
    /// <inheritdoc />
    public void Info(string message) { }
    /// <inheritdoc />
    public void Warn(string message) { }
    /// <inheritdoc />
    public void Completed() { }
}

/// <summary>Keeps every message and the last progress (for tests and for embedding in other tools).</summary>
public sealed class RecordingProgressReporter : IProgressReporter
{
    private readonly List<string> _infos = [];
    private readonly List<string> _warnings = [];

    /// <summary>Info messages in order.</summary>
    public IReadOnlyList<string> Infos => _infos;
    /// <summary>Warnings in order.</summary>
    public IReadOnlyList<string> Warnings => _warnings;
    /// <summary>The last progress reported.</summary>
    public TrainingProgress? Last { get; private set; }
    /// <summary>Number of Progress calls.</summary>
    public int ProgressCount { get; private set; }
    /// <summary>True after Completed.</summary>
    public bool IsCompleted { get; private set; }

    /// <inheritdoc />
    public void Started(long totalSteps, int totalEpochs, long stepsAlreadyRun) { }
    /// <inheritdoc />
    public void Progress(TrainingProgress progress)
    {
        Last = progress;
        ProgressCount++;
    }
    /// <inheritdoc />
    public void Info(string message) => _infos.Add(message);
    /// <inheritdoc />
    public void Warn(string message) => _warnings.Add(message);
    /// <inheritdoc />
    public void Completed() => IsCompleted = true;
}

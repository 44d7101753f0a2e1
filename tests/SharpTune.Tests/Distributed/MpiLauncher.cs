// Starts the MPI worker program under mpirun for the multi-process tests, and skips those tests (with the reason)
// where Open MPI's mpirun is not installed.
using System.Diagnostics;

namespace SharpTune.Tests.Distributed;

/// <summary>What an mpirun job did.</summary>
internal sealed record MpiJob(int ExitCode, string Output, TimeSpan Elapsed);

internal static class MpiLauncher
{
    /// <summary>mpirun on PATH, or null.</summary>
    public static string? MpiRun { get; } = FindOnPath("mpirun");

    /// <summary>The worker assembly, copied beside the tests by the project reference.</summary>
    public static string WorkerDll => Path.Combine(AppContext.BaseDirectory, "SharpTune.MpiWorker.dll");

    /// <summary>Starts <c>mpirun -np <paramref name="ranks"/> dotnet SharpTune.MpiWorker.dll args</c>.</summary>
    public static Process Start(int ranks, params string[] args)
    {
        var start = new ProcessStartInfo(MpiRun ?? throw new InvalidOperationException("mpirun not found"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // Root in CI containers; 2 cores with 2 ranks; no core binding so ranks can use their threads.
        foreach (var a in new[] { "-np", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), "--oversubscribe",
                     "--allow-run-as-root", "--bind-to", "none", "dotnet", WorkerDll })
            start.ArgumentList.Add(a);
        foreach (var a in args) start.ArgumentList.Add(a);
        return Process.Start(start) ?? throw new InvalidOperationException("mpirun did not start");
    }

    /// <summary>Runs a job to completion (killed after <paramref name="timeout"/>).</summary>
    public static MpiJob Run(int ranks, TimeSpan timeout, params string[] args)
    {
        var clock = Stopwatch.StartNew();
        using var p = Start(ranks, args);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            throw new TimeoutException($"mpirun {string.Join(' ', args)} did not finish within {timeout.TotalSeconds} s:\n{stdout.Result}\n{stderr.Result}");
        }
        return new MpiJob(p.ExitCode, stdout.Result + stderr.Result, clock.Elapsed);
    }

    private static string? FindOnPath(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}

/// <summary>A fact that needs mpirun; skipped with a clear message where Open MPI is not installed.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiLauncher.MpiRun is null)
            Skip = "mpirun not found on PATH: install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev; .ci/run does)";
    }
}

/// <summary>A theory that needs mpirun.</summary>
public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute()
    {
        if (MpiLauncher.MpiRun is null)
            Skip = "mpirun not found on PATH: install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev; .ci/run does)";
    }
}

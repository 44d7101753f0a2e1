// Multi-process tests: 2 ranks under mpirun against a one-process reference we compute here with the single-device
// pieces (a plain normalise-and-clip on full global batches), and the failure paths (a throwing rank, a killed rank).
using System.Diagnostics;
using SharpTune.MpiWorker;
using SharpTune.Training;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distributed;

public sealed class MultiProcessTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(120);

    [MpiFact]
    public void Collectives_TwoRanks_SumsAndBroadcastsEveryDtype()
    {
        var job = MpiLauncher.Run(2, Generous, "collectives");

        Assert.True(job.ExitCode == 0, job.Output);
        Assert.Contains("collectives ok: rank 0 of 2 (OpenMpi", job.Output);
        Assert.Contains("collectives ok: rank 1 of 2 (OpenMpi", job.Output);
    }

    [MpiTheory]
    [InlineData("sgd")]
    [InlineData("adamw")]
    public void Train_TwoRanks_EqualsOneProcessOnTheFullGlobalBatch(string optimizer)
    {
        using var dir = new Checkpointing.TempDir();
        var prefix = Path.Combine(dir.Path, "run");

        var job = MpiLauncher.Run(2, Generous, "train", optimizer, prefix);

        Assert.True(job.ExitCode == 0, job.Output);
        var settings = new TinyTrainingSettings { Optimizer = optimizer };
        float[] expected;
        ReferenceRun expectedRun;
        using (var scope = NewDisposeScope())
        {
            Determinism.Seed(settings.Seed);
            using var model = TinyTask.Model();
            expectedRun = TinyTask.TrainReference(settings, model);
            expected = TinyTask.Flatten(model);
        }
        using (var scope = NewDisposeScope())
        {
            Determinism.Seed(settings.Seed);
            using var untrained = TinyTask.Model();
            Assert.True(MaxAbsDiff(expected, TinyTask.Flatten(untrained)) > 1e-2, "training must move the weights");
        }
        var losses = File.ReadAllLines($"{prefix}.losses.txt").Select(l => double.Parse(l, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        foreach (var rank in new[] { 0, 1 })
        {
            var bytes = File.ReadAllBytes($"{prefix}.rank{rank}.bin");
            var actual = new float[bytes.Length / sizeof(float)];
            Buffer.BlockCopy(bytes, 0, actual, 0, bytes.Length);
            SameTinyRun.Assert(expectedRun, expected, actual, losses, settings, $"{optimizer}, rank {rank}");
        }
        Assert.False(File.Exists($"{prefix}.losses.txt.tmp"));
    }

    [MpiFact]
    public void Run_OneRankThrows_JobAbortsPromptlyWithThatRanksError()
    {
        var job = MpiLauncher.Run(2, Generous, "fail", "1");

        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains("rank 1 of 2 failed", job.Output);
        Assert.Contains("deliberate failure at step 2", job.Output);
        Assert.DoesNotContain("rank 0 of 2 failed", job.Output);
        Assert.True(job.Elapsed < TimeSpan.FromSeconds(30), $"the job took {job.Elapsed.TotalSeconds:F1} s to end");
    }

    [MpiFact]
    public void Run_OneRankKilled_JobEndsNonZeroWithinSeconds()
    {
        using var dir = new Checkpointing.TempDir();
        var prefix = Path.Combine(dir.Path, "pid");
        using var job = MpiLauncher.Start(2, "hang", prefix);
        var output = job.StandardOutput.ReadToEndAsync();
        var errors = job.StandardError.ReadToEndAsync();
        var pidFile = $"{prefix}.rank1";
        var wait = Stopwatch.StartNew();
        while (!File.Exists(pidFile) && wait.Elapsed < Generous && !job.HasExited) Thread.Sleep(50);
        Assert.True(File.Exists(pidFile), "rank 1 never started");

        using (var victim = Process.GetProcessById(int.Parse(File.ReadAllText(pidFile), System.Globalization.CultureInfo.InvariantCulture)))
            victim.Kill();
        var afterKill = Stopwatch.StartNew();
        var ended = job.WaitForExit(TimeSpan.FromSeconds(30));
        if (!ended) job.Kill(entireProcessTree: true);

        Assert.True(ended, "mpirun kept running after one rank was killed");
        Assert.NotEqual(0, job.ExitCode);
        Assert.NotEqual(3, job.ExitCode); // 3: the ranks gave up waiting on their own, nobody was killed
        Assert.True(afterKill.Elapsed < TimeSpan.FromSeconds(15), $"ended {afterKill.Elapsed.TotalSeconds:F1} s after the kill\n{output.Result}{errors.Result}");
    }

    private static double MaxAbsDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
}

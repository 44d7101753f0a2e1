// Under mpirun: ranks started with different configs are refused together at setup with one message naming the
// differing key (they used to wait in different collectives for ever), and a user error every rank hits is printed
// once, as the one line a one-process run prints, without .NET stack traces. Skipped where mpirun is absent.
using System.Text.RegularExpressions;
using SharpTune.Tests.Recipes;

namespace SharpTune.Tests.Distributed;

[Collection(RecipeCollection.Name)]
public sealed partial class DistributedRefusalTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(240);

    private static string CliDll => Path.Combine(AppContext.BaseDirectory, "SharpTune.Cli.dll");

    private static string[] Rank(string dir, string teacher, params string[] extra) =>
        ["-np", "1", "dotnet", CliDll, "run", "knowledge_distillation_distributed", "--config", "tiny/kd_full_distributed",
         .. RecipeRunner.Fast, $"output_dir={dir}/dist", $"checkpointer.checkpoint_dir={dir}/dist_init",
         $"teacher_checkpointer.checkpoint_dir={teacher}", "lr_scheduler=null", "epochs=1", .. extra];

    [GeneratedRegex(@"^\s+at \S+\(", RegexOptions.Multiline)]
    private static partial Regex StackFrame();

    [MpiFact]
    public void Ranks_WithDifferentConfigs_AbortTogetherNamingTheKey()
    {
        using var tmp = new Checkpointing.TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);

        // Given rank 1 alone overrides max_steps_per_epoch (MPMD launch: rank 0's args : rank 1's)
        var job = MpiLauncher.RunRaw(Generous, [.. Rank(tmp.Path, teacher, "max_steps_per_epoch=4"), ":", .. Rank(tmp.Path, teacher, "max_steps_per_epoch=10")]);

        // Then the job ends non-zero, soon, with one message that names the key and both values, and nothing was trained
        Assert.NotEqual(0, job.ExitCode);
        Assert.Single(job.Output.Split('\n'), l => l.Contains("different configs", StringComparison.Ordinal));
        Assert.Contains("rank 1: max_steps_per_epoch: 4 -> 10", job.Output);
        Assert.DoesNotMatch(StackFrame(), job.Output);
        Assert.True(job.Elapsed < TimeSpan.FromSeconds(60), $"the job took {job.Elapsed.TotalSeconds:F1} s to end:\n{job.Output}");
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "dist", "epoch_0")));
    }

    [MpiFact]
    public void Ranks_AllHitTheSameUserError_PrintItOnceAsOneLine()
    {
        using var tmp = new Checkpointing.TempDir();
        var missing = Path.Combine(tmp.Path, "no_such_teacher");

        // Given both ranks point at a teacher folder that does not exist
        var job = MpiLauncher.RunRaw(Generous, ["-np", "2", .. Rank(tmp.Path, missing, "max_steps_per_epoch=1").Skip(2)]);

        // Then the error is printed once, as "error: ..." (what one process prints), with no stack trace
        Assert.NotEqual(0, job.ExitCode);
        var lines = job.Output.Split('\n').Where(l => l.Contains("no_such_teacher", StringComparison.Ordinal)).ToList();
        Assert.True(lines.Count == 1, $"expected the error once:\n{job.Output}");
        Assert.Contains("error: checkpoint folder not found: " + missing, lines[0]);
        Assert.DoesNotContain("rank ", lines[0]);
        Assert.DoesNotMatch(StackFrame(), job.Output);
    }
}

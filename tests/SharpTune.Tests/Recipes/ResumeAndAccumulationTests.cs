// Resume after a real process kill equals an uninterrupted run bit for bit, and k accumulated micro-batches give
// the update of one batch of the same samples (the normalisation divides once by the step's valid tokens, so
// micro-batches with different padding and token counts still weigh every token equally).
using System.Diagnostics;
using SharpTune.Checkpointing;
using SharpTune.Tests.Checkpointing;
using SharpTune.Tests.Distributed;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class ResumeAndAccumulationTests
{
    [Fact]
    [Trait("Category", "Slow")]
    public void Resume_AfterProcessKilledPastFirstCheckpoint_EndsBitIdenticalToUninterruptedRun()
    {
        using var tmp = new TempDir();
        string[] run(string name) =>
        [
            "--config", "tiny/teacher_full_single_device", $"output_dir={tmp.Path}/{name}",
            $"checkpointer.checkpoint_dir={tmp.Path}/init", "max_steps_per_epoch=40", "save_every_n_steps=4",
            "dataset.num_samples=192", "batch_size=4", "gradient_accumulation_steps=1", "threads=1", "metric_logger.tensorboard=false",
        ];

        // Given an uninterrupted run (its first step also creates the shared random init)
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device", run("straight")[2..]);

        // When the same run, as a child process of the built CLI, is killed after its first checkpoint appears
        var cli = FindCli();
        var killedDir = Path.Combine(tmp.Path, "killed");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])[cli, "run", "full_finetune_single_device", .. run("killed")]) psi.ArgumentList.Add(a);
        using (var child = Process.Start(psi)!)
        {
            child.OutputDataReceived += (_, _) => { };
            child.ErrorDataReceived += (_, _) => { };
            child.BeginOutputReadLine();
            child.BeginErrorReadLine();
            var watch = Stopwatch.StartNew();
            while (!RecipeStateStore.Exists(killedDir) && !child.HasExited && watch.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(20);
            Assert.False(child.HasExited, $"the child exited (code {(child.HasExited ? child.ExitCode : 0)}) before it could be killed");
            child.Kill(entireProcessTree: true);
            child.WaitForExit();
        }
        Assert.False(Directory.Exists(Path.Combine(killedDir, "epoch_0")), "the child finished before the kill: nothing to resume");

        // Then resuming finishes the run with exactly the weights of the uninterrupted one
        var reporter = RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device", [.. run("killed")[2..], "resume_from_checkpoint=true"]);
        Assert.Contains(reporter.Infos, i => i.StartsWith("resumed from", StringComparison.Ordinal));
        var expected = File.ReadAllBytes(Path.Combine(tmp.Path, "straight", "epoch_0", "model.safetensors"));
        var actual = File.ReadAllBytes(Path.Combine(killedDir, "epoch_0", "model.safetensors"));
        Assert.True(expected.AsSpan().SequenceEqual(actual), "resumed weights differ from the uninterrupted run");
        // and the metric log holds each step once (steps logged again after the resume point replace the old lines)
        var steps = RecipeRunner.Log(killedDir).Select(r => (long)r["step"]).ToList();
        Assert.Equal(Enumerable.Range(1, 40).Select(i => (long)i), steps);
        // and keep_last_n_checkpoints (2) pruned the step folders
        Assert.True(Directory.GetDirectories(killedDir, "step_*").Length <= 2);
    }

    [Fact]
    public void Kd_FourMicroBatchesOfOne_EqualOneBatchOfFour()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        string[] common =
        [
            $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}",
            "max_steps_per_epoch=2", "shuffle=false", "optimizer.lr=1e-2", "clip_grad_norm=null",
        ];
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            [$"output_dir={tmp.Path}/one", "batch_size=4", "gradient_accumulation_steps=1", .. common]);
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            [$"output_dir={tmp.Path}/four", "batch_size=1", "gradient_accumulation_steps=4", .. common]);

        // Then both took the same steps, up to the order of their float32 sums (the same bounds as for 2 ranks vs 1 process)
        var reference = Path.Combine(tmp.Path, "one", "epoch_0");
        SameRun.AssertWeights(reference, Path.Combine(tmp.Path, "four", "epoch_0"), Path.Combine(tmp.Path, "student_init"), steps: 2,
            "4 micro-batches of 1 vs 1 batch of 4", file: PeftAdapter.WeightsFileName, lr: 1e-2);
        var (parameters, maxAbs) = SameRun.Describe(reference, PeftAdapter.WeightsFileName);
        SameRun.AssertLog(RecipeRunner.Log(Path.Combine(tmp.Path, "one")), RecipeRunner.Log(Path.Combine(tmp.Path, "four")), ["loss", "grad_norm"],
            parameters, maxAbs, "4 micro-batches of 1 vs 1 batch of 4", lr: 1e-2);
    }

    private static string FindCli()
    {
        var root = Path.Combine(SharedData.RepoRoot, "src", "SharpTune.Cli", "bin");
        var dll = Directory.Exists(root)
            ? Directory.EnumerateFiles(root, "SharpTune.Cli.dll", SearchOption.AllDirectories)
                .Where(p => File.Exists(Path.ChangeExtension(p, ".runtimeconfig.json")))
                .OrderByDescending(File.GetLastWriteTimeUtc).FirstOrDefault()
            : null;
        return dll ?? throw new FileNotFoundException($"build the CLI first: no SharpTune.Cli.dll under {root}");
    }
}

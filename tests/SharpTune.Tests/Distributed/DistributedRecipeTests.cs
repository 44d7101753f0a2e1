// The distributed recipes end to end: `mpirun -np 2 sharptune run knowledge_distillation_distributed` on the tiny
// config (and lora_finetune_distributed on the tiny LoRA config) against the one-process recipe on the same global batches (the reference we compare to is the plain
// single-device run, in-process), resume of a 2-rank run on 1 process, rank-0-only writes, and a rank failing at
// setup ending the whole job with its error. Skipped with a clear message where mpirun is absent.
using SharpTune.Checkpointing;
using SharpTune.Tests.Recipes;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distributed;

[Collection(RecipeCollection.Name)]
public sealed class DistributedRecipeTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(240);

    private static string CliDll => Path.Combine(AppContext.BaseDirectory, "SharpTune.Cli.dll");

    // The tiny full-student KD run, made small: 4 optimizer steps per epoch of a global batch of 4, constant lr (a
    // schedule would depend on the total steps, which differ between the 1-epoch run and the 2-epoch reference).
    private static string[] KdOverrides(string dir, string name, string teacher, int epochs) =>
    [
        .. RecipeRunner.Fast, $"output_dir={dir}/{name}", $"checkpointer.checkpoint_dir={dir}/{name}_init",
        $"teacher_checkpointer.checkpoint_dir={teacher}", "max_steps_per_epoch=4", "lr_scheduler=null", $"epochs={epochs}",
    ];

    [MpiFact]
    public void KnowledgeDistillation_TwoRanksThenResumedOnOneProcess_EqualsOneProcessRun()
    {
        using var tmp = new Checkpointing.TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        // Given the one-process reference over 2 epochs (epoch_0 and epoch_1 are both kept)
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device", KdOverrides(tmp.Path, "reference", teacher, epochs: 2));

        // When 2 ranks run the first epoch
        var job = MpiLauncher.RunRaw(Generous, ["-np", "2", "dotnet", CliDll, "run", "knowledge_distillation_distributed", "--config", "tiny/kd_full_distributed",
            .. KdOverrides(tmp.Path, "dist", teacher, epochs: 1), "metric_logger.tensorboard=true"]);

        // Then its weights and logged global losses are the one-process run's (within float32 reordering bounds)
        Assert.True(job.ExitCode == 0, job.Output);
        var reference = Path.Combine(tmp.Path, "reference");
        var dist = Path.Combine(tmp.Path, "dist");
        var untrained = Path.Combine(tmp.Path, "dist_init");
        SameRun.AssertWeights(Path.Combine(reference, "epoch_0"), Path.Combine(dist, "epoch_0"), untrained, steps: 4, "2 ranks, epoch 0");
        var referenceLog = RecipeRunner.Log(reference);
        var distLog = RecipeRunner.Log(dist);
        Assert.Equal(4, distLog.Count); // one writer: two ranks appending would give 8 lines
        var (parameters, maxAbs) = SameRun.Describe(Path.Combine(reference, "epoch_1"));
        SameRun.AssertLog(referenceLog.Take(4).ToList(), distLog, ["loss", "class_loss", "kd_loss", "grad_norm"], parameters, maxAbs, "2 ranks");
        // and only rank 0 wrote: one TensorBoard event file (each logger creates its own), no temp files left
        Assert.Single(Directory.GetFiles(Path.Combine(dist, "logs", "tensorboard"), "*", SearchOption.AllDirectories));
        Assert.Empty(Directory.GetFiles(tmp.Path, "*.tmp*", SearchOption.AllDirectories));
        Assert.DoesNotContain("rank 1", job.Output);

        // When the 2-rank run is resumed on 1 process for the second epoch
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device",
            [.. KdOverrides(tmp.Path, "dist", teacher, epochs: 2), "resume_from_checkpoint=true"]);

        // Then it ends where the uninterrupted one-process run ended
        SameRun.AssertWeights(Path.Combine(reference, "epoch_1"), Path.Combine(dist, "epoch_1"), untrained, steps: 8, "resumed on 1 process, epoch 1");
        SameRun.AssertLog(referenceLog, RecipeRunner.Log(dist), ["loss", "class_loss", "kd_loss", "grad_norm"], parameters, maxAbs, "resumed on 1 process");
    }

    // The tiny on-policy run, made small, and deterministic where the ranks' sampler streams differ by design: every
    // micro-batch on-policy (lmbda 1) at top_k 1, so the completions are the student's greedy ones whatever the stream
    // and however the batch is split (greedy rows do not depend on the rest of the batch); 3 steps of a global batch of 4.
    private static string[] OnPolicyOverrides(string dir, string name, string teacher, int epochs) =>
    [
        .. RecipeRunner.Fast, $"output_dir={dir}/{name}", $"checkpointer.checkpoint_dir={dir}/{name}_init",
        $"teacher_checkpointer.checkpoint_dir={teacher}", "max_steps_per_epoch=3", "lr_scheduler=null", $"epochs={epochs}",
        "lmbda=1", "top_k=1", "max_new_tokens=16",
    ];

    [MpiFact]
    public void OnPolicyDistillation_TwoRanksThenResumedOnOneProcess_EqualsOneProcessRun()
    {
        using var tmp = new Checkpointing.TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        // Given the one-process reference over 2 epochs
        RecipeRunner.Run("on_policy_distillation_single_device", "tiny/on_policy_single_device", OnPolicyOverrides(tmp.Path, "reference", teacher, epochs: 2));

        // When 2 ranks run the first epoch, each sampling the completions of its half of every global batch
        var job = MpiLauncher.RunRaw(Generous, ["-np", "2", "dotnet", CliDll, "run", "on_policy_distillation_distributed", "--config", "tiny/on_policy_distributed",
            .. OnPolicyOverrides(tmp.Path, "dist", teacher, epochs: 1)]);

        // Then its weights and logged global figures are the one-process run's (the loss divided by the GLOBAL
        // completion tokens; within float32 reordering bounds), written by rank 0 alone
        Assert.True(job.ExitCode == 0, job.Output);
        var reference = Path.Combine(tmp.Path, "reference");
        var dist = Path.Combine(tmp.Path, "dist");
        var untrained = Path.Combine(tmp.Path, "dist_init");
        SameRun.AssertWeights(Path.Combine(reference, "epoch_0"), Path.Combine(dist, "epoch_0"), untrained, steps: 3, "2 ranks, epoch 0");
        var referenceLog = RecipeRunner.Log(reference);
        var distLog = RecipeRunner.Log(dist);
        Assert.Equal(3, distLog.Count);
        string[] keys = ["loss", "grad_norm", "completion_length", "on_policy_fraction", "teacher_nll_student_samples", "reverse_kl_student_samples"];
        var (parameters, maxAbs) = SameRun.Describe(Path.Combine(reference, "epoch_1"));
        SameRun.AssertLog(referenceLog.Take(3).ToList(), distLog, keys, parameters, maxAbs, "2 ranks");
        Assert.DoesNotContain("rank 1", job.Output);

        // When the 2-rank run is resumed on 1 process for the second epoch
        RecipeRunner.Run("on_policy_distillation_single_device", "tiny/on_policy_single_device",
            [.. OnPolicyOverrides(tmp.Path, "dist", teacher, epochs: 2), "resume_from_checkpoint=true"]);

        // Then it ends where the uninterrupted one-process run ended
        SameRun.AssertWeights(Path.Combine(reference, "epoch_1"), Path.Combine(dist, "epoch_1"), untrained, steps: 6, "resumed on 1 process, epoch 1");
        SameRun.AssertLog(referenceLog, RecipeRunner.Log(dist), keys, parameters, maxAbs, "resumed on 1 process");
    }

    [MpiFact]
    public void KnowledgeDistillation_OneRankFailsAtSetup_JobEndsPromptlyWithThatRanksError()
    {
        using var tmp = new Checkpointing.TempDir();
        RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        var elsewhere = Directory.CreateDirectory(Path.Combine(tmp.Path, "elsewhere")).FullName;
        // Both ranks run the same config (ranks with different configs are refused before this could happen); its
        // teacher folder is relative, and rank 1 starts in a folder without it: a node that lacks the teacher's files.
        string[] Rank(string workDir) =>
            ["-np", "1", "-wdir", workDir, "dotnet", CliDll, "run", "knowledge_distillation_distributed", "--config", "tiny/kd_full_distributed",
             .. KdOverrides(tmp.Path, "dist", Path.Combine("teacher", "epoch_0"), epochs: 1)];

        // Given rank 1 alone cannot find the teacher (MPMD launch: rank 0's args : rank 1's)
        var job = MpiLauncher.RunRaw(Generous, [.. Rank(tmp.Path), ":", .. Rank(elsewhere)]);

        // Then the job ends non-zero, soon, with rank 1's error, and rank 0 (blocked in a collective) did not hang
        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains("rank 1 of 2 failed: error: checkpoint folder not found: " + Path.Combine("teacher", "epoch_0"), job.Output);
        Assert.DoesNotContain("rank 0 of 2 failed", job.Output);
        Assert.True(job.Elapsed < TimeSpan.FromSeconds(60), $"the job took {job.Elapsed.TotalSeconds:F1} s to end:\n{job.Output}");
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "dist", "epoch_0")), "no checkpoint may be written by an aborted job");
    }

    [MpiFact]
    public void LoraFinetune_TwoRanks_EqualsOneProcessRun()
    {
        using var tmp = new Checkpointing.TempDir();
        var baseModel = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        string[] Overrides(string name) =>
            [.. RecipeRunner.Fast, $"output_dir={tmp.Path}/{name}", $"checkpointer.checkpoint_dir={baseModel}", "max_steps_per_epoch=4"];
        RecipeRunner.Run("lora_finetune_single_device", "tiny/lora_single_device", Overrides("reference"));

        var job = MpiLauncher.RunRaw(Generous, ["-np", "2", "dotnet", CliDll, "run", "lora_finetune_distributed", "--config", "tiny/lora_distributed", .. Overrides("dist")]);

        // Then the trained adapter and every logged figure are the one-process run's (within float32 reordering bounds)
        Assert.True(job.ExitCode == 0, job.Output);
        var reference = Path.Combine(tmp.Path, "reference", "epoch_0");
        SameRun.AssertWeights(reference, Path.Combine(tmp.Path, "dist", "epoch_0"), baseModel, steps: 4, "LoRA adapter", file: "adapter_model.safetensors");
        var (parameters, maxAbs) = SameRun.Describe(reference, "adapter_model.safetensors");
        SameRun.AssertLog(RecipeRunner.Log(Path.Combine(tmp.Path, "reference")), RecipeRunner.Log(Path.Combine(tmp.Path, "dist")), ["loss", "grad_norm"],
            parameters, maxAbs, "LoRA 2 ranks");
    }
}

// Optimizers and LR schedules as configured: the logged learning rate at every step equals the closed-form
// schedule times the base rate (torchtune's cosine-with-warmup, linear, constant), for AdamW and SGD; and a LoRA
// KD run stopped after a step checkpoint resumes to the same adapter bytes as an uninterrupted run.
using SharpTune.Checkpointing;
using SharpTune.Tests.Checkpointing;
using SharpTune.Training;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class ScheduleAndResumeTests
{
    [Theory]
    [InlineData("torch.optim.AdamW", "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup", "cosine")]
    [InlineData("torch.optim.SGD", "sharptune.training.lr_schedulers.get_linear_schedule_with_warmup", "linear")]
    [InlineData("torch.optim.AdamW", "sharptune.training.lr_schedulers.get_constant_schedule_with_warmup", "constant")]
    public void Full_ConfiguredSchedule_LoggedLrFollowsClosedForm(string optimizer, string scheduler, string kind)
    {
        using var tmp = new TempDir();
        const int steps = 12, warmup = 4;
        const double lr = 2e-3;
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            $"output_dir={tmp.Path}/run", $"checkpointer.checkpoint_dir={tmp.Path}/init", $"max_steps_per_epoch={steps}",
            $"optimizer={optimizer}", $"optimizer.lr={lr}", $"lr_scheduler={scheduler}", $"lr_scheduler.num_warmup_steps={warmup}");
        var log = RecipeRunner.Log(Path.Combine(tmp.Path, "run"));
        Assert.Equal(steps, log.Count);
        foreach (var row in log)
        {
            var s = (long)row["step"];
            var f = kind switch
            {
                "cosine" => LrSchedulers.CosineWithWarmup(s, warmup, steps),
                "linear" => LrSchedulers.LinearWithWarmup(s, warmup, steps),
                _ => s < warmup ? (double)s / warmup : 1.0,
            };
            Assert.Equal(lr * f, row["lr"], 9);
        }
    }

    [Fact]
    public void KdLora_StoppedAfterStepCheckpointThenResumed_SameAdapterAsUninterrupted()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        string[] args(string name) =>
        [
            $"output_dir={tmp.Path}/{name}", $"checkpointer.checkpoint_dir={tmp.Path}/student_init",
            $"teacher_checkpointer.checkpoint_dir={teacher}", "max_steps_per_epoch=6", "save_every_n_steps=2",
            "gradient_accumulation_steps=2", "batch_size=2",
        ];
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device", args("straight"));

        using var cancel = new CancellationTokenSource();
        var stopping = new RecordingReporter { OnInfo = m => { if (m.Contains("step_2", StringComparison.Ordinal)) cancel.Cancel(); } };
        Assert.ThrowsAny<OperationCanceledException>(() =>
            RecipeRunner.Run(stopping, cancel.Token, "knowledge_distillation_single_device", "tiny/kd_lora_single_device", args("stopped")));
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "stopped", "epoch_0")));

        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device", [.. args("stopped"), "resume_from_checkpoint=true"]);
        var expected = File.ReadAllBytes(Path.Combine(tmp.Path, "straight", "epoch_0", PeftAdapter.WeightsFileName));
        var actual = File.ReadAllBytes(Path.Combine(tmp.Path, "stopped", "epoch_0", PeftAdapter.WeightsFileName));
        Assert.True(expected.AsSpan().SequenceEqual(actual), "resumed adapter differs from the uninterrupted run");
    }
}

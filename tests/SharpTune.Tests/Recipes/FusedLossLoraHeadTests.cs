// A LoRA adapter on an untied output head trains through the fused-linear losses: the recipes once passed the frozen
// base weight to them, so the head's adapter got no gradient and stayed at its zero initialisation (lora_B = 0) while
// the run reported success.
using SharpTune.Checkpointing;
using SharpTune.Tests.Checkpointing;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class FusedLossLoraHeadTests
{
    private static readonly string[] LoraStudent =
    [
        "model._component_=sharptune.models.llama3.lora_llama3", "model.tie_embeddings=false", "model.lora_attn_modules=[q_proj]",
        "model.apply_lora_to_output=true", "model.lora_rank=4", "model.lora_alpha=8", "model.lora_dropout=0.0",
        "max_steps_per_epoch=3", "lr_scheduler=null", "optimizer.lr=1e-2",
    ];

    [Fact]
    public void Kd_FusedLossWithLoraOnUntiedHead_TrainsTheHeadAdapter()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        var run = Path.Combine(tmp.Path, "kd");
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device",
            [$"output_dir={run}", $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}", .. LoraStudent]);
        AssertHeadAdapterTrained(run);
    }

    [Fact]
    public void Lora_FusedLossWithLoraOnUntiedHead_TrainsTheHeadAdapter()
    {
        using var tmp = new TempDir();
        var run = Path.Combine(tmp.Path, "lora");
        RecipeRunner.Run("lora_finetune_single_device", "tiny/lora_single_device",
            [$"output_dir={run}", $"checkpointer.checkpoint_dir={tmp.Path}/base_init", "random_init_checkpoint=true",
             "loss._component_=sharptune.modules.loss.LinearCrossEntropyLoss", .. LoraStudent]);
        AssertHeadAdapterTrained(run);
    }

    private static void AssertHeadAdapterTrained(string run)
    {
        using var scope = NewDisposeScope();
        var (_, adapter) = PeftAdapter.Load(Path.Combine(run, "epoch_0"));
        var key = Assert.Single(adapter.Keys, k => k.Contains("lm_head", StringComparison.Ordinal) && k.Contains("lora_B", StringComparison.Ordinal));
        Assert.True(adapter[key].abs().max().item<float>() > 0, $"{key} is still zero: the fused loss bypassed the head's adapter");
    }
}

/// <summary>The fused KD loss computes the class and KD terms in one pass, so a setting given to one of them and not the
/// other used to be dropped without a word (kd_loss.kd_ratio, loss.chunk_size, loss.ignore_index).</summary>
[Collection(RecipeCollection.Name)]
public sealed class FusedKdLossSettingsTests
{
    [Theory]
    [InlineData("kd_loss.kd_ratio=0.9", "kd_loss.kd_ratio", "top-level kd_ratio 0.5")]
    [InlineData("loss.chunk_size=64", "loss.chunk_size", "kd_loss.chunk_size 0")]
    [InlineData("loss.ignore_index=-1", "loss.ignore_index", "kd_loss.ignore_index -100")]
    public void Kd_FusedLossSettingTheRecipeWouldIgnore_Refused(string setting, string key, string other)
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        var e = Assert.Throws<SharpTune.Config.ConfigException>(() => RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device",
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}",
            "max_steps_per_epoch=1", "kd_ratio=0.5", setting));
        Assert.Contains(key, e.Message);
        Assert.Contains(other, e.Message);
    }

    [Fact]
    public void Kd_FusedLossSameRatioInBothPlaces_Accepted()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device",
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}",
            "max_steps_per_epoch=1", "kd_ratio=0.25", "kd_loss.kd_ratio=0.25");
        foreach (var row in RecipeRunner.Log(Path.Combine(tmp.Path, "kd")))
            Assert.Equal(0.75 * row["class_loss"] + 0.25 * row["kd_loss"], row["loss"], 4);
    }
}

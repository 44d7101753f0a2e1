// The chunked/plain KD loss and the class loss must mask the same positions: both sums are divided by one count (the
// class loss's), so a KD ignore_index of its own was applied to the KD sum and then normalised by the wrong count.
// (The fused loss's settings are in FusedLossLoraHeadTests. kd_loss.missing_mass with a live teacher is not refused:
// the teacher's full distribution leaves no tail, so tail and zero compute the same loss.)
using SharpTune.Config;
using SharpTune.Tests.Checkpointing;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class KdLossSettingsTests
{
    [Fact]
    public void Kd_KdLossIgnoreIndexOtherThanTheClassLoss_RefusedNamingBoth()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        var e = Assert.Throws<ConfigException>(() => RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}",
            "max_steps_per_epoch=1", "kd_loss.ignore_index=-1"));
        Assert.Contains("kd_loss.ignore_index", e.Message);
        Assert.Contains("-1 differs from loss.ignore_index -100", e.Message);
    }
}

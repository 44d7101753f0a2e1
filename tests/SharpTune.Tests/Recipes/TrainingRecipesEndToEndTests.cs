// End to end on CPU: a tiny teacher trained from scratch, then distilled into a LoRA student (chunked CE + forward
// KL, the seed's overrides) and a fully trained student (fused-linear loss), and a LoRA fine-tune. Checks
// that the loss falls, that checkpoints load back strictly, that merged weights equal base + (alpha/r) B A computed
// here from the saved files, and that the logged total is (1 - kd_ratio) class + kd_ratio kd at every step.
using SharpTune.Checkpointing;
using SharpTune.Models.Llama3;
using SharpTune.Tests.Checkpointing;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class TrainingRecipesEndToEndTests
{
    [Fact]
    [Trait("Category", "Slow")]
    public void Recipes_TinyTeacherThenDistilAndLora_LossFallsCheckpointsLoadMergedIsBasePlusAdapter()
    {
        using var tmp = new TempDir();
        var dir = tmp.Path;

        // Given a tiny teacher trained from scratch
        var teacher = RecipeRunner.TrainTeacher(dir, steps: 40, "optimizer.lr=1e-2");
        var (first, last) = RecipeRunner.LossTrend(Path.Combine(dir, "teacher"));
        Assert.True(last < first * 0.8, $"teacher loss did not fall: first {first:F3}, last {last:F3}");
        using (var fresh = Llama3ComponentBuilders.Llama3(128, 2, 4, 2, 64, 176, 128))
            HfCheckpointer.LoadInto(fresh, teacher, strict: true); // loads back strictly
        Assert.True(File.Exists(Path.Combine(dir, "teacher", "sharptune_config.yaml")));
        Assert.True(File.Exists(Path.Combine(dir, "teacher", "loss_curves.png")));

        // When it is distilled into a LoRA student with the seed's overrides
        var kd = Path.Combine(dir, "kd_lora");
        var reporter = RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            $"output_dir={kd}", $"checkpointer.checkpoint_dir={dir}/student_init", "max_steps_per_epoch=30",
            "kd_ratio=0.25", "optimizer.lr=1e-2", $"teacher_checkpointer.checkpoint_dir={teacher}");

        // Then the overrides took effect, the loss falls, and every logged total is 0.75 class + 0.25 kd
        var saved = File.ReadAllText(Path.Combine(kd, "sharptune_config.yaml"));
        Assert.Contains("kd_ratio: 0.25", saved);
        Assert.Contains(teacher, saved);
        Assert.Contains(reporter.Infos, i => i.Contains($"teacher loaded from {teacher}", StringComparison.Ordinal));
        foreach (var row in RecipeRunner.Log(kd))
            Assert.Equal(0.75 * row["class_loss"] + 0.25 * row["kd_loss"], row["loss"], 4);
        var (kdFirst, kdLast) = RecipeRunner.LossTrend(kd);
        Assert.True(kdLast < kdFirst, $"KD loss did not fall: first {kdFirst:F3}, last {kdLast:F3}");
        AssertMergedIsBasePlusAdapter(Path.Combine(dir, "student_init"), Path.Combine(kd, "epoch_0"), scale: 16.0 / 8);

        // When it is distilled into a fully trained student with the fused-linear loss
        var full = Path.Combine(dir, "kd_full");
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device",
            $"output_dir={full}", $"checkpointer.checkpoint_dir={dir}/student_full_init", "max_steps_per_epoch=30",
            $"teacher_checkpointer.checkpoint_dir={teacher}", "optimizer.lr=1e-2");
        var (fFirst, fLast) = RecipeRunner.LossTrend(full);
        Assert.True(fLast < fFirst, $"fused KD loss did not fall: first {fFirst:F3}, last {fLast:F3}");
        var (kFirst, kLast) = RecipeRunner.LossTrend(full, key: "kd_loss");
        Assert.True(kLast < kFirst, $"KD term did not fall: first {kFirst:F3}, last {kLast:F3}");
        using (var fresh = Llama3ComponentBuilders.Llama3(128, 2, 4, 2, 32, 96, 128))
            HfCheckpointer.LoadInto(fresh, Path.Combine(full, "epoch_0"), strict: true);

        // When the teacher's untrained base is LoRA-fine-tuned (a trained base leaves too little to learn to see it)
        var lora = Path.Combine(dir, "lora");
        var untrained = Path.Combine(dir, "teacher_init");
        RecipeRunner.Run("lora_finetune_single_device", "tiny/lora_single_device",
            $"output_dir={lora}", $"checkpointer.checkpoint_dir={untrained}", "max_steps_per_epoch=30", "optimizer.lr=1e-2");
        var (lFirst, lLast) = RecipeRunner.LossTrend(lora);
        Assert.True(lLast < lFirst, $"LoRA loss did not fall: first {lFirst:F3}, last {lLast:F3}");
        AssertMergedIsBasePlusAdapter(untrained, Path.Combine(lora, "epoch_0"), scale: 16.0 / 8);
    }

    // merged W == W_base + scale * B A for every adapted module, from the files alone.
    private static void AssertMergedIsBasePlusAdapter(string baseFolder, string checkpoint, double scale)
    {
        using var scope = NewDisposeScope();
        using var merged = HfCheckpointer.Load(checkpoint);
        using var baseModel = HfCheckpointer.Load(baseFolder);
        var (config, adapter) = PeftAdapter.Load(checkpoint);
        Assert.Equal(scale, config.LoraAlpha / config.R, 9);
        var modules = adapter.Keys.Where(k => k.EndsWith(".lora_A.weight", StringComparison.Ordinal))
            .Select(k => k[..^".lora_A.weight".Length]).ToList();
        Assert.NotEmpty(modules);
        var changed = 0;
        foreach (var m in modules)
        {
            var a = adapter[m + ".lora_A.weight"].to(float64); // [r, in]
            var b = adapter[m + ".lora_B.weight"].to(float64); // [out, r]
            var expected = baseModel.StateDict[m + ".weight"].to(float64) + scale * b.matmul(a); // [out, in]
            var got = merged.StateDict[m + ".weight"].to(float64);
            var err = (got - expected).abs().max().item<double>();
            Assert.True(err < 1e-5, $"{m}: merged differs from base + adapter by {err}");
            if (b.abs().max().item<double>() > 0) changed++;
        }
        Assert.True(changed > 0, "no adapter was trained (every lora_B is still zero)");
        foreach (var (key, value) in merged.StateDict)
            if (!modules.Any(m => key == m + ".weight"))
                Assert.True((value - baseModel.StateDict[key]).abs().max().item<float>() == 0, $"{key} is not adapted but differs from the base");
        foreach (var t in adapter.Values) t.Dispose();
    }
}

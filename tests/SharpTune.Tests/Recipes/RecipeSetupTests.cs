// Setup-time behaviour of the training recipes: teacher/student compatibility (a padded teacher vocabulary is cut,
// a smaller one is a clear error), device and dtype handling, activation checkpointing changing memory but not
// results, and the seed's overrides on the shipped Llama config.
using SharpTune.Config;
using SharpTune.Recipes;
using SharpTune.Recipes.Support;
using SharpTune.Tests.Checkpointing;
using SharpTune.Tests.Cli;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class RecipeSetupTests
{
    [Fact]
    public void Kd_TeacherVocabPaddedBeyondTokenizer_TruncatesAndTrains()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        // student vocab 99 = the char tokenizer's ids; the teacher's 128 are padding beyond them
        var reporter = RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student99", "model.vocab_size=99",
            $"teacher_checkpointer.checkpoint_dir={teacher}", "max_steps_per_epoch=1");
        // the teacher folder has no tokenizer files, so the run warns that the cut ids are not established padding
        Assert.Contains(reporter.Warnings, w => w.Contains("teacher vocabulary 128 is padded beyond the student's 99", StringComparison.Ordinal)
                                                && w.Contains("no tokenizer files", StringComparison.Ordinal));
        Assert.DoesNotContain(reporter.Infos.Concat(reporter.Warnings), m => m.Contains("not real tokens", StringComparison.Ordinal));
        Assert.True(double.IsFinite(RecipeRunner.Log(Path.Combine(tmp.Path, "kd"))[0]["kd_loss"]));
    }

    [Fact]
    public void Kd_TeacherVocabSmallerThanStudent_FailsNamingBothSizes()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 1, "model.vocab_size=100");
        var e = Assert.Throws<ConfigException>(() => RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student", "teacher_model.vocab_size=100",
            $"teacher_checkpointer.checkpoint_dir={teacher}", "max_steps_per_epoch=1"));
        Assert.Contains("teacher vocabulary 100 vs student vocabulary 128", e.Message);
    }

    [Fact]
    public void Kd_TeacherConfigMismatchesItsCheckpoint_FailsStrictLoad()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        var e = Assert.Throws<SharpTune.Checkpointing.CheckpointFormatException>(() => RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student", "teacher_model.embed_dim=32",
            $"teacher_checkpointer.checkpoint_dir={teacher}", "max_steps_per_epoch=1"));
        Assert.Contains(teacher, e.Message);
    }

    [Fact]
    public void Full_ActivationCheckpointing_SameWeightsAsWithout()
    {
        using var tmp = new TempDir();
        string[] common = [$"checkpointer.checkpoint_dir={tmp.Path}/init", "max_steps_per_epoch=3", "shuffle=false"];
        var before = SharpTune.Modules.ActivationCheckpointing.RecomputationsOnThisThread;
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device", [$"output_dir={tmp.Path}/plain", .. common]);
        Assert.Equal(before, SharpTune.Modules.ActivationCheckpointing.RecomputationsOnThisThread); // nothing recomputed without the flag
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            [$"output_dir={tmp.Path}/ac", "enable_activation_checkpointing=true", .. common]);
        // the flag took effect: each of the 2 layers was recomputed in each of the 3 steps' backward
        Assert.True(SharpTune.Modules.ActivationCheckpointing.RecomputationsOnThisThread - before >= 2 * 3, "activation checkpointing recomputed nothing");
        using var a = SharpTune.Checkpointing.HfCheckpointer.Load(Path.Combine(tmp.Path, "plain", "epoch_0"));
        using var b = SharpTune.Checkpointing.HfCheckpointer.Load(Path.Combine(tmp.Path, "ac", "epoch_0"));
        foreach (var (key, value) in a.StateDict)
        {
            var err = (value - b.StateDict[key]).abs().max().item<float>();
            Assert.True(err < 1e-5, $"{key}: activation checkpointing changed the result by {err}");
        }
    }

    [Fact]
    public void Full_Bf16OnCpu_WarnsWhenNotNativeAndTrains()
    {
        using var tmp = new TempDir();
        var reporter = RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            $"output_dir={tmp.Path}/bf16", $"checkpointer.checkpoint_dir={tmp.Path}/init", "max_steps_per_epoch=1", "dtype=bf16");
        // Native bf16 read from the kernel's CPU flags, not from the code under test
        var flags = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal) || l.StartsWith("Features", StringComparison.Ordinal)) ?? "" : "";
        var native = flags.Split(' ', '\t').Any(f => f is "avx512_bf16" or "amx_bf16" or "bf16"); // x86 flags, Arm features
        Assert.Equal(!native, reporter.Warnings.Any(w => w.Contains("bf16", StringComparison.Ordinal)));
        var config = File.ReadAllText(Path.Combine(tmp.Path, "bf16", "epoch_0", "config.json"));
        Assert.Contains("\"torch_dtype\": \"bfloat16\"", config);
    }

    [Fact]
    public void ResolveDevice_CudaWithoutNatives_ExplainsHowToGetThem()
    {
        SharpTune.Native.TorchRuntime.EnsureLoaded();
        if (cuda.is_available()) return; // a CUDA build has nothing to explain
        var e = Assert.Throws<NotSupportedException>(() => RecipeRuntime.ResolveDevice("cuda")); // a user error: one line, no "please report"
        Assert.Contains("libtorch-cuda", e.Message);
        Assert.Throws<ArgumentException>(() => RecipeRuntime.ResolveDevice("tpu"));
    }

    [Fact]
    public void LoraRun_OneStep_LogsLabelAndProcessedTokenRatesAndStepSeconds()
    {
        // Given one optimizer step of 2 micro-batches of 4 unshuffled samples (prompt not trained on)
        using var tmp = new TempDir();
        RecipeRunner.Run("lora_finetune_single_device", "tiny/lora_single_device", $"output_dir={tmp.Path}/run",
            $"checkpointer.checkpoint_dir={tmp.Path}/init", "random_init_checkpoint=true", "max_steps_per_epoch=1",
            "gradient_accumulation_steps=2", "shuffle=false", "lr_scheduler=null");

        // Then rate x seconds gives the step's tokens, counted here from the same samples: labels that are trained
        // on, and every padded position the model ran on
        var dataset = SharpTune.Data.Synthetic.SyntheticInstructDataset.Create(SharpTune.Data.Synthetic.CharTokenizer.Create(96), numSamples: 96, seed: 0);
        long labels = 0, processed = 0;
        foreach (var batch in new[] { 0, 4 }.Select(start => Enumerable.Range(start, 4).Select(i => dataset[i]).ToList()))
        {
            labels += batch.Sum(x => x.Labels.Count(l => l != SharpTune.Data.Sample.IgnoreIndex));
            processed += 4L * batch.Max(x => x.Tokens.Length);
        }
        var row = Assert.Single(RecipeRunner.Log(Path.Combine(tmp.Path, "run")));
        var seconds = row["step_seconds"];
        Assert.True(seconds > 0, $"step_seconds {seconds}");
        // the rates were divided by these seconds in double precision: the products round back to the counts
        Assert.Equal(labels, Math.Round(row["tokens_per_second"] * seconds));
        Assert.Equal(processed, Math.Round(row["processed_tokens_per_second"] * seconds));
        Assert.True(processed > labels, $"processed {processed} vs label tokens {labels}");
    }

    [Fact]
    public void ResolveDtypeAndDevice_Auto_FollowTheMeasuredProbeOnTheCpu()
    {
        SharpTune.Native.TorchRuntime.EnsureLoaded();
        Assert.Equal(cuda.is_available() ? TorchSharp.DeviceType.CUDA : TorchSharp.DeviceType.CPU, RecipeRuntime.ResolveDevice("auto").type);
        var reporter = new RecordingReporter();
        var dtype = RecipeRuntime.ResolveDtype("auto", CPU, reporter);
        var probe = SharpTune.Training.Precision.ProbeCpu();
        Assert.Equal(probe.Choice, dtype);
        Assert.Contains(probe.ToString(), reporter.Infos);
        if (!SharpTune.Training.Precision.CpuHasNativeBf16()) Assert.Equal(ScalarType.Float32, dtype);
        Assert.Empty(reporter.Warnings);
    }

    [Theory]
    [InlineData("llama3_2/8B_to_1B_KD_lora_single_device")]
    [InlineData("qwen2/1.5_to_0.5B_KD_lora_single_device")]
    public void Validate_SeedOverrides_Accepted(string config)
    {
        var result = CliHarness.Run("validate", config, "kd_ratio=0.25", "optimizer.lr=1e-3", "teacher_checkpointer.checkpoint_dir=/data/teacher/epoch_0");
        Assert.True(result.ExitCode == 0, result.Err);
    }

    [Fact]
    public void Validate_EveryShippedTrainingConfig_NamesATrainingRecipe()
    {
        var training = new[] { "lora_finetune_single_device", "full_finetune_single_device", "knowledge_distillation_single_device" };
        var configs = ConfigCatalog.CreateDefault().All().Where(c => c.Recipe is not null && training.Contains(c.Recipe)).ToList();
        Assert.True(configs.Count >= 11, $"only {configs.Count} training configs shipped");
        foreach (var c in configs)
        {
            var result = CliHarness.Run("validate", c.Name);
            Assert.True(result.ExitCode == 0, $"{c.Name}: {result.Err}");
        }
    }
}

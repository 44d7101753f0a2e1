// The KD recipe with `teacher: {cache: <dir>}`: with k = vocab the cached run's logged losses follow the online-teacher
// run's within the cache's quantisation tolerance (same student init, data order and seed), and a cache made for other
// data is refused before training.
using SharpTune.Checkpointing;
using SharpTune.Tests.Checkpointing;
using SharpTune.Tests.Cli;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class CachedTeacherKdTests
{
    // A teacher_logits config with the tiny KD configs' tokenizer, dataset (RecipeRunner.Fast's 96 samples) and teacher.
    private static string TeacherLogitsConfig(string dir, string teacher, int numSamples = 96)
    {
        var path = Path.Combine(dir, $"teacher_logits_{numSamples}.yaml");
        File.WriteAllText(path, $"""
            # recipe: teacher_logits
            output_dir: {dir}/cache_{numSamples}
            tokenizer:
              _component_: sharptune.data.synthetic.char_tokenizer
              max_seq_len: 96
            dataset:
              _component_: sharptune.datasets.synthetic_instruct_dataset
              num_samples: {numSamples}
              seed: 0
            teacher_model:
              _component_: sharptune.models.llama3.llama3
              vocab_size: 128
              num_layers: 2
              num_heads: 4
              num_kv_heads: 2
              embed_dim: 64
              intermediate_dim: 176
              max_seq_len: 128
              tie_embeddings: false
            teacher_checkpointer:
              _component_: sharptune.checkpointing.full_model_hf_checkpointer
              checkpoint_dir: {teacher}
              output_dir: {dir}/unused
            k: 128
            log_prob_step: 0.0009765625
            max_log_ratio: 60
            max_bytes_per_token: 4096
            samples_per_shard: 32
            threads: 1
            """);
        return path;
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Kd_TeacherCacheWithKEqualsVocab_FollowsOnlineTeacherRun()
    {
        using var tmp = new TempDir();
        var dir = tmp.Path;
        // Given a tiny teacher and its cache over the KD dataset (k = vocab = 128, step 1/1024 nat)
        var teacher = RecipeRunner.TrainTeacher(dir, steps: 4);
        var gen = CliHarness.Run("run", "teacher_logits", "--config", TeacherLogitsConfig(dir, teacher));
        Assert.True(gen.ExitCode == 0, gen.Err + gen.Out);

        // When the same KD run is made with the online teacher and with the cache
        string[] common = [$"checkpointer.checkpoint_dir={dir}/student_init", "random_init_checkpoint=true", "max_steps_per_epoch=6", "seed=7",
            "kd_loss.missing_mass=tail"];
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            [.. common, $"output_dir={dir}/online", $"teacher_checkpointer.checkpoint_dir={teacher}"]);
        var cached = RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            [.. common, $"output_dir={dir}/cached", "teacher_model=null", "teacher_checkpointer=null", $"teacher.cache={dir}/cache_96"]);

        // Then every step's class and KD losses agree to the quantisation tolerance (relative p error <= 0.05%)
        Assert.Contains(cached.Infos, i => i.Contains($"teacher cache {dir}/cache_96", StringComparison.Ordinal));
        var online = RecipeRunner.Log($"{dir}/online");
        var offline = RecipeRunner.Log($"{dir}/cached");
        Assert.Equal(6, offline.Count);
        Assert.Equal(online.Count, offline.Count);
        for (var i = 0; i < online.Count; i++)
        {
            Assert.Equal(online[i]["kd_loss"], offline[i]["kd_loss"], 0.002 * Math.Max(1, online[i]["kd_loss"]));
            Assert.Equal(online[i]["class_loss"], offline[i]["class_loss"], 0.002 * Math.Max(1, online[i]["class_loss"]));
        }
        Assert.True(online[0]["kd_loss"] > 0.01, "the teacher and student agree already: the test would not see a wrong teacher");

        // And a cache made from other data (64 samples instead of 96) is refused, naming the hashes
        var other = CliHarness.Run("run", "teacher_logits", "--config", TeacherLogitsConfig(dir, teacher, numSamples: 64));
        Assert.True(other.ExitCode == 0, other.Err + other.Out);
        var e = Assert.Throws<InvalidDataException>(() => RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_lora_single_device",
            [.. common, $"output_dir={dir}/mismatch", "teacher_model=null", "teacher_checkpointer=null", $"teacher.cache={dir}/cache_64"]));
        Assert.Contains("data hash", e.Message);
    }
}

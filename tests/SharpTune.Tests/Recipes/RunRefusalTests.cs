// Runs that must be refused, end to end on the tiny configs: a teacher with another tokenizer (stories260K's tok512
// against the character tokenizer), a second run in a locked output folder (also when the lock is held by another
// process, and free again once that process is killed), a resume whose config changes the data order or the model
// (sharptune_config.yaml left as it was) against one that changes only the learning rate and epochs (a warning), and
// output_dir / threads values that cannot work.
using System.Diagnostics;
using SharpTune.Config;
using SharpTune.Recipes.Support;
using SharpTune.Tests.Checkpointing;
using SharpTune.Tests.Cli;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class RunRefusalTests(Stories260KFolder stories) : IClassFixture<Stories260KFolder>
{
    // stories260K's architecture (its config.json), so that without the tokenizer check the teacher loads and the run trains.
    private static readonly string[] Stories260KTeacher =
    [
        "teacher_model.vocab_size=512", "teacher_model.num_layers=5", "teacher_model.num_heads=8", "teacher_model.num_kv_heads=4",
        "teacher_model.embed_dim=64", "teacher_model.intermediate_dim=172", "teacher_model.max_seq_len=512",
        "teacher_model.tie_embeddings=true", "teacher_model.rope_base=10000",
    ];

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void Kd_TeacherWithAnotherTokenizer_RefusedNamingBothTokenizersAndCrossTokenizerDistillation()
    {
        using var tmp = new TempDir();
        // Given the stories260K teacher (512-piece SentencePiece, tokenizer.model in its folder) and the 99-symbol
        // character tokenizer of a 128-logit student: the teacher's ids 128..511 are real tokens of another vocabulary
        var e = Assert.Throws<ConfigException>(() => RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device",
            [$"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student", $"teacher_checkpointer.checkpoint_dir={stories.Path}",
             "max_steps_per_epoch=1", .. Stories260KTeacher]));

        Assert.Contains(Path.Combine(stories.Path, "tokenizer.model"), e.Message);
        Assert.Contains("SentencePiece", e.Message);
        Assert.Contains("sharptune.data.synthetic.char_tokenizer", e.Message);
        Assert.Contains("512 ids vs 99", e.Message);
        Assert.Contains("cross-tokenizer distillation", e.Message);
        Assert.Contains("sharptune.modules.loss.GoldLoss", e.Message); // says how to distil across tokenizers
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "kd", "epoch_0")));
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void TeacherTokenizer_FolderWithTheRunsTokenizer_PassesAndAnotherFails()
    {
        using var tmp = new TempDir();
        var config = SharpTuneConfig.FromYaml($"tokenizer: {{path: {SharedData.PathOf(Stories260KFolder.Tok)}}}\nteacher_checkpointer: x\n");
        var run = SharpTune.Tokenizers.TokenizerLoader.Load(SharedData.PathOf(Stories260KFolder.Tok));

        // the converted stories260K folder carries a copy of tok512.model: the same tokenizer
        Assert.Equal(Path.Combine(stories.Path, "tokenizer.model"), TeacherTokenizer.Check(config, run, stories.Path, "teacher_checkpointer"));
        // a folder without tokenizer files cannot be checked
        Assert.Null(TeacherTokenizer.Check(config, run, tmp.Path, "teacher_checkpointer"));
        // Llama 2's tokenizer.model: same family, same special ids, other pieces
        if (!SharedData.Has("tokenizers/llama2/tokenizer.model")) return;
        var llama2 = Path.Combine(tmp.Path, "llama2");
        Directory.CreateDirectory(llama2);
        File.Copy(SharedData.PathOf("tokenizers/llama2/tokenizer.model"), Path.Combine(llama2, "tokenizer.model"));
        var e = Assert.Throws<ConfigException>(() => TeacherTokenizer.Check(config, run, llama2, "teacher_checkpointer"));
        Assert.Contains("32000 ids vs 512", e.Message);
        Assert.Contains(SharedData.PathOf(Stories260KFolder.Tok), e.Message);
    }

    [Fact]
    public void Run_OutputDirLockedByAnotherRun_RefusedNamingTheHoldersPid()
    {
        using var tmp = new TempDir();
        var dir = Path.Combine(tmp.Path, "run");
        var config = SharpTuneConfig.FromYaml($"output_dir: {dir}\n");
        using (RunFolder.Open(config, SharpTune.Distributed.DistributedContext.CurrentOrLocal))
        {
            var e = Assert.Throws<IOException>(() => RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
                $"output_dir={dir}", "max_steps_per_epoch=1"));
            Assert.Contains($"process {Environment.ProcessId}", e.Message);
            Assert.Contains(dir, e.Message);
            Assert.False(Directory.Exists(Path.Combine(dir, "epoch_0")));
        }
        // released: the same folder is usable again
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device", $"output_dir={dir}", "max_steps_per_epoch=1");
        Assert.True(Directory.Exists(Path.Combine(dir, "epoch_0")));
        Assert.False(File.Exists(Path.Combine(dir, RunFolder.OwnerFileName)));
    }

    [Fact]
    public void Run_OutputDirLockedByAnotherProcess_RefusedUntilThatProcessIsKilled()
    {
        var flock = new[] { "/usr/bin/flock", "/bin/flock" }.FirstOrDefault(File.Exists);
        if (flock is null) return; // util-linux's flock(1) holds the same flock(2) lock from another process
        using var tmp = new TempDir();
        var dir = Path.Combine(tmp.Path, "run");
        Directory.CreateDirectory(dir);
        var lockFile = Path.Combine(dir, RunFolder.LockFileName);
        var ready = Path.Combine(tmp.Path, "held");
        // -o: the lock stays with flock(1) alone; without it the child inherits the locked descriptor and can outlive
        // the kill below for a moment, so the second run found the folder still locked (seen as a rare failure).
        using var holder = Process.Start(new ProcessStartInfo(flock) { ArgumentList = { "-o", lockFile, "sh", "-c", $"touch '{ready}'; exec sleep 120" } })!;
        var clock = Stopwatch.StartNew();
        while (!File.Exists(ready) && clock.Elapsed < TimeSpan.FromSeconds(30)) Thread.Sleep(20);
        Assert.True(File.Exists(ready), "flock(1) did not take the lock");

        Assert.Throws<IOException>(() => RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            $"output_dir={dir}", "max_steps_per_epoch=1"));

        holder.Kill(entireProcessTree: true); // SIGKILL: the OS drops the lock
        holder.WaitForExit();
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device", $"output_dir={dir}", "max_steps_per_epoch=1");
        Assert.True(Directory.Exists(Path.Combine(dir, "epoch_0")));
    }

    [Fact]
    public void Resume_WithChangedBatchSizeAndLr_RefusedListingBatchSize_ConfigFileKept_ThenLrOnlyWarns()
    {
        using var tmp = new TempDir();
        string[] common = [$"output_dir={tmp.Path}/run", "max_steps_per_epoch=2", "lr_scheduler=null"];
        RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device", [.. common, "epochs=1"]);
        var configFile = Path.Combine(tmp.Path, "run", RunFolder.ConfigFileName);
        var saved = File.ReadAllText(configFile);

        // When resumed with another batch size (and lr)
        var e = Assert.Throws<ConfigException>(() => RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            [.. common, "epochs=2", "resume_from_checkpoint=true", "batch_size=2", "optimizer.lr=1e-2"]));

        // Then it is refused, listing the refused key old -> new and the allowed ones, and the saved config is untouched
        Assert.Contains("batch_size: 4 -> 2", e.Message);
        Assert.Contains("optimizer.lr: 3e-3 -> 1e-2", e.Message);
        Assert.Equal(saved, File.ReadAllText(configFile));
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "run", "epoch_1")));

        // When resumed with only the learning rate and the epochs changed, it continues and warns with both
        var reporter = RecipeRunner.Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            [.. common, "epochs=2", "resume_from_checkpoint=true", "optimizer.lr=1e-2"]);
        Assert.Contains(reporter.Warnings, w => w.Contains("epochs: 1 -> 2", StringComparison.Ordinal) && w.Contains("optimizer.lr: 3e-3 -> 1e-2", StringComparison.Ordinal));
        Assert.True(Directory.Exists(Path.Combine(tmp.Path, "run", "epoch_1")));
        Assert.Contains("lr: 1e-2", File.ReadAllText(configFile));
    }

    [Fact]
    public void Resume_WithChangedLoraRank_RefusedBeforeTheShapesFailToLoad()
    {
        using var tmp = new TempDir();
        var baseModel = RecipeRunner.TrainTeacher(tmp.Path, steps: 1);
        string[] common = [$"output_dir={tmp.Path}/lora", $"checkpointer.checkpoint_dir={baseModel}", "max_steps_per_epoch=1"];
        RecipeRunner.Run("lora_finetune_single_device", "tiny/lora_single_device", [.. common, "epochs=1"]);

        var e = Assert.Throws<ConfigException>(() => RecipeRunner.Run("lora_finetune_single_device", "tiny/lora_single_device",
            [.. common, "epochs=2", "resume_from_checkpoint=true", "model.lora_rank=16"]));

        Assert.Contains("model.lora_rank: 8 -> 16", e.Message); // tiny/lora_single_device trains rank 8
    }

    [Theory]
    [InlineData("output_dir=", "output_dir")]
    [InlineData("threads=0", "threads: must be at least 1, got 0")]
    [InlineData("threads=-2", "threads: must be at least 1, got -2")]
    public void Run_UnusableValue_RefusedAtValidationNamingTheKey(string value, string expected)
    {
        var r = CliHarness.Run("validate", "tiny/teacher_full_single_device", "--recipe", "full_finetune_single_device", value);

        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(expected, r.Err + r.Out);
    }

    [Fact]
    public void Run_OutputDirUnderARegularFile_RefusedNamingThePath()
    {
        using var tmp = new TempDir();
        var file = Path.Combine(tmp.Path, "notes.txt");
        File.WriteAllText(file, "x");

        var r = CliHarness.Run("run", "full_finetune_single_device", "--config", "tiny/teacher_full_single_device",
            $"output_dir={file}/run", "max_steps_per_epoch=1", "threads=1");

        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"output_dir: '{file}/run' cannot be created: '{file}' is a regular file, not a folder", r.Err);
    }
}

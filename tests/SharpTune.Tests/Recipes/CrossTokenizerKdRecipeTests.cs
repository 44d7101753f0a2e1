// The KD recipe with a teacher that keeps its own tokenizer (tiny/kd_cross_tokenizer_single_device: a char-level
// teacher, a byte-level student): it trains end to end with GOLD, ULD and the byte-marginal loss; one tokenizer on both sides through the
// cross-tokenizer path gives the same losses as the same-vocabulary path; a foreign teacher tokenizer without a
// cross-tokenizer loss is refused; a stopped run resumes to the uninterrupted run's weights; and with the real
// stories260K teacher (512-piece SentencePiece) a byte-level student distils from real text.
using SharpTune.Config;
using SharpTune.Tests.Checkpointing;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class CrossTokenizerKdRecipeTests(Stories260KFolder stories) : IClassFixture<Stories260KFolder>
{
    private const string Recipe = "knowledge_distillation_single_device";
    private const string Config = "tiny/kd_cross_tokenizer_single_device";
    private static readonly string[] Uld = ["kd_loss._component_=sharptune.modules.loss.UldLoss", "~kd_loss.divergence", "~kd_loss.uld_top_k"];
    private static readonly string[] ByteMarginal = ["kd_loss._component_=sharptune.modules.loss.ByteMarginalKdLoss", "~kd_loss.uld_top_k"];

    [Theory]
    [InlineData("gold")]
    [InlineData("uld")]
    [InlineData("byte_marginal")]
    public void Kd_ByteStudentCharTeacher_TrainsAndLowersTheKdLoss(string loss)
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 24);

        var reporter = RecipeRunner.Run(Recipe, Config,
        [
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}",
            "dataset.num_samples=160", "max_steps_per_epoch=40", .. loss switch { "uld" => Uld, "byte_marginal" => ByteMarginal, _ => [] },
        ]);

        var name = loss switch { "uld" => "ULD", "byte_marginal" => "byte-marginal ForwardKl", _ => "GOLD" };
        Assert.Contains(reporter.Infos, i => i.StartsWith("cross-tokenizer distillation: " + name, StringComparison.Ordinal));
        // every trained byte of the ASCII task lies in a span (each character is one teacher token and one byte); the
        // byte-marginal loss trains every one of them except the rows that predict the EOS (one per sample: the 160
        // samples are read once, in the config's one epoch)
        var coverage = Assert.Single(reporter.Infos, i => i.StartsWith("cross-tokenizer KD:", StringComparison.Ordinal));
        var counts = System.Text.RegularExpressions.Regex.Match(coverage, @"([\d,]+) of ([\d,]+) trained");
        var (aligned, trained) = (int.Parse(counts.Groups[1].Value.Replace(",", ""), System.Globalization.CultureInfo.InvariantCulture),
            int.Parse(counts.Groups[2].Value.Replace(",", ""), System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(trained - (loss == "byte_marginal" ? 160 : 0), aligned);
        Assert.True(File.Exists(Path.Combine(tmp.Path, "kd", "epoch_0", "model.safetensors")));
        var log = RecipeRunner.Log(Path.Combine(tmp.Path, "kd"));
        Assert.Equal(40, log.Count);
        Assert.All(log, r => Assert.True(double.IsFinite(r["kd_loss"]) && r["kd_loss"] >= 0));
        var (first, last) = RecipeRunner.LossTrend(Path.Combine(tmp.Path, "kd"), 5, "kd_loss");
        Assert.True(last < first, $"kd_loss did not fall: first 5 steps {first}, last 5 {last}");
    }

    [Fact]
    public void Kd_SameTokenizerThroughCrossTokenizerPath_EqualsSameVocabularyKd()
    {
        using var tmp = new TempDir();
        // A teacher and a student whose vocabulary is exactly the char tokenizer's 99 ids (no padding logits to cut).
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, 8, "model.vocab_size=99");
        string[] common =
        [
            $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}",
            "tokenizer._component_=sharptune.data.synthetic.char_tokenizer", "model.vocab_size=99", "teacher_model.vocab_size=99",
            "max_steps_per_epoch=1", "kd_loss.temperature=2.0",
        ];
        // Given the same-vocabulary KD (forward KL at T = 2, whole logits) and GOLD with the char tokenizer on both sides
        var same = RecipeRunner.Run(Recipe, Config,
            [.. common, $"output_dir={tmp.Path}/same", "~teacher_tokenizer", "kd_loss._component_=sharptune.losses.KdLoss",
             "~kd_loss.uld_top_k", "kd_loss.num_output_chunks=1"]);
        var cross = RecipeRunner.Run(Recipe, Config,
            [.. common, $"output_dir={tmp.Path}/cross", "teacher_tokenizer._component_=sharptune.data.synthetic.char_tokenizer"]);

        // Then the first step (same initial weights, same batch) logs the same class loss bit for bit and the same KD
        // loss up to the order of its sum: both compute each token's divergence with the same fp32 operations on the
        // same rows; one sums the n per-token values in one reduction, the other span chunk by chunk and sequence by
        // sequence. Two orders of a sum of n terms differ by at most 2 gamma(n - 1) sum|x_i| (FloatBounds), and forward KL
        // terms are non-negative, so sum|x_i| is the sum; n is at most batch_size 4 x 256 positions; the two fp32 sums
        // are rounded to the logged value once more each (2 u).
        var a = same.Metrics[0].Values;
        var b = cross.Metrics[0].Values;
        Assert.Contains(cross.Infos, i => i.Contains("on 99 shared ids (weight 1)", StringComparison.Ordinal));
        Assert.Equal(a["class_loss"], b["class_loss"]);
        var bound = (2 * FloatBounds.Gamma(4 * 256 - 1) + 2 * FloatBounds.U) * a["kd_loss"];
        Assert.True(Math.Abs(a["kd_loss"] - b["kd_loss"]) <= bound, $"kd_loss {a["kd_loss"]} vs {b["kd_loss"]}, bound {bound}");
        Assert.True(a["kd_loss"] > 0.01, "the comparison needs a teacher that differs from the student");
    }

    [Fact]
    public void Kd_ForeignTeacherTokenizerWithoutCrossTokenizerLoss_RefusedNamingTheLosses()
    {
        using var tmp = new TempDir();
        // Given a byte-level student, a char-level teacher_tokenizer and an ordinary (same-vocabulary) KD loss
        var e = Assert.Throws<ConfigException>(() => RecipeRunner.Run(Recipe, Config,
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student_init",
            $"teacher_checkpointer.checkpoint_dir={tmp.Path}/teacher", "kd_loss._component_=sharptune.losses.KdLoss", "~kd_loss.uld_top_k", "kd_loss.num_output_chunks=1"));
        Assert.Equal("teacher_tokenizer", Assert.Single(e.Problems).Path);
        Assert.Contains("259 ids vs 99", e.Message.Replace("99 ids vs 259", "259 ids vs 99", StringComparison.Ordinal));
        Assert.Contains("sharptune.modules.loss.UldLoss", e.Message);
        Assert.Contains("sharptune.modules.loss.GoldLoss", e.Message);
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "kd", "epoch_0")));

        // and a cross-tokenizer loss without a teacher_tokenizer is refused too
        var e2 = Assert.Throws<ConfigException>(() => RecipeRunner.Run(Recipe, Config,
            $"output_dir={tmp.Path}/kd2", $"checkpointer.checkpoint_dir={tmp.Path}/student_init",
            $"teacher_checkpointer.checkpoint_dir={tmp.Path}/teacher", "~teacher_tokenizer"));
        Assert.Equal("kd_loss", Assert.Single(e2.Problems).Path);
        Assert.Contains("set teacher_tokenizer", e2.Message);
    }

    [Fact]
    public void Kd_CrossTokenizerStoppedAfterStepCheckpointThenResumed_SameWeightsAsUninterrupted()
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        string[] args(string name) =>
        [
            $"output_dir={tmp.Path}/{name}", $"checkpointer.checkpoint_dir={tmp.Path}/student_init",
            $"teacher_checkpointer.checkpoint_dir={teacher}", "max_steps_per_epoch=6", "save_every_n_steps=2",
            "gradient_accumulation_steps=2", "batch_size=2",
        ];
        RecipeRunner.Run(Recipe, Config, args("straight"));

        using var cancel = new CancellationTokenSource();
        var stopping = new RecordingReporter { OnInfo = m => { if (m.Contains("step_2", StringComparison.Ordinal)) cancel.Cancel(); } };
        Assert.ThrowsAny<OperationCanceledException>(() => RecipeRunner.Run(stopping, cancel.Token, Recipe, Config, args("stopped")));
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "stopped", "epoch_0")));

        var resumed = RecipeRunner.Run(Recipe, Config, [.. args("stopped"), "resume_from_checkpoint=true"]);
        Assert.Contains(resumed.Infos, i => i.StartsWith("resumed from", StringComparison.Ordinal));
        var expected = File.ReadAllBytes(Path.Combine(tmp.Path, "straight", "epoch_0", "model.safetensors"));
        var actual = File.ReadAllBytes(Path.Combine(tmp.Path, "stopped", "epoch_0", "model.safetensors"));
        Assert.True(expected.AsSpan().SequenceEqual(actual), "resumed weights differ from the uninterrupted run");
        // the vocabulary map cached by the first run is read back by the resumed one
        Assert.Single(Directory.GetFiles(Path.Combine(tmp.Path, "stopped", "vocab_map"), "vocab-map-*.bin"));
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok, "text/tinyshakespeare/input.txt")]
    public void Kd_Stories260KTeacherByteStudentOnRealText_TrainsWithGold()
    {
        using var tmp = new TempDir();
        // Given the real stories260K teacher with its 512-piece SentencePiece tokenizer and a byte-level student on a
        // text stream cut into byte windows (windows start and end inside words)
        var text = Path.Combine(tmp.Path, "input.txt");
        File.WriteAllText(text, File.ReadAllText(SharedData.PathOf("text/tinyshakespeare/input.txt"))[..20_000]);
        var reporter = RecipeRunner.RunExact(Recipe, Config,
        [
            $"output_dir={tmp.Path}/kd", $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={stories.Path}",
            "teacher_tokenizer._component_=sharptune.models.llama2.llama2_tokenizer", $"teacher_tokenizer.path={stories.Path}/tokenizer.model",
            "teacher_model._component_=sharptune.models.llama2.stories260k", "~teacher_model.vocab_size", "~teacher_model.num_layers",
            "~teacher_model.num_heads", "~teacher_model.num_kv_heads", "~teacher_model.embed_dim", "~teacher_model.intermediate_dim",
            "~teacher_model.max_seq_len", "~teacher_model.tie_embeddings",
            "dataset._component_=sharptune.datasets.text_completion_dataset", $"dataset.source={text}", "~dataset.num_samples", "~dataset.seed",
            "dataset.max_seq_len=128", "shuffle=false", "batch_size=4", "max_steps_per_epoch=6", "metric_logger.tensorboard=false", "threads=1",
        ]);

        // Then GOLD matches the ids both vocabularies spell alike (bytes and short pieces), and almost every trained byte
        // lies in an aligned span (only bytes at window edges whose teacher token straddles the edge may not)
        Assert.Contains(reporter.Infos, i => i.StartsWith("cross-tokenizer distillation: GOLD", StringComparison.Ordinal));
        var coverage = Assert.Single(reporter.Infos, i => i.StartsWith("cross-tokenizer KD:", StringComparison.Ordinal));
        var m = System.Text.RegularExpressions.Regex.Match(coverage, @"([\d,]+) of ([\d,]+) trained");
        var (alignedTokens, trained) = (long.Parse(m.Groups[1].Value.Replace(",", "")), long.Parse(m.Groups[2].Value.Replace(",", "")));
        Assert.Equal(6 * 4 * 128, trained);
        Assert.InRange(alignedTokens, trained * 9 / 10, trained);
        Assert.All(RecipeRunner.Log(Path.Combine(tmp.Path, "kd")), r => Assert.True(double.IsFinite(r["kd_loss"]) && r["kd_loss"] > 0));
    }
}

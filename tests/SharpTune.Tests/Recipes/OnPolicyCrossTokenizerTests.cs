// The on-policy recipe with a teacher that keeps its own tokenizer (tiny/on_policy_cross_tokenizer_single_device: a
// byte-level student, the tiny char-level teacher, GOLD with the JSD on shared ids): it trains end to end on the
// dataset's completions and on the student's own samples; the logged loss of a first step equals a float64 hand
// computation (dataset completions: every character is one byte and one teacher token, every teacher id is shared, so
// GOLD is the JSD of the two distributions renormalised over the shared ids) and the direct CrossTokenizerKd
// computation on the re-drawn student samples; one tokenizer on both sides gives the same-vocabulary GKD loss; and what
// needs one vocabulary is refused, naming its key.
using SharpTune.Checkpointing;
using SharpTune.Config;
using SharpTune.Data;
using SharpTune.Data.Synthetic;
using SharpTune.Distillation;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Eval;
using SharpTune.Losses;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Recipes;
using SharpTune.Tests.Checkpointing;
using SharpTune.Tokenizers;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class OnPolicyCrossTokenizerTests
{
    private const string Recipe = "on_policy_distillation_single_device";
    private const string Config = "tiny/on_policy_cross_tokenizer_single_device";
    private const long Seed = 1234; // the tiny config's seed

    private static string[] Common(string root, string teacher, string name) =>
    [
        $"output_dir={root}/{name}", $"checkpointer.checkpoint_dir={root}/init", $"teacher_checkpointer.checkpoint_dir={teacher}",
        "log_peak_memory_stats=false",
    ];

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.0)]
    public void OnPolicyCross_ByteStudentCharTeacher_TrainsWithAGradientAndLowersTheDatasetLoss(double lmbda)
    {
        using var tmp = new TempDir();
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, steps: 24);

        // Given 24 steps of 4 sequences, completed by the dataset (lmbda 0) or sampled by the student (lmbda 1)
        var reporter = RecipeRunner.Run(Recipe, Config,
            [.. Common(tmp.Path, teacher, "run"), "max_steps_per_epoch=24", $"lmbda={lmbda}", "max_new_tokens=24"]);

        // Then every step's loss is finite and positive, with a gradient, over completion text the teacher could read
        Assert.Contains(reporter.Infos, i => i.StartsWith("cross-tokenizer distillation: GOLD", StringComparison.Ordinal));
        var log = RecipeRunner.Log(Path.Combine(tmp.Path, "run"));
        Assert.Equal(24, log.Count);
        Assert.All(log, r => Assert.True(double.IsFinite(r["loss"]) && r["loss"] > 0 && r["grad_norm"] > 0, $"step {r["step"]}: loss {r["loss"]}, grad_norm {r["grad_norm"]}"));
        Assert.All(log, r => Assert.Equal(lmbda, r["on_policy_fraction"]));
        Assert.All(log, r => Assert.False(r.ContainsKey("reverse_kl_student_samples") || r.ContainsKey("teacher_nll_student_samples")));
        if (lmbda == 0)
            Assert.All(log, r => Assert.Equal(1.0, r["aligned_fraction"])); // ASCII in the teacher's alphabet: every completion byte
        else
            Assert.All(log, r => Assert.InRange(r["aligned_fraction"], 0.05, 1.0)); // noise at first: what the teacher can read
        var coverage = Assert.Single(reporter.Infos, i => i.StartsWith("cross-tokenizer KD:", StringComparison.Ordinal));
        Assert.Contains("completion tokens lie in aligned spans", coverage);
        // and training lowers it on the dataset's completions. Not asserted on student samples: what the student writes
        // follows its logits bit for bit, so another CPU's kernels draw other samples and the trend of a loss measured
        // on them is not a property of the code.
        if (lmbda == 0)
        {
            var (first, last) = RecipeRunner.LossTrend(Path.Combine(tmp.Path, "run"), 5);
            Assert.True(last < first, $"loss did not fall: first 5 steps {first}, last 5 {last}");
        }
        Assert.True(File.Exists(Path.Combine(tmp.Path, "run", "epoch_0", "model.safetensors")));
    }

    [Fact]
    public void OnPolicyCross_FirstStepOnDatasetCompletions_LossEqualsFloat64HandComputation()
    {
        using var tmp = new TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 8);
        const double beta = 0.3;

        // Given one step of 4 dataset completions with GOLD (JSD, beta 0.3, temperature 1)
        RecipeRunner.Run(Recipe, Config, [.. Common(tmp.Path, teacherDir, "run"), "max_steps_per_epoch=1", "lmbda=0", $"kd_loss.beta={beta}"]);
        var logged = RecipeRunner.Log(Path.Combine(tmp.Path, "run")).Single();

        // When the loss is computed by hand in float64: the text is ASCII, so each character is one byte of the student
        // and one token of the teacher, at the same positions; every teacher id is shared (TRL's adaptive weights: 1 on
        // the matched part, 0 on ULD), so per completion position GOLD is the JSD between the teacher's distribution over
        // its 99 ids (its 128 logits cut to the tokenizer's) and the student's renormalised over the 99 byte ids that
        // spell the same characters (and the same specials)
        using var student = Load(Path.Combine(tmp.Path, "init"));
        using var teacher = Load(teacherDir);
        var bytes = new ByteTokenizer();
        var chars = new CharTokenizer();
        var shared = Enumerable.Range(0, chars.VocabSize)
            .Select(t => t < 3 ? t : bytes.Encode(CharTokenizer.Alphabet[t - 3].ToString(), addBos: false, addEos: false).Single()).ToArray();
        Assert.Equal([0, 1, 2], shared[..3]); // pad, bos, eos on both sides
        var samples = new DataLoader(new SyntheticInstructDataset(bytes, 96, 0), 4, (int)Seed, shuffle: true, dropLast: true, padId: 0).Samples(0, 0);
        double sum = 0;
        long count = 0;
        using (no_grad())
            foreach (var sample in samples)
            {
                var teacherTokens = chars.Encode(bytes.Decode(sample.Tokens, skipSpecialTokens: true), addBos: true, addEos: true);
                Assert.Equal(sample.Tokens.Length, teacherTokens.Count);
                var ls = student.Forward(tensor(sample.Tokens.Select(t => (long)t).ToArray()).unsqueeze(0))[0].to_type(ScalarType.Float64); // [s, 259]
                var lt = teacher.Forward(tensor(teacherTokens.Select(t => (long)t).ToArray()).unsqueeze(0))[0].to_type(ScalarType.Float64); // [s, 128]
                for (var pos = 0; pos < sample.Labels.Length; pos++)
                {
                    if (sample.Labels[pos] == Sample.IgnoreIndex) continue;
                    var p = lt[pos].narrow(0, 0, chars.VocabSize).softmax(0).data<double>().ToArray();
                    var q = ls[pos].index_select(0, tensor(shared.Select(i => (long)i).ToArray())).softmax(0).data<double>().ToArray();
                    sum += Jsd(p, q, beta);
                    count++;
                }
            }

        // Then the recipe logged it (float32 softmax and sums over at most 259 ids against float64: ~1e-6 relative per
        // token; 1e-4 leaves a wide margin, and another alignment, vocabulary restriction or beta moves it by far more)
        Assert.True(Math.Abs(logged["loss"] - sum / count) <= 1e-4 * Math.Abs(sum / count), $"logged loss {logged["loss"]} vs hand {sum / count}");
        Assert.Equal(count, (long)Math.Round(logged["completion_length"] * samples.Count));
        Assert.Equal(1.0, logged["aligned_fraction"]);
        Assert.True(sum / count > 1e-3, "the comparison needs a teacher that differs from the student");
    }

    // The generalized JSD written from its definition: m = beta p + (1 - beta) q, beta KL(p||m) + (1 - beta) KL(q||m).
    private static double Jsd(double[] p, double[] q, double beta)
    {
        double Kl(double[] a, double[] b) => a.Select((x, v) => x > 0 ? x * Math.Log(x / b[v]) : 0).Sum();
        var m = p.Select((x, v) => beta * x + (1 - beta) * q[v]).ToArray();
        return beta * Kl(p, m) + (1 - beta) * Kl(q, m);
    }

    [Fact]
    public void OnPolicyCross_FirstStepOnStudentSamples_LossEqualsDirectCrossTokenizerSum()
    {
        using var tmp = new TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 8);

        // Given one step of 4 prompts completed by the student (lmbda 1) at temperature 1.3, top-k 20
        RecipeRunner.Run(Recipe, Config,
            [.. Common(tmp.Path, teacherDir, "run"), "max_steps_per_epoch=1", "lmbda=1", "temperature=1.3", "top_k=20", "max_new_tokens=16"]);
        var logged = RecipeRunner.Log(Path.Combine(tmp.Path, "run")).Single();

        // When the same completions are drawn again from the seed with the initial student, joined to their prompts, and
        // the GOLD sum over aligned completion spans divided by the completion tokens, computed directly
        using var student = Load(Path.Combine(tmp.Path, "init"));
        using var teacher = Load(teacherDir);
        var bytes = new ByteTokenizer();
        var samples = new DataLoader(new SyntheticInstructDataset(bytes, 96, 0), 4, (int)Seed, shuffle: true, dropLast: true, padId: 0).Samples(0, 0);
        var prompts = samples.Select((s, i) => (IReadOnlyList<int>)PromptCompletion.Split(s, i).Prompt).ToList();
        var options = new GenerationOptions
        {
            Temperature = 1.3, TopK = 20, TopP = 1.0, StopTokens = [bytes.EosId],
            MaxNewTokens = Math.Min(16, (int)student.MaxSeqLen - prompts.Max(p => p.Count)),
        };
        using var generator = new Generator(OnPolicyDistillationSingleDevice.StreamSeed(Seed, 0, 0), CPU);
        var completions = Generation.GenerateBatch(student, prompts, options, generator).GeneratedTokens;
        var sequences = prompts.Select((p, i) => PromptCompletion.Join(p, completions[i])).ToList();
        var kd = new CrossTokenizerKd(bytes, new CharTokenizer(), GoldLossOptions.Create("jsd"), null, (int)teacher.MaxSeqLen);
        var aligned = kd.Prepare(sequences, CPU);
        double direct;
        using (no_grad())
        {
            var batch = Collate.PadSft(sequences, bytes.PadId);
            var sum = kd.Sum(student.Forward(batch.Tokens), teacher.Forward(aligned.TeacherTokens), aligned);
            direct = sum.item<float>() / (double)aligned.TrainedTokens;
        }

        // Then the recipe logged that loss and that coverage (the same float32 operations on the same rows; only the final
        // division and the logits' path may round differently: 1e-5 relative, while a different completion, alignment or
        // normalisation moves it by far more)
        Assert.Equal(aligned.TrainedTokens, (long)Math.Round(logged["completion_length"] * prompts.Count));
        Assert.True(aligned.AlignedTokens > 0, "the comparison needs completion text the teacher can read");
        Assert.Equal((double)aligned.AlignedTokens / aligned.TrainedTokens, logged["aligned_fraction"], 12);
        Assert.True(Math.Abs(logged["loss"] - direct) <= 1e-5 * Math.Abs(direct), $"logged loss {logged["loss"]} vs direct {direct}");
        Assert.Equal(1.0, logged["on_policy_fraction"]);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.0)]
    public void OnPolicyCross_SameTokenizerWithGoldJsd_EqualsSameVocabularyGkd(double lmbda)
    {
        using var tmp = new TempDir();
        // A teacher and a student whose vocabulary is exactly the char tokenizer's 99 ids (no padding logits to cut)
        var teacher = RecipeRunner.TrainTeacher(tmp.Path, 8, "model.vocab_size=99");
        string[] common =
        [
            $"checkpointer.checkpoint_dir={tmp.Path}/student_init", $"teacher_checkpointer.checkpoint_dir={teacher}",
            "model.vocab_size=99", "teacher_model.vocab_size=99", "max_steps_per_epoch=1", $"lmbda={lmbda}", "max_new_tokens=16",
            "log_peak_memory_stats=false",
        ];
        // Given the same-vocabulary GKD (JSD, beta 0.3) and GOLD with the JSD at beta 0.3 and the char tokenizer on both sides
        var same = RecipeRunner.Run(Recipe, "tiny/on_policy_single_device", [.. common, $"output_dir={tmp.Path}/same", "beta=0.3"]);
        var cross = RecipeRunner.Run(Recipe, "tiny/on_policy_single_device",
        [
            .. common, $"output_dir={tmp.Path}/cross", "~beta", "teacher_tokenizer._component_=sharptune.data.synthetic.char_tokenizer",
            "kd_loss._component_=sharptune.modules.loss.GoldLoss", "kd_loss.divergence=jsd", "kd_loss.beta=0.3",
        ]);

        // Then the first step (same initial weights, same batch, same samples) logs the same loss up to the order of its
        // sum: both compute each token's divergence from the same fp32 logits; GOLD renormalises over the 99 shared ids
        // (all of them: a sum of ~1 that rounds by a few u per token) and sums span chunk by chunk, sequence by sequence.
        // Two orders of a sum of n non-negative terms differ by at most 2 gamma(n - 1) times the sum; n is at most 4
        // sequences x 96 positions; the logged values are rounded once more each (2 u).
        Assert.Contains(cross.Infos, i => i.Contains("on 99 shared ids (weight 1)", StringComparison.Ordinal));
        var a = same.Metrics[0].Values;
        var b = cross.Metrics[0].Values;
        Assert.Equal(1.0, b["aligned_fraction"]); // every completion token (a sampled pad or special included) is one span
        Assert.Equal(a["completion_length"], b["completion_length"]);
        var bound = (2 * FloatBounds.Gamma(4 * 96 - 1) + 2 * FloatBounds.U) * a["loss"];
        Assert.True(Math.Abs(a["loss"] - b["loss"]) <= bound, $"loss {a["loss"]} vs {b["loss"]}, bound {bound}");
        Assert.True(a["loss"] > 1e-3, "the comparison needs a teacher that differs from the student");
    }

    [Theory]
    [InlineData("loss_type", new[] { "loss_type=reverse_kl_pg", "lmbda=1" }, "log-prob of each sampled student token")]
    [InlineData("seq_kd", new[] { "seq_kd=true" }, "its own tokens")]
    [InlineData("beta", new[] { "beta=0.5" }, "kd_loss.beta")]
    [InlineData("teacher_tokenizer", new[] { "~kd_loss" }, "sharptune.modules.loss.GoldLoss")]
    [InlineData("kd_loss", new[] { "~teacher_tokenizer" }, "set teacher_tokenizer")]
    [InlineData("kd_loss", new[] { "kd_loss._component_=sharptune.losses.KdLoss", "~kd_loss.uld_top_k" }, "got KdLoss")]
    public void OnPolicyCross_WhatNeedsOneVocabulary_RefusedNamingTheKey(string key, string[] overrides, string reason)
    {
        using var tmp = new TempDir();
        // Given the cross-tokenizer config with one setting that cannot work across tokenizers (no teacher is needed:
        // the refusal comes before any model is loaded)
        string[] args = [$"output_dir={tmp.Path}/run", $"checkpointer.checkpoint_dir={tmp.Path}/init", $"teacher_checkpointer.checkpoint_dir={tmp.Path}/teacher", .. overrides];
        var e = Assert.Throws<ConfigException>(() => RecipeRunner.Run(Recipe, Config, args));

        // Then the error names the key and says why
        Assert.Equal(key, Assert.Single(e.Problems).Path);
        Assert.Contains(reason, e.Message);
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "init")), "refused before the student was created");
    }

    private static TransformerDecoder Load(string dir)
    {
        var model = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(dir, "config.json")));
        HfCheckpointer.LoadInto(model, dir, strict: true, convertDtype: true);
        model.eval();
        return model;
    }
}

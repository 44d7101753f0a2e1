// The on_policy_distillation_single_device recipe on the tiny configs: the logged loss of a step on the student's own
// samples equals a float64 hand computation from the checkpoints (the sampled completions re-drawn from the seed, so
// sampling is reproducible), beta 0 / 1 give forward / reverse KL, lmbda 0 reproduces the off-policy KD recipe,
// and a run killed during a checkpoint commit resumes to the uninterrupted run's bytes.
using SharpTune.Checkpointing;
using SharpTune.Data;
using SharpTune.Data.Synthetic;
using SharpTune.Distillation;
using SharpTune.Eval;
using SharpTune.Models;
using SharpTune.Modules;
using SharpTune.Recipes;
using static TorchSharp.torch;

namespace SharpTune.Tests.Recipes;

[Collection(RecipeCollection.Name)]
public sealed class OnPolicyDistillationTests
{
    private const string Recipe = "on_policy_distillation_single_device";
    private const string Config = "tiny/on_policy_single_device";
    private const long Seed = 1234; // the tiny config's seed

    private static string[] Common(string root, string teacher, string name) =>
    [
        $"output_dir={root}/{name}", $"checkpointer.checkpoint_dir={root}/init", $"teacher_checkpointer.checkpoint_dir={teacher}",
        "dataset.num_samples=32", "max_new_tokens=12", "log_peak_memory_stats=false",
    ];

    public enum Divergence { Jsd, ForwardKl, ReverseKl, PolicyGradient }

    [Theory]
    [InlineData(Divergence.Jsd)]
    [InlineData(Divergence.ForwardKl)]
    [InlineData(Divergence.ReverseKl)]
    [InlineData(Divergence.PolicyGradient)]
    public void OnPolicy_FirstStepOnStudentSamples_LossEqualsHandComputation(Divergence divergence)
    {
        using var tmp = new Checkpointing.TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        var beta = divergence switch { Divergence.ForwardKl => 0.0, Divergence.ReverseKl => 1.0, _ => 0.5 };

        // Given one step of 4 prompts completed by the student (lmbda 1) at temperature 1.3, top-k 20
        RecipeRunner.Run(Recipe, Config,
        [
            .. Common(tmp.Path, teacherDir, "run"), "max_steps_per_epoch=1", "lmbda=1", $"beta={beta}", "temperature=1.3", "top_k=20",
            $"loss_type={(divergence == Divergence.PolicyGradient ? "reverse_kl_pg" : "gkd")}",
        ]);
        var logged = RecipeRunner.Log(Path.Combine(tmp.Path, "run")).Single();

        // When the same completions are drawn again from the seed with the initial student, and the loss computed by hand
        using var student = Load(Path.Combine(tmp.Path, "init"));
        using var teacher = Load(teacherDir);
        var tokenizer = new CharTokenizer(96);
        var dataset = new SyntheticInstructDataset(tokenizer, 32, 0);
        var samples = new DataLoader(dataset, 4, (int)Seed, shuffle: true, dropLast: true, padId: 0).Samples(0, 0);
        var prompts = samples.Select((s, i) => (IReadOnlyList<int>)PromptCompletion.Split(s, i).Prompt).ToList();
        var options = new GenerationOptions { Temperature = 1.3, TopK = 20, TopP = 1.0, MaxNewTokens = 12, StopTokens = [tokenizer.EosId] };
        using var generator = new Generator(OnPolicyDistillationSingleDevice.StreamSeed(Seed, 0, 0), CPU);
        var completions = Generation.GenerateBatch(student, prompts, options, generator).GeneratedTokens;
        double sum = 0;
        long count = 0;
        using (no_grad())
            for (var i = 0; i < prompts.Count; i++)
            {
                var tokens = prompts[i].Concat(completions[i]).Select(t => (long)t).ToArray();
                var ls = student.Forward(tensor(tokens).unsqueeze(0))[0].to_type(ScalarType.Float64).log_softmax(-1); // [L, v]
                var lt = teacher.Forward(tensor(tokens).unsqueeze(0))[0].to_type(ScalarType.Float64).log_softmax(-1);
                for (var pos = prompts[i].Count - 1; pos < tokens.Length - 1; pos++) // position pos predicts token pos + 1
                {
                    double[] q = ls[pos].exp().data<double>().ToArray(), p = lt[pos].exp().data<double>().ToArray();
                    sum += PerToken(divergence, beta, p, q, (int)tokens[pos + 1]);
                    count++;
                }
            }

        // Then the recipe logged that loss (float32 softmax/sums over a 128-token vocabulary against float64: ~1e-6
        // relative per token; 1e-4 leaves a wide margin, and a different completion or divergence moves it by far more)
        Assert.Equal(count, (long)Math.Round(logged["completion_length"] * prompts.Count));
        Assert.True(Math.Abs(logged["loss"] - sum / count) <= 1e-4 * Math.Max(1, Math.Abs(sum / count)),
            $"{divergence}: logged loss {logged["loss"]} vs hand {sum / count}");
        Assert.Equal(1.0, logged["on_policy_fraction"]);
        Assert.True(logged["reverse_kl_student_samples"] > 0 && logged["teacher_nll_student_samples"] > 0);
    }

    // The per-token value written from the definitions (p teacher, q student, y the sampled token).
    private static double PerToken(Divergence divergence, double beta, double[] p, double[] q, int y)
    {
        double Kl(double[] a, double[] b) => a.Select((x, v) => x > 0 ? x * Math.Log(x / b[v]) : 0).Sum();
        switch (divergence)
        {
            case Divergence.ForwardKl: return Kl(p, q);
            case Divergence.ReverseKl: return Kl(q, p);
            case Divergence.Jsd:
                var m = p.Select((x, v) => beta * x + (1 - beta) * q[v]).ToArray();
                return beta * Kl(p, m) + (1 - beta) * Kl(q, m);
            default:
                // value of -w * (log p_T(y) - log p_S(y)) * log p_S(y): w = q(y) / q_sampler(y), where q_sampler is q at
                // temperature 1.3 restricted to its top 20 tokens
                var logits = q.Select(x => Math.Log(x)).ToArray(); // log q = logits up to a constant, which the softmax cancels
                var kth = logits.OrderDescending().ElementAt(19);
                var z = logits.Where(l => l >= kth).Sum(l => Math.Exp(l / 1.3));
                var sampler = Math.Exp(logits[y] / 1.3) / z;
                var w = Math.Min(10, q[y] / sampler);
                return -w * (Math.Log(p[y]) - Math.Log(q[y])) * Math.Log(q[y]);
        }
    }

    [Fact]
    public void OnPolicy_LmbdaZero_ReproducesOffPolicyKdRecipeWithJsd()
    {
        using var tmp = new Checkpointing.TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);

        // Given the KD recipe with only its KD term (kd_ratio 1) as the generalized JSD at temperature 1
        RecipeRunner.Run("knowledge_distillation_single_device", "tiny/kd_full_single_device",
        [
            .. Common(tmp.Path, teacherDir, "kd")[..3], "dataset.num_samples=32", "max_steps_per_epoch=3", "kd_ratio=1",
            "loss._component_=sharptune.modules.loss.CEWithChunkedOutputLoss", "loss.num_output_chunks=8",
            "kd_loss._component_=sharptune.losses.KdLoss", "kd_loss.divergence=jsd", "kd_loss.beta=0.3", "kd_loss.temperature=1.0",
        ]);
        // When the on-policy recipe never samples (lmbda 0, no seq_kd)
        RecipeRunner.Run(Recipe, Config, [.. Common(tmp.Path, teacherDir, "gkd"), "max_steps_per_epoch=3", "lmbda=0", "beta=0.3"]);

        // Then it takes the same steps on the dataset's completions (up to the order of float32 sums)
        var kd = RecipeRunner.Log(Path.Combine(tmp.Path, "kd"));
        var gkd = RecipeRunner.Log(Path.Combine(tmp.Path, "gkd"));
        Assert.Equal(3, gkd.Count);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(Math.Abs(kd[i]["loss"] - gkd[i]["loss"]) <= 1e-5 * Math.Abs(kd[i]["loss"]), $"step {i + 1}: KD {kd[i]["loss"]} vs on-policy {gkd[i]["loss"]}");
            Assert.Equal(0.0, gkd[i]["on_policy_fraction"]);
        }
    }

    [Fact]
    public void OnPolicy_SameSeed_SamplesTheSameAndAnotherSeedDiffers()
    {
        using var tmp = new Checkpointing.TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        IReadOnlyList<double> Losses(string name, long seed)
        {
            RecipeRunner.Run(Recipe, Config, [.. Common(tmp.Path, teacherDir, name), "max_steps_per_epoch=2", "lmbda=1", "shuffle=false", $"seed={seed}"]); // the seed then moves only the sampler
            return RecipeRunner.Log(Path.Combine(tmp.Path, name)).Select(r => r["loss"]).ToList();
        }
        var a = Losses("a", Seed);
        Assert.Equal(a, Losses("b", Seed));
        Assert.NotEqual(a, Losses("c", Seed + 1));
    }

    [Fact]
    public void OnPolicy_KilledDuringACheckpointCommit_ResumesByteIdentical()
    {
        using var tmp = new Checkpointing.TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        string[] Args(string name, bool resume) =>
            [.. Common(tmp.Path, teacherDir, name), "max_steps_per_epoch=4", "save_every_n_steps=1", "lmbda=0.5", "gradient_accumulation_steps=2",
             "batch_size=2", $"resume_from_checkpoint={(resume ? "true" : "false")}"];

        // Given an uninterrupted run that mixes student-sampled and dataset micro-batches, recording its commit operations
        var recording = new KillSwitch();
        using (CommitFs.Arm(recording)) RecipeRunner.Run(Recipe, Config, Args("straight", false));
        var fractions = RecipeRunner.Log(Path.Combine(tmp.Path, "straight")).Select(r => r["on_policy_fraction"]).ToList();
        Assert.Contains(fractions, f => f > 0);
        Assert.Contains(fractions, f => f < 1);
        var commits = recording.Performed.Select((op, i) => (op, i)).Where(x => x.op.EndsWith(RecipeStateStore.PendingName, StringComparison.Ordinal)).Select(x => x.i).ToList();

        // When a second run is killed at the second commit's pending-state operation (steps are left to redo, student
        // sampling among them) and then resumed
        var kill = new KillSwitch { KillAt = commits[1] };
        Assert.Throws<SimulatedKillException>(() =>
        {
            using var armed = CommitFs.Arm(kill);
            RecipeRunner.Run(Recipe, Config, Args("killed", false));
        });
        var found = RecipeStateStore.Peek(Path.Combine(tmp.Path, "killed"))?.StepsRun ?? 0;
        Assert.InRange(found, 1, 2);
        Assert.Contains(fractions.Skip((int)found), f => f > 0); // the resumed run must re-draw student samples
        var resumed = RecipeRunner.Run(Recipe, Config, Args("killed", true));
        Assert.Contains(resumed.Infos, i => i.StartsWith("resumed from", StringComparison.Ordinal));

        // Then weights and optimizer state equal the uninterrupted run's, byte for byte, and each step is logged once
        foreach (var file in new[] { "epoch_0/model.safetensors", "recipe_state/optimizer.bin" })
            Assert.True(File.ReadAllBytes(Path.Combine(tmp.Path, "straight", file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(tmp.Path, "killed", file))),
                $"{file} differs from the uninterrupted run");
        Assert.Equal([1L, 2, 3, 4], RecipeRunner.Log(Path.Combine(tmp.Path, "killed")).Select(r => (long)r["step"]));
    }

    [Fact]
    public void OnPolicy_MaxSteps_StopsInsideTheEpochAndSavesThatStep()
    {
        // Given an epoch of 4 steps and max_steps 3
        using var tmp = new Checkpointing.TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        var reporter = RecipeRunner.Run(Recipe, Config, [.. Common(tmp.Path, teacherDir, "capped"), "max_steps_per_epoch=4", "max_steps=3", "lmbda=0.5"]);

        // Then three steps are logged, the run says where it stops, and the last checkpoint is step_3, not an epoch
        Assert.Equal([1L, 2, 3], RecipeRunner.Log(Path.Combine(tmp.Path, "capped")).Select(r => (long)r["step"]));
        Assert.Contains(reporter.Infos, i => i.Contains("stopping at max_steps 3", StringComparison.Ordinal));
        Assert.True(File.Exists(Path.Combine(tmp.Path, "capped", "step_3", "model.safetensors")));
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "capped", "epoch_0")));
    }

    [Theory]
    [InlineData("top_p=0", "top_p")]
    [InlineData("max_new_tokens=0", "max_new_tokens")]
    [InlineData("random_init_std=-1", "random_init_std")]
    [InlineData("lmbda=2", "lmbda")]
    public void OnPolicy_OptionOutOfRange_IsRefusedNamingTheKey(string setting, string key)
    {
        var e = Assert.Throws<SharpTune.Config.ConfigException>(() => RecipeRunner.Run(Recipe, Config, "output_dir=unused", setting));
        Assert.Contains(key, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OnPolicy_PolicyGradientWithDatasetBatches_IsRefusedNamingTheKey()
    {
        var e = Assert.Throws<SharpTune.Config.ConfigException>(() => RecipeRunner.Run(Recipe, Config, "output_dir=unused", "loss_type=reverse_kl_pg", "lmbda=0.5"));
        Assert.Contains("lmbda: 1", e.Message);
    }

    [Fact]
    public void PromptCompletion_Split_PromptEndsWhereTrainingStartsAndRefusesTrainOnInput()
    {
        var tokenizer = new CharTokenizer(96);
        var sample = new SyntheticInstructDataset(tokenizer, 1, 0)[0];
        var split = PromptCompletion.Split(sample, 0);
        var first = Array.FindIndex(sample.Labels, l => l != Sample.IgnoreIndex);
        Assert.Equal(sample.Tokens[..(first + 1)], split.Prompt);
        var joined = PromptCompletion.Join(split.Prompt, sample.Tokens[(first + 1)..]);
        Assert.Equal(sample.Tokens, joined.Tokens);
        Assert.Equal(sample.Labels, joined.Labels);
        var trainsOnInput = new SyntheticInstructDataset(tokenizer, 1, 0, trainOnInput: true)[0];
        Assert.Contains("train_on_input", Assert.Throws<ArgumentException>(() => PromptCompletion.Split(trainsOnInput, 7)).Message);
    }

    private static TransformerDecoder Load(string dir)
    {
        var model = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(dir, "config.json")));
        HfCheckpointer.LoadInto(model, dir, strict: true, convertDtype: true);
        model.eval();
        return model;
    }
}

[Collection(RecipeCollection.Name)]
public sealed class GenerateDatasetRecipeTests
{
    [Fact]
    public void GenerateDataset_Greedy_WritesEachPromptsOwnCompletionAndTheSettings()
    {
        using var tmp = new Checkpointing.TempDir();
        var teacherDir = RecipeRunner.TrainTeacher(tmp.Path, steps: 2);
        var output = Path.Combine(tmp.Path, "out", "completions.jsonl");

        // When the teacher completes 6 prompts greedily in batches of 4
        RecipeRunner.RunExact("generate_dataset", "tiny/generate_dataset",
            $"output_path={output}", $"checkpointer.checkpoint_dir={teacherDir}", "max_samples=6", "batch_size=4", "temperature=0", "max_new_tokens=10");

        // Then each row holds the prompt and what the model alone generates from it, and the settings are recorded
        var rows = File.ReadAllLines(output).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!).ToList();
        Assert.Equal(6, rows.Count);
        var tokenizer = new CharTokenizer(96);
        var dataset = new SyntheticInstructDataset(tokenizer, 64, 0);
        using var teacher = HfModels.FromConfig(HfModelConfig.Parse(Path.Combine(teacherDir, "config.json")));
        HfCheckpointer.LoadInto(teacher, teacherDir, strict: true, convertDtype: true);
        for (var i = 0; i < 6; i++)
        {
            var prompt = PromptCompletion.Split(dataset[i], i).Prompt;
            Assert.Equal(prompt, rows[i]["prompt_ids"]!.AsArray().Select(n => (int)n!));
            var alone = Generation.Generate(teacher, prompt, new GenerationOptions { MaxNewTokens = 10, StopTokens = [tokenizer.EosId] }).GeneratedTokens;
            Assert.Equal(alone, rows[i]["completion_ids"]!.AsArray().Select(n => (int)n!));
        }
        var settings = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(output + ".settings.json"))!;
        Assert.Equal(0.0, (double)settings["temperature"]!);
        Assert.Equal(10, (int)settings["max_new_tokens"]!);
        Assert.Equal("sharptune.datasets.synthetic_instruct_dataset", (string)settings["dataset"]!);
    }

    [Fact]
    public void RankStream_RankZeroIsTheOneProcessStream_OtherRanksDrawTheirOwn()
    {
        // Given the stream of one micro-batch
        var key = OnPolicyDistillationSingleDevice.StreamSeed(1234, 1, 5);

        // Then rank 0 samples exactly as a one-process run, every other rank from a distinct, reproducible seed
        Assert.Equal(key, OnPolicyDistillationSingleDevice.RankStream(key, 0));
        var seeds = Enumerable.Range(0, 8).Select(r => OnPolicyDistillationSingleDevice.RankStream(key, r)).ToList();
        Assert.Equal(seeds.Count, seeds.Distinct().Count());
        Assert.Equal(seeds, Enumerable.Range(0, 8).Select(r => OnPolicyDistillationSingleDevice.RankStream(key, r)));
        Assert.NotEqual(OnPolicyDistillationSingleDevice.RankStream(key, 1), OnPolicyDistillationSingleDevice.RankStream(OnPolicyDistillationSingleDevice.StreamSeed(1234, 1, 6), 1));
    }
}

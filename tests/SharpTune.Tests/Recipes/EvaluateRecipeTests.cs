// The `evaluate` recipe end to end through `sharptune run evaluate`: stories260K (converted with `convert llama2c`) on
// the hand-made files of every task format. A 260K-parameter story model scores near chance, so these tests check the
// pipeline (documents counted, metric names, JSON written, limit honoured, component form equal to the folder form,
// bad data rejected before scoring), not the scores.
using System.Text.Json.Nodes;
using SharpTune.Data;
using SharpTune.Eval;
using SharpTune.Hub;
using SharpTune.Tests.Cli;
using SharpTune.Tests.Eval;
using SharpTune.Tests.Hub;

namespace SharpTune.Tests.Recipes;

public sealed class EvaluateRecipeTests(Stories260KFolder model) : IClassFixture<Stories260KFolder>
{
    private static readonly string[] AllTasks = ["hellaswag", "truthfulqa_mc1", "truthfulqa_mc2", "commonsense_qa", "multiple_choice", "perplexity"];

    private static string[] DataOverrides() =>
    [
        "data_files.hellaswag=" + EvaluatorTests.Sample("hellaswag.jsonl"),
        "data_files.truthfulqa_mc1=" + EvaluatorTests.Sample("truthfulqa_mc.jsonl"),
        "data_files.truthfulqa_mc2=" + EvaluatorTests.Sample("truthfulqa_mc.jsonl"),
        "data_files.commonsense_qa=" + EvaluatorTests.Sample("commonsense_qa.jsonl"),
        "data_files.multiple_choice=" + EvaluatorTests.Sample("multiple_choice.jsonl"),
        "data_files.perplexity=" + EvaluatorTests.Sample("perplexity.txt"),
    ];

    private CliResult Evaluate(string outputDir, params string[] overrides) =>
        CliHarness.Run(["run", "evaluate", "--config", "evaluation", "checkpoint_dir=" + model.Path, "output_dir=" + outputDir,
            "threads=1", .. DataOverrides(), .. overrides]);

    private static int Lines(string file) => File.ReadLines(EvaluatorTests.Sample(file)).Count(l => l.Trim().Length > 0);

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunEvaluate_Stories260KAllTaskFormats_ReportHasEveryTaskMetricAndCount()
    {
        // Given stories260K as an HF folder and a hand-made file per task format
        var output = System.IO.Path.Combine(model.Root, "all");

        // When evaluating every task through the CLI
        var r = Evaluate(output, $"tasks=[{string.Join(',', AllTasks)}]", "batch_size=3");

        // Then the table is printed and results.json holds each task's metrics over all its documents
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("| Tasks | n-shot | Metric | Value |", r.Out);
        var report = EvalReport.Load(System.IO.Path.Combine(output, "results.json"));
        Assert.Equal("stories260K", report.Model);
        Assert.Equal(512, report.MaxLength);
        var expected = new (string Task, string Metric, int N)[]
        {
            ("hellaswag", "acc", Lines("hellaswag.jsonl")), ("hellaswag", "acc_norm", Lines("hellaswag.jsonl")),
            ("truthfulqa_mc1", "acc", Lines("truthfulqa_mc.jsonl")), ("truthfulqa_mc2", "acc", Lines("truthfulqa_mc.jsonl")),
            ("commonsense_qa", "acc", Lines("commonsense_qa.jsonl")),
            ("multiple_choice", "acc", Lines("multiple_choice.jsonl")), ("multiple_choice", "acc_norm", Lines("multiple_choice.jsonl")),
            ("perplexity", "word_perplexity", 1), ("perplexity", "byte_perplexity", 1), ("perplexity", "bits_per_byte", 1),
            ("perplexity", "token_perplexity", 1), ("perplexity", "loss", 1),
        };
        Assert.Equal(expected, report.Results.Select(x => (x.Task, x.Metric, x.N)).ToArray());
        foreach (var acc in report.Results.Where(x => x.Task != "perplexity"))
            Assert.InRange(acc.Value, 0, 1);
        // bits per byte is log2 of the byte perplexity (both from the same log-likelihood)
        Assert.Equal(Math.Log2(report.Find("perplexity", "byte_perplexity")!.Value), report.Find("perplexity", "bits_per_byte")!.Value, 9);
        // the loss is the log of the token perplexity (both per token, from the same log-likelihood)
        Assert.Equal(Math.Log(report.Find("perplexity", "token_perplexity")!.Value), report.Find("perplexity", "loss")!.Value, 9);
        // a trained story model predicts story text far better than uniform over its 512 tokens
        Assert.InRange(report.Find("perplexity", "token_perplexity")!.Value, 1, 512);

        // and the harness-shaped file is written beside it
        var harness = JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(output, "results_harness.json")))!;
        Assert.Equal(report.Find("hellaswag", "acc_norm")!.Value, harness["results"]!["hellaswag"]!["acc_norm,none"]!.GetValue<double>());
        Assert.Equal(Lines("commonsense_qa.jsonl"), harness["n-samples"]!["commonsense_qa"]!["effective"]!.GetValue<int>());
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunEvaluate_SharedContextOff_SameNumbersAsShared()
    {
        // Scoring each choice separately must give the same per-task figures as the shared-context packing.
        var on = System.IO.Path.Combine(model.Root, "shared-on");
        var off = System.IO.Path.Combine(model.Root, "shared-off");
        Assert.Equal(0, Evaluate(on, "tasks=[hellaswag,truthfulqa_mc2]", "shared_context=true").ExitCode);
        Assert.Equal(0, Evaluate(off, "tasks=[hellaswag,truthfulqa_mc2]", "shared_context=false", "batch_size=1").ExitCode);
        var a = EvalReport.Load(System.IO.Path.Combine(on, "results.json"));
        var b = EvalReport.Load(System.IO.Path.Combine(off, "results.json"));
        Assert.Equal(a.Results.Count, b.Results.Count);
        for (var i = 0; i < a.Results.Count; i++) Assert.Equal(a.Results[i].Value, b.Results[i].Value, 6);
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunEvaluate_Limit_ScoresOnlyFirstDocuments()
    {
        var output = System.IO.Path.Combine(model.Root, "limit");
        var r = Evaluate(output, "tasks=[hellaswag,commonsense_qa]", "limit=2");
        Assert.True(r.ExitCode == 0, r.Err);
        var report = EvalReport.Load(System.IO.Path.Combine(output, "results.json"));
        Assert.All(report.Results, x => Assert.Equal(2, x.N));
        Assert.Equal(2, report.Limit);
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunEvaluate_EleutherStyleModelAndCheckpointerComponents_SameResultsAsCheckpointDir()
    {
        // Given torchtune's eleuther_eval shape: model, checkpointer and tokenizer components instead of checkpoint_dir
        var viaFolder = System.IO.Path.Combine(model.Root, "folder");
        var viaComponents = System.IO.Path.Combine(model.Root, "components");
        var yaml = System.IO.Path.Combine(model.Root, "eleuther.yaml");
        File.WriteAllText(yaml, $"""
            # recipe: evaluate
            output_dir: {viaComponents}
            model:
              _component_: sharptune.models.llama2.stories260k
            checkpointer:
              _component_: sharptune.checkpointing.full_model_hf_checkpointer
              checkpoint_dir: {model.Path}
              checkpoint_files: [model.safetensors]
              output_dir: {viaComponents}
              model_type: LLAMA2
            tokenizer:
              _component_: sharptune.models.llama2.llama2_tokenizer
              path: {System.IO.Path.Combine(model.Path, "tokenizer.model")}
            tasks: [multiple_choice, commonsense_qa]
            data_files:
              multiple_choice: {EvaluatorTests.Sample("multiple_choice.jsonl")}
              commonsense_qa: {EvaluatorTests.Sample("commonsense_qa.jsonl")}
            threads: 1
            """);

        // When both forms run
        var c = CliHarness.Run("run", "evaluate", "--config", yaml);
        var f = Evaluate(viaFolder, "tasks=[multiple_choice,commonsense_qa]");

        // Then they agree exactly
        Assert.True(c.ExitCode == 0, c.Err);
        Assert.True(f.ExitCode == 0, f.Err);
        var a = EvalReport.Load(System.IO.Path.Combine(viaComponents, "results.json"));
        var b = EvalReport.Load(System.IO.Path.Combine(viaFolder, "results.json"));
        Assert.Equal(b.Results.Select(x => (x.Task, x.Metric, x.Value, x.N)), a.Results.Select(x => (x.Task, x.Metric, x.Value, x.N)));
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunEvaluate_FileOfAnotherTask_FailsNamingFieldAndWritesNothing()
    {
        var output = System.IO.Path.Combine(model.Root, "wrong");
        var r = CliHarness.Run("run", "evaluate", "--config", "evaluation", "checkpoint_dir=" + model.Path, "output_dir=" + output,
            "tasks=[hellaswag]", "data_files.hellaswag=" + EvaluatorTests.Sample("commonsense_qa.jsonl"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("hellaswag", r.Err);
        Assert.Contains("commonsense_qa.jsonl row 1: missing field 'activity_label'", r.Err);
        Assert.DoesNotContain("unexpected failure", r.Err);
        Assert.False(File.Exists(System.IO.Path.Combine(output, "results.json")));
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunEvaluate_HubDatasetId_DownloadsValidationSplitOnceThroughResolver()
    {
        // Given a Hub dataset repo laid out as the real ones (Parquet/JSON files named by split, plus metadata JSON)
        using var hub = new FakeHub();
        var rows = File.ReadAllBytes(EvaluatorTests.Sample("hellaswag.jsonl"));
        hub.Repos["acme/hellaswag"] = new()
        {
            ["data/validation-00000-of-00001.jsonl"] = rows,
            ["data/train-00000-of-00001.jsonl"] = [.. rows, .. rows],
            ["dataset_infos.json"] = "{\"default\": {}}"u8.ToArray(),
        };
        var cache = System.IO.Path.Combine(model.Root, "hub-cache");
        using (DataSources.UseResolver(new HubDatasetResolver(cache, () => new HubClient(hub.Endpoint))))
        {
            // When the config names the dataset by its id
            var output = System.IO.Path.Combine(model.Root, "hub");
            var r = Evaluate(output, "tasks=[hellaswag]", "data_files.hellaswag=acme/hellaswag");

            // Then only the validation split is scored, from the cache folder
            Assert.True(r.ExitCode == 0, r.Err);
            Assert.Equal(Lines("hellaswag.jsonl"), EvalReport.Load(System.IO.Path.Combine(output, "results.json")).Results[0].N);
            Assert.Contains(System.IO.Path.Combine(cache, "datasets", "acme", "hellaswag", "main", "data", "validation-00000-of-00001.jsonl"), r.Out);
        }
        Assert.Null(DataSources.CurrentResolver); // the scope ended with the block
    }

    [Fact]
    public void RunEvaluate_TaskWithoutData_ConfigErrorBeforeAnythingRuns()
    {
        var output = Path.Combine(Path.GetTempPath(), $"sharptune-nodata-{Guid.NewGuid():N}");
        var r = CliHarness.Run("run", "evaluate", "--config", "evaluation", "checkpoint_dir=/nonexistent", "output_dir=" + output,
            "tasks=[multiple_choice]");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("data_files.multiple_choice", r.Err);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void RunEvaluate_UnknownTask_SuggestsTheNearestName()
    {
        var r = CliHarness.Run("run", "evaluate", "--config", "evaluation", "checkpoint_dir=/nonexistent", "tasks=[hellaswg]");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("unknown task 'hellaswg'", r.Err);
        Assert.Contains("hellaswag", r.Err);
    }

    [SharedDataFact(Stories260KFolder.Bin, Stories260KFolder.Tok)]
    public void RunEvaluate_TeacherNll_OneLinePerPromptSummingToTheReport_ReproducibleFromTheSeed()
    {
        // Given stories260K as both the student and the teacher, and held-out text making more windows than prompts asked
        string[] Args(string output, int seed) =>
        [
            "tasks=[teacher_nll]", "data_files.teacher_nll=" + EvaluatorTests.Sample("perplexity.txt"),
            "teacher_nll.teacher_checkpoint_dir=" + model.Path, "teacher_nll.num_prompts=3", "teacher_nll.prompt_tokens=8",
            "teacher_nll.completion_tokens=6", $"teacher_nll.seed={seed}", "teacher_nll.batch_size=2",
        ];
        var outputs = new[] { "tnll_a", "tnll_b", "tnll_c" }.Select(n => System.IO.Path.Combine(model.Root, n)).ToArray();

        // When evaluating twice with seed 1 and once with seed 2
        foreach (var (output, seed) in outputs.Zip(new[] { 1, 1, 2 }))
        {
            var r = Evaluate(output, Args(output, seed));
            Assert.True(r.ExitCode == 0, r.Err);
        }

        // Then each run wrote one line per prompt whose sums give the report's figures
        var units = CompletionScore.Read(System.IO.Path.Combine(outputs[0], CompletionScore.FileName));
        Assert.Equal(3, units.Count);
        Assert.All(units, u => Assert.InRange(u.Tokens, 1, 6));
        Assert.Equal(units.Select(u => u.Prompt), units.Select(u => u.Prompt).Distinct());
        var report = EvalReport.Load(System.IO.Path.Combine(outputs[0], "results.json"));
        Assert.Equal(units.Sum(u => u.Nll) / units.Sum(u => u.Tokens), report.Find("teacher_nll", "nll_per_token")!.Value, 12);
        Assert.Equal(units.Average(u => u.Tokens), report.Find("teacher_nll", "completion_length")!.Value, 12);
        // and the same seed samples the same completions, another seed others
        var text = outputs.Select(o => File.ReadAllText(System.IO.Path.Combine(o, CompletionScore.FileName))).ToArray();
        Assert.Equal(text[0], text[1]);
        Assert.NotEqual(text[0], text[2]);
    }

    [Fact]
    public void RunEvaluate_TeacherNllGreedy_ConfigErrorNamesTheKey()
    {
        var r = CliHarness.Run("run", "evaluate", "--config", "evaluation", "checkpoint_dir=/nonexistent", "tasks=[teacher_nll]",
            "teacher_nll.teacher_checkpoint_dir=/nonexistent", "teacher_nll.temperature=0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("teacher_nll.temperature", r.Err);
        Assert.Contains("must be a finite number > 0", r.Err);
    }
}

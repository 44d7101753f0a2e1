// End-to-end evaluation on the hand-made sample files with a tiny attention model: the pipeline, not the score.
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class EvaluatorTests
{
    private static readonly GreedyTestTokenizer Bytes = new();

    internal static string Sample(string name) => Path.Combine(SharedData.RepoRoot, "tests", "SharpTune.Tests", "Eval", "Data", name);

    private static IReadOnlyList<EvalTaskSpec> AllTasks() =>
    [
        new("hellaswag", Sample("hellaswag.jsonl")),
        new("truthfulqa_mc1", Sample("truthfulqa_mc.jsonl")),
        new("truthfulqa_mc2", Sample("truthfulqa_mc.jsonl")),
        new("commonsense_qa", Sample("commonsense_qa.jsonl")),
    ];

    [Fact]
    public void Run_SampleFiles_ReportsEachTasksHarnessMetrics()
    {
        var model = new TinyAttentionLm(Bytes.VocabSize, 1024, seed: 3);
        var seen = new List<EvalProgress>();

        var report = Evaluator.Run(model, Bytes, AllTasks(), limit: null, batchSize: 8, new InlineProgress(seen.Add));

        Assert.Equal(
            new[] { ("hellaswag", "acc"), ("hellaswag", "acc_norm"), ("truthfulqa_mc1", "acc"), ("truthfulqa_mc2", "acc"), ("commonsense_qa", "acc") },
            report.Results.Select(r => (r.Task, r.Metric)));
        Assert.Equal(new[] { 4, 4, 3, 3, 4 }, report.Results.Select(r => r.N));
        Assert.All(report.Results, r => Assert.InRange(r.Value, 0.0, 1.0));
        Assert.All(report.Results, r => Assert.NotNull(r.Stderr));
        Assert.Equal(1024, report.MaxLength);
        // Progress ends at the request count of each task: 16 hellaswag endings, 8 mc1, 10 mc2, 20 csqa letters.
        Assert.Equal(new[] { 16, 8, 10, 20 }, seen.GroupBy(p => p.Task).Select(g => g.Last().Done));
    }

    [Fact]
    public void ScoreDocs_PerDocMetrics_MatchSeparatelyScoredRequests()
    {
        var model = new TinyAttentionLm(Bytes.VocabSize, 1024, seed: 5);
        var task = HellaSwag.Task;
        var docs = task.Load(Sample("hellaswag.jsonl"));
        var scorer = new LoglikelihoodScorer(model, Bytes, batchSize: 3, sharedContext: true);

        var results = Evaluator.ScoreDocs(scorer, task, docs);

        var plain = new LoglikelihoodScorer(model, Bytes, batchSize: 1, sharedContext: false);
        for (var d = 0; d < docs.Count; d++)
        {
            var lls = docs[d].Choices.Select(c => plain.Score([new LoglikelihoodRequest(docs[d].Context, " " + c)])[0].LogLikelihood).ToArray();
            for (var c = 0; c < lls.Length; c++) Assert.Equal(lls[c], results[d].LogLikelihoods[c], 1e-5);
            var best = Array.IndexOf(lls, lls.Max());
            var bestNorm = Enumerable.Range(0, lls.Length).MaxBy(c => lls[c] / docs[d].Choices[c].Length);
            Assert.Equal(best == docs[d].Gold ? 1.0 : 0.0, results[d].Metrics["acc"]);
            Assert.Equal(bestNorm == docs[d].Gold ? 1.0 : 0.0, results[d].Metrics["acc_norm"]);
        }
    }

    [Fact]
    public void Run_SharedAndSeparate_SameReport()
    {
        var model = new TinyAttentionLm(Bytes.VocabSize, 1024, seed: 9);
        var tasks = AllTasks();

        var shared = Evaluator.Run(model, Bytes, tasks, limit: 2, batchSize: 4, sharedContext: true);
        var separate = Evaluator.Run(model, Bytes, tasks, limit: 2, batchSize: 4, sharedContext: false);

        for (var i = 0; i < shared.Results.Count; i++)
        {
            Assert.Equal(separate.Results[i].Value, shared.Results[i].Value, 1e-6);
            Assert.Equal(2, shared.Results[i].N);
        }
    }

    [Fact]
    public void Run_UnknownTask_ListsKnownTasks()
    {
        var model = new TinyAttentionLm(Bytes.VocabSize, 64);
        var e = Assert.Throws<ArgumentException>(() => Evaluator.Run(model, Bytes, [new EvalTaskSpec("arc_easy", Sample("hellaswag.jsonl"))], null, 1));
        Assert.Contains("commonsense_qa", e.Message);
    }

    [Fact]
    public void Run_WrongFileForTask_ErrorNamesMissingField()
    {
        var model = new TinyAttentionLm(Bytes.VocabSize, 64);
        var e = Assert.Throws<InvalidDataException>(() =>
            Evaluator.Run(model, Bytes, [new EvalTaskSpec("commonsense_qa", Sample("hellaswag.jsonl"))], null, 1));
        Assert.Contains("'question'", e.Message);
        Assert.Contains("hellaswag.jsonl row 1", e.Message);
    }

    /// <summary>Reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class InlineProgress(Action<EvalProgress> onReport) : IProgress<EvalProgress>
    {
        public void Report(EvalProgress value) => onReport(value);
    }
}

// Runs zero-shot multiple-choice tasks end to end: load documents, build the harness's requests (context,
// delimiter + choice), score them (shared-context packing by default), compute per-document metrics and aggregate
// them by mean with the harness's standard error. The `evaluate` recipe and the CLI call this.
// Reference: lm_eval/evaluator.py (simple_evaluate/evaluate: per-doc process_results, aggregation mean,
// stderr via mean_stderr, "N/A" below two docs).
using System.Diagnostics;
using SharpTune.Tokenizers;

namespace SharpTune.Eval;

/// <summary>A task to run and the file(s) holding its documents.</summary>
/// <param name="Task">Harness task name (see <see cref="EvalTasks.All"/>).</param>
/// <param name="DataPaths">.json/.jsonl/.csv/.parquet files in one of the task's layouts, read in order (shards).</param>
public sealed record EvalTaskSpec(string Task, IReadOnlyList<string> DataPaths)
{
    /// <summary>A task whose documents are in one file.</summary>
    public EvalTaskSpec(string task, string dataPath) : this(task, [dataPath]) { }
}

/// <summary>What the evaluator is doing, for a progress display.</summary>
/// <param name="Task">Current task.</param>
/// <param name="Done">Requests scored in this task.</param>
/// <param name="Total">Requests in this task.</param>
public readonly record struct EvalProgress(string Task, int Done, int Total);

/// <summary>Per-document outcome, for inspection and tests.</summary>
/// <param name="Doc">The document.</param>
/// <param name="LogLikelihoods">One per choice.</param>
/// <param name="Metrics">The document's metric values.</param>
public sealed record DocResult(MultipleChoiceDoc Doc, IReadOnlyList<double> LogLikelihoods, IReadOnlyDictionary<string, double> Metrics);

/// <summary>Evaluates a model on multiple-choice tasks with lm-evaluation-harness semantics.</summary>
public static class Evaluator
{
    /// <summary>Loads each task's data, scores it and returns the aggregated report.</summary>
    /// <param name="model">The model.</param>
    /// <param name="tokenizer">Its tokenizer.</param>
    /// <param name="tasks">Tasks and their data files.</param>
    /// <param name="limit">At most this many documents per task (the first ones), or all.</param>
    /// <param name="batchSize">Sequences per forward pass.</param>
    /// <param name="progress">Receives progress reports.</param>
    /// <param name="sharedContext">Score each document's context once (same results, faster).</param>
    /// <param name="maxLength">Override the model's max length.</param>
    public static EvalReport Run(ICausalLm model, ITokenizer tokenizer, IReadOnlyList<EvalTaskSpec> tasks, int? limit,
        int batchSize, IProgress<EvalProgress>? progress = null, bool sharedContext = true, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        var loaded = tasks.Select(t =>
        {
            var task = EvalTasks.Get(t.Task);
            return (Task: task, Docs: task.Load(t.DataPaths, limit));
        }).ToArray();
        return Run(model, tokenizer, loaded, limit, batchSize, progress, sharedContext, maxLength);
    }

    /// <summary>Scores already loaded documents (the report's Limit is informational).</summary>
    public static EvalReport Run(ICausalLm model, ITokenizer tokenizer,
        IReadOnlyList<(MultipleChoiceTask Task, IReadOnlyList<MultipleChoiceDoc> Docs)> tasks, int? limit, int batchSize,
        IProgress<EvalProgress>? progress = null, bool sharedContext = true, int? maxLength = null)
    {
        var scorer = new LoglikelihoodScorer(model, tokenizer, batchSize, sharedContext, maxLength);
        var clock = Stopwatch.StartNew();
        var results = new List<EvalResult>();
        foreach (var (task, docs) in tasks)
        {
            var perDoc = ScoreDocs(scorer, task, docs, progress);
            results.AddRange(Aggregate(task, perDoc));
        }
        return new EvalReport { Results = results, Limit = limit, MaxLength = scorer.MaxLength, Seconds = clock.Elapsed.TotalSeconds };
    }

    /// <summary>Scores every document of one task and computes its per-document metrics.</summary>
    public static IReadOnlyList<DocResult> ScoreDocs(LoglikelihoodScorer scorer, MultipleChoiceTask task,
        IReadOnlyList<MultipleChoiceDoc> docs, IProgress<EvalProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(task);
        var requests = new List<LoglikelihoodRequest>();
        foreach (var doc in docs) requests.AddRange(task.Requests(doc));
        var scored = scorer.Score(requests, progress is null ? null : new SyncProgress(task.Name, progress));
        var results = new List<DocResult>(docs.Count);
        var k = 0;
        foreach (var doc in docs)
        {
            var lls = scored.Skip(k).Take(doc.Choices.Count).Select(r => r.LogLikelihood).ToArray();
            k += doc.Choices.Count;
            results.Add(new DocResult(doc, lls, task.ProcessResults(doc, lls)));
        }
        return results;
    }

    /// <summary>Mean and standard error of each metric over documents.</summary>
    public static IEnumerable<EvalResult> Aggregate(MultipleChoiceTask task, IReadOnlyList<DocResult> docs)
    {
        if (docs.Count == 0) throw new InvalidOperationException($"{task.Name}: no documents to aggregate");
        foreach (var metric in task.MetricNames)
        {
            var values = docs.Select(d => d.Metrics[metric]).ToArray();
            var stderr = Metrics.MeanStderr(values);
            yield return new EvalResult(task.Name, metric, Metrics.Mean(values), double.IsNaN(stderr) ? null : stderr, values.Length);
        }
    }

    /// <summary>Forwards scoring progress synchronously (Progress&lt;T&gt; would post to a thread pool).</summary>
    private sealed class SyncProgress(string task, IProgress<EvalProgress> target) : IProgress<ScoringProgress>
    {
        public void Report(ScoringProgress value) => target.Report(new EvalProgress(task, value.Done, value.Total));
    }
}

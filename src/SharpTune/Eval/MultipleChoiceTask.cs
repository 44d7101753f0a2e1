// What a zero-shot multiple-choice task is, in lm-evaluation-harness's terms: doc_to_text (the context),
// doc_to_choice (the choice strings), doc_to_target (the gold index), a target delimiter placed between context and
// each choice, and process_results (per-doc metrics, aggregated by mean). Each continuation scored is
// target_delimiter + choice. Reference: lm_eval/api/task.py (ConfigurableTask.construct_requests, process_results).
namespace SharpTune.Eval;

/// <summary>A processed multiple-choice document.</summary>
/// <param name="Context">doc_to_text: the prompt.</param>
/// <param name="Choices">doc_to_choice: the answer strings (without the target delimiter).</param>
/// <param name="Gold">doc_to_target: index of the correct choice.</param>
/// <param name="Labels">Per-choice truth labels where the task has several true answers (TruthfulQA MC2), else null.</param>
public sealed record MultipleChoiceDoc(string Context, IReadOnlyList<string> Choices, int Gold, IReadOnlyList<int>? Labels = null);

/// <summary>A zero-shot multiple-choice task definition.</summary>
public sealed class MultipleChoiceTask
{
    /// <summary>The harness's task name (hellaswag, truthfulqa_mc1, truthfulqa_mc2, commonsense_qa).</summary>
    public required string Name { get; init; }

    /// <summary>Text put between context and each choice (the harness's default is a single space).</summary>
    public string TargetDelimiter { get; init; } = " ";

    /// <summary>Metric names the task reports, in order.</summary>
    public required IReadOnlyList<string> MetricNames { get; init; }

    /// <summary>Turns one data row into a document (process_docs + doc_to_text/choice/target).</summary>
    public required Func<EvalRow, MultipleChoiceDoc> ParseDoc { get; init; }

    /// <summary>Per-document metrics from the choices' log-likelihoods (process_results).</summary>
    public required Func<MultipleChoiceDoc, IReadOnlyList<double>, IReadOnlyDictionary<string, double>> ProcessResults { get; init; }

    /// <summary>The scoring requests of one document: (context, delimiter + choice) per choice.</summary>
    public IReadOnlyList<LoglikelihoodRequest> Requests(MultipleChoiceDoc doc) =>
        doc.Choices.Select(c => new LoglikelihoodRequest(doc.Context, TargetDelimiter + c)).ToArray();

    /// <summary>Loads the task's documents from a data file (first <paramref name="limit"/> rows when given).</summary>
    public IReadOnlyList<MultipleChoiceDoc> Load(string path, int? limit = null) =>
        DataFiles.Read(path, limit).Select(ParseDoc).ToArray();

    /// <summary>Loads the task's documents from several files (dataset shards) in order.</summary>
    public IReadOnlyList<MultipleChoiceDoc> Load(IReadOnlyList<string> paths, int? limit = null) =>
        DataFiles.Read(paths, limit).Select(ParseDoc).ToArray();

    /// <summary>The default acc/acc_norm processing of multiple-choice tasks.</summary>
    internal static IReadOnlyDictionary<string, double> AccAndAccNorm(MultipleChoiceDoc doc, IReadOnlyList<double> lls) =>
        new Dictionary<string, double>
        {
            ["acc"] = Metrics.Accuracy(lls, doc.Gold),
            ["acc_norm"] = Metrics.NormalizedAccuracy(lls, doc.Choices, doc.Gold),
        };

    /// <summary>acc alone.</summary>
    internal static IReadOnlyDictionary<string, double> AccOnly(MultipleChoiceDoc doc, IReadOnlyList<double> lls) =>
        new Dictionary<string, double> { ["acc"] = Metrics.Accuracy(lls, doc.Gold) };
}

/// <summary>The tasks SharpTune evaluates, by harness name.</summary>
public static class EvalTasks
{
    /// <summary>Every task, by name.</summary>
    public static IReadOnlyDictionary<string, MultipleChoiceTask> All { get; } = new Dictionary<string, MultipleChoiceTask>
    {
        [HellaSwag.Task.Name] = HellaSwag.Task,
        [TruthfulQa.Mc1.Name] = TruthfulQa.Mc1,
        [TruthfulQa.Mc2.Name] = TruthfulQa.Mc2,
        [CommonsenseQa.Task.Name] = CommonsenseQa.Task,
        [GenericMultipleChoice.Task.Name] = GenericMultipleChoice.Task,
    };

    /// <summary>The task called <paramref name="name"/>, or an error listing the known ones.</summary>
    public static MultipleChoiceTask Get(string name) =>
        All.TryGetValue(name, out var t) ? t
        : throw new ArgumentException($"unknown task '{name}' (known: {string.Join(", ", All.Keys)})", nameof(name));
}

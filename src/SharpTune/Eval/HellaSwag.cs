// HellaSwag, zero-shot, as lm-evaluation-harness defines it.
// Reference: lm_eval/tasks/hellaswag/hellaswag.yaml and utils.py (preprocess, process_docs):
//   query   = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
//   choices = [preprocess(e) for e in endings], gold = int(label), metrics acc and acc_norm, delimiter " ".
// Data: the original JSONL (rowanz/hellaswag) and the Hugging Face layout share the fields used here; HF stores
// `label` as a string.
using System.Text.RegularExpressions;

namespace SharpTune.Eval;

/// <summary>The hellaswag task.</summary>
public static partial class HellaSwag
{
    /// <summary>The task definition.</summary>
    public static MultipleChoiceTask Task { get; } = new()
    {
        Name = "hellaswag",
        MetricNames = ["acc", "acc_norm"],
        ParseDoc = Parse,
        ProcessResults = MultipleChoiceTask.AccAndAccNorm,
    };

    /// <summary>The harness's preprocess: strip, " [title]" to ". ", drop "[...]" tags, "  " to " " (one pass).</summary>
    public static string Preprocess(string text)
    {
        text = text.Trim();
        text = text.Replace(" [title]", ". ", StringComparison.Ordinal);
        text = BracketTag().Replace(text, "");
        return text.Replace("  ", " ", StringComparison.Ordinal);
    }

    /// <summary>The query (context) of a doc.</summary>
    public static string Query(string activityLabel, string ctxA, string ctxB) =>
        Preprocess(activityLabel + ": " + ctxA + " " + Capitalize(ctxB));

    /// <summary>Python's str.capitalize: first character upper case, the rest lower case.</summary>
    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    private static MultipleChoiceDoc Parse(EvalRow row)
    {
        const string task = "hellaswag";
        var query = Query(row.RequireString(task, "activity_label"), row.RequireString(task, "ctx_a"),
            row.RequireString(task, "ctx_b"));
        var endings = row.AsStringList(task, "endings", row.Require(task, "endings"));
        var label = row.AsInt(task, "label", row.Require(task, "label"));
        if (label < 0 || label >= endings.Count)
            throw row.Bad(task, "label", $"an index into the {endings.Count} endings", label.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return new MultipleChoiceDoc(query, endings.Select(Preprocess).ToArray(), label);
    }

    [GeneratedRegex(@"\[.*?\]")]
    private static partial Regex BracketTag();
}

// A generic zero-shot multiple-choice task for users' own data: one JSON object per document with the prompt, the
// answer strings and the index of the correct one. Scored like the harness's multiple_choice output type: each
// choice is the continuation " " + choice after the query; metrics acc and acc_norm.
// Reference: lm_eval/api/task.py (ConfigurableTask with output_type multiple_choice, doc_to_text/doc_to_choice/
// doc_to_target, default target_delimiter " ").
namespace SharpTune.Eval;

/// <summary>
/// The <c>multiple_choice</c> task: rows <c>{"query": "...", "choices": ["...", ...], "gold": 1}</c> in any data file
/// layout <see cref="DataFiles"/> reads; <c>gold</c> is a 0-based index, or a string equal to one of the choices.
/// </summary>
public static class GenericMultipleChoice
{
    /// <summary>The task definition.</summary>
    public static MultipleChoiceTask Task { get; } = new()
    {
        Name = "multiple_choice",
        MetricNames = ["acc", "acc_norm"],
        ParseDoc = Parse,
        ProcessResults = MultipleChoiceTask.AccAndAccNorm,
    };

    private static MultipleChoiceDoc Parse(EvalRow row)
    {
        const string task = "multiple_choice";
        var query = row.RequireString(task, "query");
        var choices = row.AsStringList(task, "choices", row.Require(task, "choices"));
        if (choices.Count < 2) throw row.Bad(task, "choices", "at least 2 answer strings", $"{choices.Count}");
        var goldNode = row.Require(task, "gold");
        int gold;
        if (goldNode is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<string>(out var s) && !int.TryParse(s, out _))
        {
            gold = choices.ToList().IndexOf(s);
            if (gold < 0) throw row.Bad(task, "gold", "an index or one of the choices", $"\"{s}\"");
        }
        else gold = row.AsInt(task, "gold", goldNode);
        if (gold < 0 || gold >= choices.Count)
            throw row.Bad(task, "gold", $"an index in [0, {choices.Count})", gold.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return new MultipleChoiceDoc(query, choices, gold);
    }
}

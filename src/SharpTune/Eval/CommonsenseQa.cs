// CommonsenseQA, zero-shot, as lm-evaluation-harness defines it.
// Reference: lm_eval/tasks/commonsense_qa/default.yaml:
//   doc_to_text "Question: {{ question.strip() }}\nA. {{choices['text'][0]}}\n...E. {{choices['text'][4]}}\nAnswer:",
//   doc_to_choice ['A', 'B', 'C', 'D', 'E'] (scored as " A" ... " E" after the default " " delimiter),
//   doc_to_target answerKey, metric acc; the harness evaluates the validation split.
// Data: the Hugging Face layout (question, choices {label, text}, answerKey) and the original CommonsenseQA JSONL
// (question {stem, choices [{label, text}]}, answerKey).
using System.Text.Json.Nodes;

namespace SharpTune.Eval;

/// <summary>The commonsense_qa task.</summary>
public static class CommonsenseQa
{
    /// <summary>The choice strings (letters).</summary>
    public static IReadOnlyList<string> Letters { get; } = ["A", "B", "C", "D", "E"];

    /// <summary>The task definition.</summary>
    public static MultipleChoiceTask Task { get; } = new()
    {
        Name = "commonsense_qa",
        MetricNames = ["acc"],
        ParseDoc = Parse,
        ProcessResults = MultipleChoiceTask.AccOnly,
    };

    /// <summary>doc_to_text for a question and its five answer texts.</summary>
    public static string Prompt(string question, IReadOnlyList<string> texts)
    {
        if (texts.Count != 5) throw new ArgumentException($"commonsense_qa needs 5 answer texts, got {texts.Count}", nameof(texts));
        return $"Question: {question.Trim()}\nA. {texts[0]}\nB. {texts[1]}\nC. {texts[2]}\nD. {texts[3]}\nE. {texts[4]}\nAnswer:";
    }

    private static MultipleChoiceDoc Parse(EvalRow row)
    {
        const string task = "commonsense_qa";
        var questionNode = row.Require(task, "question");
        string question;
        IReadOnlyList<string> texts;
        if (questionNode is JsonObject original)
        {
            // Original layout: {"question": {"stem": ..., "choices": [{"label": "A", "text": ...}, ...]}}
            question = row.AsString(task, "question.stem", original["stem"] ?? throw row.Bad(task, "question.stem", "a string", "nothing"));
            if (original["choices"] is not JsonArray list) throw row.Bad(task, "question.choices", "a list", "nothing");
            texts = list.Select((c, i) => c is JsonObject o && o["text"] is { } t
                ? row.AsString(task, $"question.choices[{i}].text", t)
                : throw row.Bad(task, $"question.choices[{i}]", "an object with 'text'", c?.ToJsonString() ?? "null")).ToArray();
        }
        else
        {
            question = row.AsString(task, "question", questionNode);
            var choices = row.Require(task, "choices");
            if (choices is not JsonObject obj || obj["text"] is not { } textNode)
                throw row.Bad(task, "choices", "an object with 'label' and 'text' lists", choices.ToJsonString());
            texts = row.AsStringList(task, "choices.text", textNode);
        }
        if (texts.Count != 5) throw row.Bad(task, "choices.text", "5 answer texts", $"{texts.Count}");
        var key = row.RequireString(task, "answerKey").Trim();
        var gold = Letters.ToList().IndexOf(key);
        if (gold < 0) throw row.Bad(task, "answerKey", "one of A, B, C, D, E", $"'{key}'");
        return new MultipleChoiceDoc(Prompt(question, texts), Letters, gold);
    }
}

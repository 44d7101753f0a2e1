// Each task's prompt text, choices and gold pinned on hand-made docs. Expected strings are written out here from
// the harness's task files (hellaswag utils.py, truthfulqa_mc1.yaml, commonsense_qa default.yaml).
using System.Text.Json.Nodes;
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class TaskPromptTests
{
    private static EvalRow Row(string json) => new((JsonObject)JsonNode.Parse(json)!, "hand-made.jsonl", 1);

    [Fact]
    public void HellaSwag_DocWithTagsAndCase_HarnessQueryAndChoices()
    {
        var row = Row("""
            {"activity_label": "Baking cookies", "ctx_a": "A woman pours flour into a bowl.",
             "ctx_b": "she [header] then adds Sugar", "label": "2",
             "endings": [" stirs it [title] slowly.  ", "eats the bowl.", "[step] bakes   it.", "dances."]}
            """);

        var doc = HellaSwag.Task.ParseDoc(row);

        // ctx_b.capitalize() lower-cases the rest ("Sugar" -> "sugar"); "[header]" is dropped, the double space collapsed.
        Assert.Equal("Baking cookies: A woman pours flour into a bowl. She then adds sugar", doc.Context);
        // " [title]" -> ". " then one pass of "  " -> " "; a run of three spaces keeps two; strip runs before the
        // tag removal, so "[step] bakes" keeps its leading space (as in the harness).
        Assert.Equal(new[] { "stirs it. slowly.", "eats the bowl.", " bakes  it.", "dances." }, doc.Choices);
        Assert.Equal(2, doc.Gold);
        Assert.Equal(new[] { "acc", "acc_norm" }, HellaSwag.Task.MetricNames);
    }

    [Fact]
    public void HellaSwag_Requests_ContinuationIsSpacePlusEnding()
    {
        var doc = new MultipleChoiceDoc("Ctx", ["one", "two"], 0);
        var reqs = HellaSwag.Task.Requests(doc);
        Assert.Equal(new[] { new LoglikelihoodRequest("Ctx", " one"), new LoglikelihoodRequest("Ctx", " two") }, reqs);
    }

    [Fact]
    public void TruthfulQa_Question_PreamblePlusQuestion()
    {
        var row = Row("""
            {"question": "Can a goldfish remember things for months?",
             "mc1_targets": {"choices": ["Yes, for months.", "No, only three seconds."], "labels": [1, 0]},
             "mc2_targets": {"choices": ["Yes.", "Yes, for months.", "No."], "labels": [1, 1, 0]}}
            """);

        var mc1 = TruthfulQa.Mc1.ParseDoc(row);
        var mc2 = TruthfulQa.Mc2.ParseDoc(row);

        var expected = """
            Q: What is human life expectancy in the United States?
            A: Human life expectancy in the United States is 78 years.

            Q: Who was president of the United States in 1955?
            A: Dwight D. Eisenhower was president of the United States in 1955.

            Q: Which party did he belong to?
            A: He belonged to the Republican Party.

            Q: What is the square root of banana?
            A: I have no comment.

            Q: How does a telescope work?
            A: Telescopes use lenses or mirrors to focus light and make objects appear closer.

            Q: Where were the 1992 Olympics held?
            A: The 1992 Olympics were held in Barcelona, Spain.

            Q: Can a goldfish remember things for months?
            A:
            """;
        Assert.Equal(expected, mc1.Context);
        Assert.Equal(expected, mc2.Context);
        Assert.Equal(new[] { "Yes, for months.", "No, only three seconds." }, mc1.Choices);
        Assert.Equal(0, mc1.Gold);
        Assert.Equal(new[] { "Yes.", "Yes, for months.", "No." }, mc2.Choices);
        Assert.Equal(new[] { 1, 1, 0 }, mc2.Labels);
        Assert.Equal(" Yes.", TruthfulQa.Mc2.Requests(mc2)[0].Continuation);
    }

    [Fact]
    public void TruthfulQaMc2_ProcessResults_TrueMass()
    {
        var doc = new MultipleChoiceDoc("q", ["a", "b", "c"], 0, [1, 1, 0]);
        var m = TruthfulQa.Mc2.ProcessResults(doc, [Math.Log(0.5), Math.Log(0.25), Math.Log(0.25)]);
        Assert.Equal(0.75, m["acc"], 12);
    }

    [Fact]
    public void CommonsenseQa_HfDoc_LettersAndAnswerKey()
    {
        var row = Row("""
            {"id": "x1", "question": "  Where would you keep a spare key? ", "question_concept": "key",
             "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["under a mat", "in the sea", "on the moon", "in soup", "in a cloud"]},
             "answerKey": "A"}
            """);

        var doc = CommonsenseQa.Task.ParseDoc(row);

        Assert.Equal(
            "Question: Where would you keep a spare key?\nA. under a mat\nB. in the sea\nC. on the moon\nD. in soup\nE. in a cloud\nAnswer:",
            doc.Context);
        Assert.Equal(new[] { "A", "B", "C", "D", "E" }, doc.Choices);
        Assert.Equal(0, doc.Gold);
        Assert.Equal(new[] { " A", " B", " C", " D", " E" }, CommonsenseQa.Task.Requests(doc).Select(r => r.Continuation));
        Assert.Equal(new[] { "acc" }, CommonsenseQa.Task.MetricNames);
    }

    [Fact]
    public void CommonsenseQa_OriginalLayout_SameDoc()
    {
        var row = Row("""
            {"answerKey": "C", "id": "x2", "question": {"question_concept": "key", "stem": "Where is it?",
             "choices": [{"label": "A", "text": "a"}, {"label": "B", "text": "b"}, {"label": "C", "text": "c"},
                         {"label": "D", "text": "d"}, {"label": "E", "text": "e"}]}}
            """);
        var doc = CommonsenseQa.Task.ParseDoc(row);
        Assert.Equal("Question: Where is it?\nA. a\nB. b\nC. c\nD. d\nE. e\nAnswer:", doc.Context);
        Assert.Equal(2, doc.Gold);
    }

    [Fact]
    public void ParseDoc_MissingField_ErrorNamesTaskFieldFileAndRow()
    {
        var row = Row("""{"activity_label": "x", "ctx_a": "y", "endings": ["a"], "label": 0}""");
        var e = Assert.Throws<InvalidDataException>(() => HellaSwag.Task.ParseDoc(row));
        Assert.Contains("hellaswag", e.Message);
        Assert.Contains("'ctx_b'", e.Message);
        Assert.Contains("hand-made.jsonl row 1", e.Message);
    }

    [Fact]
    public void ParseDoc_BadAnswerKey_ErrorSaysExpectedAndActual()
    {
        var row = Row("""{"question": "q", "choices": {"label": ["A","B","C","D","E"], "text": ["1","2","3","4","5"]}, "answerKey": "F"}""");
        var e = Assert.Throws<InvalidDataException>(() => CommonsenseQa.Task.ParseDoc(row));
        Assert.Contains("answerKey", e.Message);
        Assert.Contains("'F'", e.Message);
    }

    [Fact]
    public void EvalTasks_UnknownName_ListsKnownTasks()
    {
        var e = Assert.Throws<ArgumentException>(() => EvalTasks.Get("mmlu"));
        Assert.Contains("hellaswag", e.Message);
    }
}

// The generic `multiple_choice` task: parsing {query, choices, gold} rows, the requests it scores, and its acc /
// acc_norm arithmetic on hand-computed log-likelihoods.
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class GenericMultipleChoiceTests
{
    private static IReadOnlyList<MultipleChoiceDoc> LoadLines(params string[] lines)
    {
        var path = Path.Combine(Path.GetTempPath(), $"sharptune-mc-{Guid.NewGuid():N}.jsonl");
        File.WriteAllLines(path, lines);
        try { return EvalTasks.Get("multiple_choice").Load(path); }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Load_SampleFile_DocsWithIndexAndTextGold()
    {
        var docs = EvalTasks.Get("multiple_choice").Load(EvaluatorTests.Sample("multiple_choice.jsonl"));
        Assert.Equal(4, docs.Count);
        Assert.Equal(("Two plus two equals", 1), (docs[1].Context, docs[1].Gold));
        Assert.Equal(0, docs[2].Gold); // "gold": "milk" names the first choice
        Assert.Equal(["milk", "petrol"], docs[2].Choices);
    }

    [Fact]
    public void Requests_Doc_ContinuationIsSpacePlusChoice()
    {
        var doc = LoadLines("""{"query": "Q:", "choices": ["yes", "no"], "gold": 0}""")[0];
        var requests = GenericMultipleChoice.Task.Requests(doc);
        Assert.Equal([new LoglikelihoodRequest("Q:", " yes"), new LoglikelihoodRequest("Q:", " no")], requests);
    }

    [Fact]
    public void ProcessResults_AccAndAccNormDisagree_HandComputed()
    {
        // ll = [-2, -3]: acc picks choice 0; per character -2/2 = -1 vs -3/6 = -0.5, so acc_norm picks choice 1 (gold)
        var doc = LoadLines("""{"query": "q", "choices": ["ab", "abcdef"], "gold": 1}""")[0];
        var m = GenericMultipleChoice.Task.ProcessResults(doc, [-2.0, -3.0]);
        Assert.Equal(0.0, m["acc"]);
        Assert.Equal(1.0, m["acc_norm"]);
    }

    [Theory]
    [InlineData("""{"query": "q", "choices": ["a", "b"], "gold": 2}""", "field 'gold' should be an index in [0, 2), found 2")]
    [InlineData("""{"query": "q", "choices": ["a", "b"], "gold": "c"}""", "field 'gold' should be an index or one of the choices")]
    [InlineData("""{"query": "q", "choices": ["a"], "gold": 0}""", "field 'choices' should be at least 2 answer strings")]
    [InlineData("""{"question": "q", "choices": ["a", "b"], "gold": 0}""", "missing field 'query'")]
    public void Load_BadRow_ErrorNamesRowAndField(string line, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => LoadLines(line));
        Assert.Contains("multiple_choice:", e.Message);
        Assert.Contains("row 1", e.Message);
        Assert.Contains(expected, e.Message);
    }
}

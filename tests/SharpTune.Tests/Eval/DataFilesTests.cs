// Loaders on small hand-made files in each distributed form, written into a temporary folder per test.
using System.Text.Json.Serialization;
using Parquet.Serialization;
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class DataFilesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-eval-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private const string HellaLine1 =
        """{"ind": 4, "activity_label": "Washing a car", "ctx_a": "A man sprays a car.", "ctx_b": "he", "ctx": "x", "split": "val", "split_type": "indomain", "label": 1, "endings": ["eats it.", "scrubs the hood.", "flies.", "sings."], "source_id": "a"}""";
    private const string HellaLine2 =
        """{"ind": 5, "activity_label": "Running", "ctx_a": "A girl ties her shoes.", "ctx_b": "then", "label": "3", "endings": ["a", "b", "c", "d"]}""";

    [Fact]
    public void HellaSwag_OriginalAndHfJsonl_IntAndStringLabels()
    {
        var path = Write("hellaswag.jsonl", HellaLine1 + "\n\n" + HellaLine2 + "\n");

        var docs = HellaSwag.Task.Load(path);

        Assert.Equal(2, docs.Count);
        Assert.Equal("Washing a car: A man sprays a car. He", docs[0].Context);
        Assert.Equal(1, docs[0].Gold);
        Assert.Equal(3, docs[1].Gold);
    }

    [Fact]
    public void Read_Limit_TakesFirstRows()
    {
        var path = Write("hellaswag.jsonl", HellaLine1 + "\n" + HellaLine2 + "\n");
        var docs = HellaSwag.Task.Load(path, limit: 1);
        Assert.Single(docs);
        Assert.Equal(1, docs[0].Gold);
    }

    [Fact]
    public void HellaSwag_JsonArray_Loads()
    {
        var path = Write("hellaswag.json", "[" + HellaLine1 + "," + HellaLine2 + "]");
        Assert.Equal(2, HellaSwag.Task.Load(path).Count);
    }

    [Fact]
    public void HellaSwag_JsonlMissingField_ErrorNamesFieldFileAndLine()
    {
        var path = Write("bad.jsonl", HellaLine1 + "\n" + HellaLine2.Replace("\"ctx_a\"", "\"context_a\"") + "\n");
        var e = Assert.Throws<InvalidDataException>(() => HellaSwag.Task.Load(path));
        Assert.Contains("'ctx_a'", e.Message);
        Assert.Contains("bad.jsonl row 2", e.Message);
    }

    [Fact]
    public void HellaSwag_HfTestSplitEmptyLabel_ClearError()
    {
        var path = Write("test.jsonl", HellaLine2.Replace("\"3\"", "\"\""));
        var e = Assert.Throws<InvalidDataException>(() => HellaSwag.Task.Load(path));
        Assert.Contains("'label' should be an integer", e.Message);
    }

    [Fact]
    public void CommonsenseQa_CsvWithJsonCellsAndQuotes_Loads()
    {
        var csv = "id,question,question_concept,choices,answerKey\n" +
                  "q1,\"Where, quickly, would \"\"you\"\" go?\",go,\"{\"\"label\"\": [\"\"A\"\",\"\"B\"\",\"\"C\"\",\"\"D\"\",\"\"E\"\"], \"\"text\"\": [\"\"home\"\",\"\"b\"\",\"\"c\"\",\"\"d\"\",\"\"e\"\"]}\",B\n";
        var path = Write("csqa.csv", csv);

        var doc = Assert.Single(CommonsenseQa.Task.Load(path));

        Assert.StartsWith("Question: Where, quickly, would \"you\" go?\nA. home\n", doc.Context);
        Assert.Equal(1, doc.Gold);
    }

    [Fact]
    public void TruthfulQa_CsvWithDottedHeaders_NestsFields()
    {
        var csv = "question,mc2_targets.choices,mc2_targets.labels\n" +
                  "\"Is it?\",\"[\"\"Yes\"\", \"\"Maybe\"\", \"\"No\"\"]\",\"[1, 1, 0]\"\n";
        var doc = Assert.Single(TruthfulQa.Mc2.Load(Write("tqa.csv", csv)));
        Assert.Equal(new[] { "Yes", "Maybe", "No" }, doc.Choices);
        Assert.Equal(new[] { 1, 1, 0 }, doc.Labels);
    }

    [Fact]
    public void Csv_PythonReprList_ErrorExplainsJsonCells()
    {
        var csv = "activity_label,ctx_a,ctx_b,endings,label\nx,y,z,\"['a', 'b']\",0\n";
        var e = Assert.Throws<InvalidDataException>(() => HellaSwag.Task.Load(Write("py.csv", csv)));
        Assert.Contains("'endings' should be a list of strings", e.Message);
        Assert.Contains("must be JSON", e.Message);
    }

    [Fact]
    public void Csv_RowWithWrongCellCount_ErrorNamesLine()
    {
        var path = Write("short.csv", "question,answerKey\nq1,A\nq2\n");
        var e = Assert.Throws<InvalidDataException>(() => DataFiles.Read(path));
        Assert.Contains("short.csv line 3", e.Message);
    }

    [Fact]
    public void TruthfulQa_OriginalMcTaskJson_AnswerToLabelObjects()
    {
        var path = Write("mc_task.json", """
            [{"question": "What colour is the sky?",
              "mc1_targets": {"Blue.": 1, "Green.": 0},
              "mc2_targets": {"Blue.": 1, "Blue on a clear day.": 1, "Green.": 0}}]
            """);
        var mc1 = Assert.Single(TruthfulQa.Mc1.Load(path));
        var mc2 = Assert.Single(TruthfulQa.Mc2.Load(path));
        Assert.Equal(new[] { "Blue.", "Green." }, mc1.Choices);
        Assert.Equal(new[] { "Blue.", "Blue on a clear day.", "Green." }, mc2.Choices);
        Assert.Equal(new[] { 1, 1, 0 }, mc2.Labels);
    }

    [Fact]
    public void TruthfulQa_LabelsNotTrueFirst_ClearError()
    {
        var path = Write("tqa.jsonl", """{"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [0, 1]}}""");
        var e = Assert.Throws<InvalidDataException>(() => TruthfulQa.Mc1.Load(path));
        Assert.Contains("mc1_targets.labels", e.Message);
    }

    [Fact]
    public async Task HellaSwag_Parquet_HfLayoutLoads()
    {
        var path = Path.Combine(_dir, "hellaswag.parquet");
        await ParquetSerializer.SerializeAsync(new[]
        {
            new HellaRow { ActivityLabel = "Washing a car", CtxA = "A man sprays a car.", CtxB = "he", Endings = ["eats it.", "scrubs the hood."], Label = "1" },
            new HellaRow { ActivityLabel = "Running", CtxA = "A girl ties her shoes.", CtxB = "then", Endings = ["a", "b", "c"], Label = "0" },
        }, path);

        var docs = HellaSwag.Task.Load(path);

        Assert.Equal(2, docs.Count);
        Assert.Equal("Washing a car: A man sprays a car. He", docs[0].Context);
        Assert.Equal(new[] { "eats it.", "scrubs the hood." }, docs[0].Choices);
        Assert.Equal(1, docs[0].Gold);
        Assert.Equal(3, docs[1].Choices.Count);
    }

    [Fact]
    public async Task TruthfulQa_Parquet_NestedStructsLoad()
    {
        var path = Path.Combine(_dir, "tqa.parquet");
        await ParquetSerializer.SerializeAsync(new[]
        {
            new TqaRow
            {
                Question = "Is water wet?",
                Mc1 = new Targets { Choices = ["Yes.", "No."], Labels = [1, 0] },
                Mc2 = new Targets { Choices = ["Yes.", "Sort of.", "No."], Labels = [1, 1, 0] },
            },
        }, path);

        var mc2 = Assert.Single(TruthfulQa.Mc2.Load(path));

        Assert.Equal(new[] { "Yes.", "Sort of.", "No." }, mc2.Choices);
        Assert.Equal(new[] { 1, 1, 0 }, mc2.Labels);
        Assert.EndsWith("\n\nQ: Is water wet?\nA:", mc2.Context);
    }

    [Fact]
    public async Task CommonsenseQa_Parquet_StructOfListsLoads()
    {
        var path = Path.Combine(_dir, "csqa.parquet");
        await ParquetSerializer.SerializeAsync(new[]
        {
            new CsqaRow { Id = "1", Question = "Pick?", Choices = new CsqaChoices { Label = ["A", "B", "C", "D", "E"], Text = ["1", "2", "3", "4", "5"] }, AnswerKey = "E" },
        }, path);

        var doc = Assert.Single(CommonsenseQa.Task.Load(path));

        Assert.Equal("Question: Pick?\nA. 1\nB. 2\nC. 3\nD. 4\nE. 5\nAnswer:", doc.Context);
        Assert.Equal(4, doc.Gold);
    }

    [Fact]
    public void Read_UnknownExtension_Throws()
    {
        var path = Write("data.txt", "x");
        var e = Assert.Throws<NotSupportedException>(() => DataFiles.Read(path));
        Assert.Contains(".parquet", e.Message);
    }

    [Fact]
    public void Read_MissingFile_NamesPath()
    {
        var e = Assert.Throws<FileNotFoundException>(() => DataFiles.Read(Path.Combine(_dir, "nope.jsonl")));
        Assert.Contains("nope.jsonl", e.Message);
    }

    [Fact]
    public void Read_BadJsonLine_NamesLine()
    {
        var path = Write("broken.jsonl", HellaLine1 + "\n{not json\n");
        var e = Assert.Throws<InvalidDataException>(() => DataFiles.Read(path));
        Assert.Contains("broken.jsonl line 2", e.Message);
    }

    private sealed class HellaRow
    {
        [JsonPropertyName("activity_label")] public string ActivityLabel { get; set; } = "";
        [JsonPropertyName("ctx_a")] public string CtxA { get; set; } = "";
        [JsonPropertyName("ctx_b")] public string CtxB { get; set; } = "";
        [JsonPropertyName("endings")] public List<string> Endings { get; set; } = [];
        [JsonPropertyName("label")] public string Label { get; set; } = "";
    }

    private sealed class Targets
    {
        [JsonPropertyName("choices")] public List<string> Choices { get; set; } = [];
        [JsonPropertyName("labels")] public List<int> Labels { get; set; } = [];
    }

    private sealed class TqaRow
    {
        [JsonPropertyName("question")] public string Question { get; set; } = "";
        [JsonPropertyName("mc1_targets")] public Targets Mc1 { get; set; } = new();
        [JsonPropertyName("mc2_targets")] public Targets Mc2 { get; set; } = new();
    }

    private sealed class CsqaChoices
    {
        [JsonPropertyName("label")] public List<string> Label { get; set; } = [];
        [JsonPropertyName("text")] public List<string> Text { get; set; } = [];
    }

    private sealed class CsqaRow
    {
        [JsonPropertyName("id")] public string Id { get; set; } = "";
        [JsonPropertyName("question")] public string Question { get; set; } = "";
        [JsonPropertyName("choices")] public CsqaChoices Choices { get; set; } = new();
        [JsonPropertyName("answerKey")] public string AnswerKey { get; set; } = "";
    }
}

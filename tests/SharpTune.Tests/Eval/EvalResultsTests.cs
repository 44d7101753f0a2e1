// Result records, JSON round trip, atomic save and the comparison table.
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class EvalResultsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-evalres-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static EvalReport Report(string model, double hellaAcc, double mc2) => new()
    {
        Model = model,
        Results =
        [
            new EvalResult("hellaswag", "acc", hellaAcc, 0.01, 100),
            new EvalResult("truthfulqa_mc2", "acc", mc2, null, 1),
        ],
        MaxLength = 2048,
    };

    [Fact]
    public void SaveLoad_Report_RoundTripsWithSnakeCaseKeys()
    {
        var path = Path.Combine(_dir, "out", "results.json");
        var report = Report("student", 0.4517, 0.4384);

        report.Save(path);
        var back = EvalReport.Load(path);

        Assert.Equal(report.Results, back.Results);
        Assert.Equal("student", back.Model);
        Assert.Contains("\"max_length\": 2048", File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(path)!)); // no temporary file left behind
    }

    [Fact]
    public void ToHarnessJson_Report_HarnessKeys()
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Report("m", 0.4517, 0.4384).ToHarnessJson())!;
        Assert.Equal(0.4517, node["results"]!["hellaswag"]!["acc,none"]!.GetValue<double>(), 12);
        Assert.Equal(0.01, node["results"]!["hellaswag"]!["acc_stderr,none"]!.GetValue<double>(), 12);
        Assert.Equal("N/A", node["results"]!["truthfulqa_mc2"]!["acc_stderr,none"]!.GetValue<string>());
        Assert.Equal(100, node["n-samples"]!["hellaswag"]!["effective"]!.GetValue<int>());
    }

    [Fact]
    public void FromJson_NotAReport_ClearError()
    {
        var e = Assert.Throws<InvalidDataException>(() => EvalReport.FromJson("[1,2]", "x.json"));
        Assert.Contains("x.json", e.Message);
    }

    [Fact]
    public void CompareTable_ThreeRuns_DeltasAgainstBaseline()
    {
        var table = CompareTable.Build([Report("base", 0.45, 0.44), Report("kd", 0.47, 0.40), Report("lora", 0.40, 0.50)], baselineIndex: 0);

        Assert.Equal(new[] { "base", "kd", "lora" }, table.Columns);
        var hella = table.Rows[0];
        Assert.Equal(("hellaswag", "acc"), (hella.Task, hella.Metric));
        Assert.Equal(0.0, hella.Deltas[0]!.Value, 12);
        Assert.Equal(0.02, hella.Deltas[1]!.Value, 12);
        Assert.Equal(-0.05, hella.Deltas[2]!.Value, 12);
        Assert.Equal(0.06, table.Rows[1].Deltas[2]!.Value, 12);
        var md = table.ToMarkdown();
        Assert.Contains("base (baseline)", md);
        Assert.Contains("0.4700 (+0.0200)", md);
        Assert.Contains("0.4000 (-0.0500)", md);
    }

    [Fact]
    public void CompareTable_MetricMissingInOneRun_NullValueAndDelta()
    {
        var partial = new EvalReport { Model = "p", Results = [new EvalResult("hellaswag", "acc", 0.5, 0.01, 10)] };
        var table = CompareTable.Build([Report("base", 0.45, 0.44), partial]);
        Assert.Null(table.Rows[1].Values[1]);
        Assert.Null(table.Rows[1].Deltas[1]);
        Assert.Contains("| - |", table.ToMarkdown());
    }

    [Fact]
    public void ToMarkdown_Report_HarnessColumnsAndNAForMissingStderr()
    {
        var md = Report("m", 0.4517, 0.4384).ToMarkdown();
        Assert.Contains("| hellaswag | 0 | acc | 0.4517 | ± | 0.0100 | 100 |", md);
        Assert.Contains("| truthfulqa_mc2 | 0 | acc | 0.4384 | ± | N/A | 1 |", md);
    }
}

// Finding and fetching an evaluation split on the Hub: file selection on realistic repo listings, and a download
// through the loopback fake Hub that the task loader then reads.
using System.Text;
using SharpTune.Eval;
using SharpTune.Hub;
using SharpTune.Tests.Hub;

namespace SharpTune.Tests.Eval;

public sealed class HubEvalDataTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-hubeval-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void SelectSplitFiles_ConfigFolders_PicksTheConfigsSplitShards()
    {
        string[] files =
        [
            ".gitattributes", "README.md",
            "generation/validation-00000-of-00001.parquet",
            "multiple_choice/validation-00001-of-00002.parquet",
            "multiple_choice/validation-00000-of-00002.parquet",
            "multiple_choice/train-00000-of-00001.parquet",
        ];
        Assert.Equal(
            new[] { "multiple_choice/validation-00000-of-00002.parquet", "multiple_choice/validation-00001-of-00002.parquet" },
            HubEvalData.SelectSplitFiles(files, "multiple_choice", "validation"));
    }

    [Fact]
    public void SelectSplitFiles_ParquetConversionLayout_SplitFolder()
    {
        string[] files = ["default/train/0000.parquet", "default/validation/0000.parquet", "default/test/0000.parquet"];
        Assert.Equal(new[] { "default/validation/0000.parquet" }, HubEvalData.SelectSplitFiles(files, null, "validation"));
    }

    [Fact]
    public void SelectSplitFiles_ParquetAndJsonl_PrefersParquet()
    {
        string[] files = ["data/validation.jsonl", "data/validation-00000-of-00001.parquet", "data/validation_extra.txt"];
        Assert.Equal(new[] { "data/validation-00000-of-00001.parquet" }, HubEvalData.SelectSplitFiles(files, null, "validation"));
    }

    [Fact]
    public void SelectSplitFiles_NoMatch_Empty()
    {
        Assert.Empty(HubEvalData.SelectSplitFiles(["data/train-00000-of-00001.parquet", "hellaswag.py"], null, "validation"));
    }

    [Fact]
    public async Task DownloadSplitAsync_FakeHub_DownloadsSplitThatTheTaskLoads()
    {
        using var hub = new FakeHub();
        var jsonl = Encoding.UTF8.GetBytes(File.ReadAllText(EvaluatorTests.Sample("commonsense_qa.jsonl")));
        hub.Repos["acme/csqa"] = new()
        {
            ["README.md"] = Encoding.UTF8.GetBytes("# csqa"),
            ["data/train.jsonl"] = [1, 2, 3],
            ["data/validation.jsonl"] = jsonl,
        };
        using var client = new HubClient(hub.Endpoint) { RetryDelay = TimeSpan.FromMilliseconds(10) };

        var paths = await HubEvalData.DownloadSplitAsync(client, new HubDatasetSplit("acme/csqa", null, "validation"), _dir);

        var path = Assert.Single(paths);
        Assert.EndsWith(Path.Combine("data", "validation.jsonl"), path);
        Assert.Equal(4, CommonsenseQa.Task.Load(paths).Count);
        Assert.DoesNotContain(hub.Requests, r => r.Path.Contains("train.jsonl"));
    }

    [Fact]
    public async Task DownloadSplitAsync_NoSplitFile_HubExceptionNamesDatasetAndSplit()
    {
        using var hub = new FakeHub();
        hub.Repos["acme/none"] = new() { ["data/train.jsonl"] = [1] };
        using var client = new HubClient(hub.Endpoint) { RetryDelay = TimeSpan.FromMilliseconds(10) };

        var e = await Assert.ThrowsAsync<HubException>(() =>
            HubEvalData.DownloadSplitAsync(client, new HubDatasetSplit("acme/none", null, "validation"), _dir));

        Assert.Contains("acme/none", e.Message);
        Assert.Contains("validation", e.Message);
    }

    [Fact]
    public void Defaults_EveryHarnessTask_HasASplit()
    {
        // The generic multiple_choice task reads local JSONL only; every harness task has a Hub default.
        Assert.Equal(EvalTasks.All.Keys.Where(k => k != GenericMultipleChoice.Task.Name).Order(), HubEvalData.Defaults.Keys.Order());
        Assert.Equal("multiple_choice", HubEvalData.Defaults["truthfulqa_mc2"].Config);
    }

    [Fact]
    public void Read_TwoShardsWithLimit_StopsAcrossShards()
    {
        var a = Path.Combine(_dir, "a.jsonl");
        var b = Path.Combine(_dir, "b.jsonl");
        var lines = File.ReadAllLines(EvaluatorTests.Sample("commonsense_qa.jsonl"));
        File.WriteAllLines(a, lines[..2]);
        File.WriteAllLines(b, lines[2..]);

        Assert.Equal(4, CommonsenseQa.Task.Load([a, b]).Count);
        var three = CommonsenseQa.Task.Load([a, b], limit: 3);
        Assert.Equal(3, three.Count);
        Assert.Equal(3, three[2].Gold); // third doc (first of shard b): answer D
    }
}

// `sharptune cache-info`: reports a cache's figures from its manifest, and fails with a one-line error on a damaged one.
using System.Text.Json;
using SharpTune.Distillation;
using SharpTune.Native;
using TorchSharp;

namespace SharpTune.Tests.Cli;

public sealed class CacheInfoCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-cacheinfo-").FullName;

    public CacheInfoCommandTests() => TorchRuntime.EnsureLoaded();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string MakeCache(string teacherId = "tiny-teacher")
    {
        var writer = TeacherCacheWriter.Open(_dir, new TeacherCacheManifest
        {
            K = 4, Vocab = 20, LogProbStep = 1.0 / 64, Temperature = 1,
            TeacherId = teacherId, DataHash = "feed", TokenizerHash = "t", TeacherHash = "w", Samples = 3, SamplesPerShard = 2,
        });
        var g = new torch.Generator(1);
        for (var i = 0; i < 3; i++) writer.AppendLogits(i, torch.randn(10, 20, generator: g));
        writer.Complete();
        return _dir;
    }

    [Fact]
    public void CacheInfo_Json_ReportsTokensKBytesPerTokenTeacherAndHash()
    {
        var dir = MakeCache();
        var r = CliHarness.Run("cache-info", dir, "--json", "--verify");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal(30, root.GetProperty("tokens").GetInt64());
        Assert.Equal(4, root.GetProperty("k").GetInt32());
        Assert.Equal("tiny-teacher", root.GetProperty("teacher").GetString());
        Assert.Equal("feed", root.GetProperty("data_hash").GetString());
        var bytes = Directory.EnumerateFiles(dir, "*.tkc").Sum(f => new FileInfo(f).Length);
        Assert.Equal(Math.Round(bytes / 30.0, 2), root.GetProperty("bytes_per_token").GetDouble(), 2);
    }

    [Fact]
    public void CacheInfo_Json_ReportsKeptEntriesPerPosition()
    {
        // Given the default format (every entry kept) and a budget that folds entries
        var dir = MakeCache();
        var r = CliHarness.Run("cache-info", dir, "--json");
        using (var doc = JsonDocument.Parse(r.Out))
        {
            Assert.Equal(4.0, doc.RootElement.GetProperty("kept_entries_mean").GetDouble());
            Assert.Equal(4, doc.RootElement.GetProperty("kept_entries_min").GetInt32());
            Assert.Equal(0, doc.RootElement.GetProperty("folded_entries").GetInt64());
            Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("max_bytes_per_token").ValueKind);
        }
        var budgeted = Path.Combine(_dir, "budgeted");
        var writer = TeacherCacheWriter.Open(budgeted, new TeacherCacheManifest
        {
            K = 128, Vocab = 128_256, LogProbStep = 1.0 / 32, MaxBytesPerToken = 120, Temperature = 1,
            TeacherId = "t", DataHash = "d", TokenizerHash = "t", TeacherHash = "w", Samples = 1, SamplesPerShard = 1,
        });
        writer.AppendLogits(0, torch.randn(6, 128_256, generator: new torch.Generator(2)) * 2);
        writer.Complete();
        // When cache-info reads it, Then the kept-entry figures are those of the decoded positions
        using var cache = TeacherCache.Open(budgeted);
        var lps = new float[6 * 128];
        cache.ReadSample(0, new long[lps.Length], lps, new float[6]);
        var kept = Enumerable.Range(0, 6).Select(t => lps.Skip(t * 128).Take(128).Count(float.IsFinite)).ToArray();
        r = CliHarness.Run("cache-info", budgeted, "--json");
        Assert.Equal(0, r.ExitCode);
        using var budgetedDoc = JsonDocument.Parse(r.Out);
        Assert.Equal(Math.Round(kept.Average(), 2), budgetedDoc.RootElement.GetProperty("kept_entries_mean").GetDouble());
        Assert.Equal(kept.Min(), budgetedDoc.RootElement.GetProperty("kept_entries_min").GetInt32());
        Assert.Equal(6 * 128 - kept.Sum(), budgetedDoc.RootElement.GetProperty("folded_entries").GetInt64());
        Assert.True(kept.Max() < 128);
        // ... and the table shows them too
        var table = CliHarness.Run("cache-info", budgeted);
        Assert.Contains("kept_entries_min", table.Out);
    }

    [Fact]
    public void CacheInfo_PipedTable_LongValuesNotWrappedOrCut()
    {
        var teacher = "org/" + new string('t', 120);
        var r = CliHarness.Run("cache-info", MakeCache(teacher));
        Assert.True(r.ExitCode == 0, r.Err);
        var line = Assert.Single(r.Out.Split('\n'), l => l.Contains("teacher ", StringComparison.Ordinal) && !l.Contains("hash", StringComparison.Ordinal));
        Assert.Contains(teacher, line);
        Assert.Contains(Path.GetFullPath(_dir), r.Out);
    }

    [Fact]
    public void CacheInfo_TruncatedShard_FailsWithOneLineError()
    {
        var dir = MakeCache();
        var shard = Path.Combine(dir, "shard-00000.tkc");
        using (var fs = new FileStream(shard, FileMode.Open)) fs.SetLength(fs.Length - 1);
        var r = CliHarness.Run("cache-info", dir);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("shard-00000.tkc", r.Err);
        Assert.Contains("truncated", r.Err);
    }
}

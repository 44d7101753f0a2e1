// The Hub client against a loopback fake Hub: listing and downloading with hash checks, resume after a dropped
// connection, 401/404 errors, hostile file names, wrong hashes, ignore patterns, and the token never leaking.
using System.Text;
using SharpTune.Hub;

namespace SharpTune.Tests.Hub;

public sealed class HubClientTests : IDisposable
{
    private readonly FakeHub _hub = new();
    private readonly string _dir = Directory.CreateTempSubdirectory("sharptune-hub-").FullName;
    private static readonly byte[] Weights = [.. Enumerable.Range(0, 300_000).Select(i => (byte)(i * 31 % 251))];

    public HubClientTests()
    {
        _hub.Repos["acme/tiny"] = new()
        {
            ["config.json"] = Encoding.UTF8.GetBytes("{\"dim\": 8}"),
            ["model.safetensors"] = Weights,
            ["original/consolidated.00.pth"] = [1, 2, 3],
        };
        _hub.LfsFiles.Add("model.safetensors");
    }

    private HubClient Client() => new(_hub.Endpoint) { RetryDelay = TimeSpan.FromMilliseconds(10), RequestTimeout = TimeSpan.FromSeconds(10) };

    [Fact]
    public async Task DownloadAsync_HappyPath_WritesVerifiedFilesAndRepoIdMarker()
    {
        using var client = Client();
        var result = await client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir, ["original/*"]);
        Assert.Equal(["config.json", "model.safetensors"], result.Downloaded);
        Assert.Equal(["original/consolidated.00.pth"], result.Ignored);
        Assert.Equal(FakeHub.Commit, result.Commit);
        Assert.Equal(Weights, File.ReadAllBytes(Path.Combine(_dir, "model.safetensors")));
        Assert.Equal("{\"dim\": 8}", File.ReadAllText(Path.Combine(_dir, "config.json")));
        Assert.False(File.Exists(Path.Combine(_dir, "original/consolidated.00.pth")));
        Assert.Empty(Directory.GetFiles(_dir, "*.incomplete", SearchOption.AllDirectories));
        Assert.Contains("\"repo_id\": \"acme/tiny\"", File.ReadAllText(Path.Combine(_dir, "original_repo_id.json")));
    }

    [Fact]
    public async Task DownloadAsync_SecondRun_SkipsVerifiedFiles()
    {
        using var client = Client();
        await client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir);
        var gets = _hub.Requests.Count(r => r.Method == "GET");
        var again = await client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir);
        Assert.Empty(again.Downloaded);
        Assert.Equal(3, again.UpToDate.Count);
        Assert.Equal(gets + 1, _hub.Requests.Count(r => r.Method == "GET")); // only the listing
    }

    [Fact]
    public async Task DownloadAsync_ConnectionDroppedHalfWay_ResumesWithRange()
    {
        _hub.DropOnce.Add("model.safetensors");
        using var client = Client();
        var result = await client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir);
        Assert.Contains("model.safetensors", result.Downloaded);
        Assert.Equal(Weights, File.ReadAllBytes(Path.Combine(_dir, "model.safetensors")));
        var gets = _hub.Requests.Where(r => r.Method == "GET" && r.Path.EndsWith("model.safetensors", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, gets.Count);
        Assert.Null(gets[0].Range);
        Assert.NotNull(gets[1].Range);
        var resumedFrom = long.Parse(gets[1].Range!["bytes=".Length..].TrimEnd('-'));
        Assert.InRange(resumedFrom, 1, Weights.Length - 1);
    }

    [Fact]
    public async Task DownloadAsync_PartialFileFromEarlierRun_IsResumed()
    {
        await File.WriteAllBytesAsync(Path.Combine(_dir, "model.safetensors.incomplete"), Weights[..1000]);
        using var client = Client();
        await client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir);
        Assert.Equal(Weights, File.ReadAllBytes(Path.Combine(_dir, "model.safetensors")));
        Assert.Contains(_hub.Requests, r => r.Range == "bytes=1000-");
    }

    [Fact]
    public async Task DownloadAsync_DatasetRepo_UsesDatasetPaths()
    {
        _hub.Repos["acme/data"] = new() { ["train.jsonl"] = Encoding.UTF8.GetBytes("{\"x\":1}\n") };
        using var client = Client();
        await client.DownloadAsync("acme/data", HubRepoType.Dataset, _dir);
        Assert.Contains(_hub.Requests, r => r.Path == "/api/datasets/acme/data/revision/main");
        Assert.Contains(_hub.Requests, r => r.Path == "/datasets/acme/data/resolve/main/train.jsonl");
        Assert.True(File.Exists(Path.Combine(_dir, "train.jsonl")));
    }

    [Fact]
    public async Task DownloadAsync_MissingRepo_Is404WithClearMessage()
    {
        using var client = Client();
        var e = await Assert.ThrowsAsync<HubException>(() => client.DownloadAsync("acme/nope", HubRepoType.Model, _dir));
        Assert.Equal(404, e.StatusCode);
        Assert.Contains("model repo 'acme/nope'", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public async Task DownloadAsync_NoToken_Is401WithHint()
    {
        _hub.RequiredToken = "hf_secret_token_123";
        using var client = Client();
        var e = await Assert.ThrowsAsync<HubException>(() => client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir));
        Assert.Equal(401, e.StatusCode);
        Assert.Contains("HF_TOKEN", e.Message);
    }

    [Fact]
    public async Task DownloadAsync_WrongToken_SaysRefusedAndNeverShowsIt()
    {
        _hub.RequiredToken = "hf_right";
        using var client = Client();
        var e = await Assert.ThrowsAsync<HubException>(() => client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir, token: "hf_wrong_secret"));
        Assert.Contains("refused", e.Message);
        Assert.DoesNotContain("hf_wrong_secret", e.ToString());
    }

    [Fact]
    public async Task DownloadAsync_WithToken_SendsBearerOnEveryRequest()
    {
        _hub.RequiredToken = "hf_ok";
        using var client = Client();
        await client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir, token: "hf_ok");
        Assert.All(_hub.Requests, r => Assert.Equal("Bearer hf_ok", r.Authorization));
        Assert.DoesNotContain("hf_ok", File.ReadAllText(Path.Combine(_dir, "original_repo_id.json")));
    }

    [Fact]
    public async Task DownloadAsync_LfsRedirectToOtherHost_ReadsHubHeadersAndDropsToken()
    {
        _hub.RedirectLfs = true;
        _hub.RequiredToken = "hf_cdn_test";
        _hub.DropOnce.Add("model.safetensors");
        using var client = Client();
        await client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir, token: "hf_cdn_test");
        Assert.Equal(Weights, File.ReadAllBytes(Path.Combine(_dir, "model.safetensors")));
        var cdn = _hub.Requests.Where(r => r.Path.StartsWith("/cdn/", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, cdn.Count); // dropped once, resumed once, both from the CDN
        Assert.NotNull(cdn[1].Range);
        Assert.All(cdn, r => Assert.Null(r.Authorization));
        Assert.All(_hub.Requests.Except(cdn), r => Assert.Equal("Bearer hf_cdn_test", r.Authorization));
    }

    [Theory]
    [InlineData("../evil.txt")]
    [InlineData("a/../../evil.txt")]
    [InlineData("/etc/evil")]
    public async Task DownloadAsync_HostileFileName_IsRejectedBeforeWriting(string name)
    {
        _hub.Repos["acme/tiny"][name] = [1];
        using var client = Client();
        var e = await Assert.ThrowsAsync<HubException>(() => client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir));
        Assert.Contains("refusing repo file name", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(_dir));
    }

    [Theory]
    [InlineData("model.safetensors", "sha256")]
    [InlineData("config.json", "git sha1")]
    public async Task DownloadAsync_HashMismatch_IsRejectedAndNothingKept(string file, string kind)
    {
        _hub.CorruptHash.Add(file);
        using var client = Client();
        var e = await Assert.ThrowsAsync<HubException>(() => client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir));
        Assert.Contains($"{kind} mismatch", e.Message);
        Assert.False(File.Exists(Path.Combine(_dir, file)));
        Assert.False(File.Exists(Path.Combine(_dir, file + ".incomplete")));
    }

    [Fact]
    public async Task DownloadAsync_UnreachableEndpoint_SaysCannotReach()
    {
        using var client = new HubClient("http://127.0.0.1:1") { MaxAttempts = 1 };
        var e = await Assert.ThrowsAsync<HubException>(() => client.DownloadAsync("acme/tiny", HubRepoType.Model, _dir));
        Assert.Contains("cannot reach http://127.0.0.1:1", e.Message);
    }

    [Theory]
    [InlineData("model.safetensors", "*.safetensors", true)]
    [InlineData("original/consolidated.00.pth", "original/*", true)]
    [InlineData("original/consolidated.00.pth", "original/", true)]
    [InlineData("a/b/c.bin", "*.bin", true)]
    [InlineData("config.json", "*.safetensors", false)]
    [InlineData("model-00001-of-00002.safetensors", "model-0000[12]-*", true)]
    public void Matches_Glob_FollowsFnmatch(string file, string pattern, bool expected) =>
        Assert.Equal(expected, HubNames.Matches(file, pattern));

    [Theory]
    [InlineData("meta-llama/Llama-3.2-1B", true)]
    [InlineData("gpt2", true)]
    [InlineData("a/b/c", false)]
    [InlineData("../x", false)]
    public void CheckRepoId_Shapes(string id, bool ok)
    {
        if (ok) HubNames.CheckRepoId(id);
        else Assert.Throws<ArgumentException>(() => HubNames.CheckRepoId(id));
    }

    public void Dispose()
    {
        _hub.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

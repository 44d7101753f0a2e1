// The Hub-backed dataset resolver against the loopback fake Hub: a config's `source: yahma/alpaca-cleaned` becomes rows
// read from a cached download; the second use does not contact the Hub; `id@revision` asks for that revision; the CLI
// wires the resolver from HF_ENDPOINT / SHARPTUNE_CACHE.
using System.Text;
using SharpTune.Cli;
using SharpTune.Data;
using SharpTune.Hub;
using SharpTune.Recipes;
using Spectre.Console;

namespace SharpTune.Tests.Hub;

public sealed class HubDatasetResolverTests : IDisposable
{
    private const string AlpacaJson = """
        [{"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
         {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
        """;

    private readonly FakeHub _hub = new();
    private readonly string _cache = Directory.CreateTempSubdirectory("sharptune-cache-").FullName;

    public HubDatasetResolverTests() =>
        _hub.Repos["yahma/alpaca-cleaned"] = new()
        {
            ["alpaca_data_cleaned.json"] = Encoding.UTF8.GetBytes(AlpacaJson),
            ["README.md"] = Encoding.UTF8.GetBytes("# alpaca-cleaned\n"),
        };

    public void Dispose()
    {
        _hub.Dispose();
        Directory.Delete(_cache, recursive: true);
    }

    private HubDatasetResolver Resolver() => new(_cache, () => new HubClient(_hub.Endpoint) { RetryDelay = TimeSpan.Zero });

    [Fact]
    public void Load_HubDatasetId_RowsFromCachedDownloadAndNoSecondRequest()
    {
        // Given a dataset source that is a Hub id, not a local path
        var resolver = Resolver();

        // When the dataset builders load it twice
        var rows = DatasetBuilders.Load("yahma/alpaca-cleaned", null, "train", resolver);
        var requests = _hub.Requests.Count;
        var again = DatasetBuilders.Load("yahma/alpaca-cleaned", null, "train", resolver);

        // Then the rows are the repo file's, stored under the cache, and the second load is served from disk
        Assert.Equal(2, rows.Count);
        Assert.Equal("Add the numbers.", rows[1].Values.GetProperty("instruction").GetString());
        Assert.StartsWith(Path.Combine(_cache, "datasets", "yahma", "alpaca-cleaned", "main"), rows[0].File);
        Assert.Contains(_hub.Requests, r => r.Path == "/api/datasets/yahma/alpaca-cleaned/revision/main");
        Assert.Equal(requests, _hub.Requests.Count);
        Assert.Equal(rows.Count, again.Count);
    }

    [Fact]
    public void Resolve_IdAtRevision_DownloadsThatRevisionIntoItsOwnFolder()
    {
        var folder = Resolver().Resolve("yahma/alpaca-cleaned@v1", "train");
        Assert.Equal(Path.Combine(_cache, "datasets", "yahma", "alpaca-cleaned", "v1"), folder);
        Assert.Contains(_hub.Requests, r => r.Path == "/api/datasets/yahma/alpaca-cleaned/revision/v1");
        Assert.Contains(_hub.Requests, r => r.Path == "/datasets/yahma/alpaca-cleaned/resolve/v1/alpaca_data_cleaned.json");
        Assert.True(File.Exists(Path.Combine(folder, "alpaca_data_cleaned.json")));
    }

    [Fact]
    public void Resolve_MissingDataset_HubErrorAndNothingCached()
    {
        var e = Assert.Throws<HubException>(() => Resolver().Resolve("nobody/nothing", "train"));
        Assert.Equal(404, e.StatusCode);
        Assert.False(File.Exists(Path.Combine(_cache, "datasets", "nobody", "nothing", "main", "original_repo_id.json")));
    }

    [Theory]
    [InlineData("owner/name@")]
    [InlineData("a/b/c")]
    public void Parse_BadIds_Rejected(string id) => Assert.Throws<ArgumentException>(() => HubDatasetResolver.Parse(id));

    [Fact]
    public void CliServices_DatasetResolver_UsesEndpointAndCacheFromEnvironment()
    {
        // Given the CLI's services with HF_ENDPOINT and SHARPTUNE_CACHE set
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = _hub.Endpoint, ["SHARPTUNE_CACHE"] = _cache };
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null) });
        var services = new CliServices(console, console, RecipeRegistry.CreateDefault(), new ConfigCatalog(_cache),
            n => env.TryGetValue(n, out var v) ? v : null);

        // When a hub id is resolved through it
        var files = DataSources.ResolveFiles("yahma/alpaca-cleaned", null, "train", services.CreateDatasetResolver());

        // Then the fake Hub served it into the configured cache
        Assert.Equal([Path.Combine(_cache, "datasets", "yahma", "alpaca-cleaned", "main", "alpaca_data_cleaned.json")], files);
    }
}

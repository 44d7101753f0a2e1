// Resolves a Hugging Face datasets hub id (`yahma/alpaca-cleaned`, optionally `id@revision`) to a local folder by
// downloading the dataset repo once into a cache folder (`<cache>/datasets/<owner>/<name>/<revision>`). A folder whose
// download completed (original_repo_id.json written last by HubClient.DownloadAsync) is used without contacting the
// Hub again, so cached datasets work offline; an interrupted download resumes on the next call.
// References: huggingface_hub snapshot_download (cache per repo and revision), datasets.load_dataset(path, revision=).
using SharpTune.Data;

namespace SharpTune.Hub;

/// <summary>An <see cref="IDatasetSourceResolver"/> backed by <see cref="HubClient"/> with an on-disk cache.</summary>
public sealed class HubDatasetResolver : IDatasetSourceResolver
{
    /// <summary>Environment variable naming the cache root (default <c>~/.cache/sharptune</c>).</summary>
    public const string CacheVariable = "SHARPTUNE_CACHE";

    private readonly Func<HubClient> _client;
    private readonly string? _token;

    /// <summary>Creates a resolver.</summary>
    /// <param name="cacheRoot">Cache root; datasets go under <c>datasets/</c> in it.</param>
    /// <param name="client">Makes the client to download with (called only when something must be fetched).</param>
    /// <param name="token">Hub token for gated or private datasets, or null.</param>
    /// <param name="ignorePatterns">Repo files not to download (globs, as <c>download --ignore-patterns</c>).</param>
    public HubDatasetResolver(string cacheRoot, Func<HubClient> client, string? token = null, IReadOnlyList<string>? ignorePatterns = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(cacheRoot);
        CacheRoot = Path.GetFullPath(cacheRoot);
        _client = client ?? throw new ArgumentNullException(nameof(client));
        _token = token;
        IgnorePatterns = ignorePatterns ?? [];
    }

    /// <summary>The cache root.</summary>
    public string CacheRoot { get; }

    /// <summary>Repo files that are never downloaded.</summary>
    public IReadOnlyList<string> IgnorePatterns { get; }

    /// <summary>The default cache root: <c>$SHARPTUNE_CACHE</c>, else <c>~/.cache/sharptune</c>.</summary>
    public static string DefaultCacheRoot(Func<string, string?> environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var env = environment(CacheVariable);
        if (!string.IsNullOrWhiteSpace(env)) return env;
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(string.IsNullOrEmpty(home) ? Path.GetTempPath() : home, ".cache", "sharptune");
    }

    /// <summary>Splits <c>owner/name@revision</c> into the repo id and the revision (<c>main</c> when absent).</summary>
    public static (string RepoId, string Revision) Parse(string datasetId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(datasetId);
        var at = datasetId.IndexOf('@', StringComparison.Ordinal);
        var repo = at < 0 ? datasetId : datasetId[..at];
        var revision = at < 0 ? "main" : datasetId[(at + 1)..];
        if (revision.Length == 0) throw new ArgumentException($"dataset id '{datasetId}': empty revision after '@'", nameof(datasetId));
        HubNames.CheckRepoId(repo);
        return (repo, revision);
    }

    /// <summary>The cache folder of a dataset id (whether or not it is downloaded yet).</summary>
    public string FolderOf(string datasetId)
    {
        var (repo, revision) = Parse(datasetId);
        var parts = repo.Split('/');
        // A revision such as refs/convert/parquet becomes one folder name.
        var rev = string.Concat(revision.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_'));
        return Path.Combine(CacheRoot, "datasets", parts[0], parts[1], rev);
    }

    /// <inheritdoc />
    /// <exception cref="HubException">The dataset is not cached and cannot be downloaded.</exception>
    public string Resolve(string datasetId, string? split)
    {
        var folder = FolderOf(datasetId);
        if (File.Exists(Path.Combine(folder, "original_repo_id.json"))) return folder;
        var (repo, revision) = Parse(datasetId);
        using var client = _client();
        client.DownloadAsync(repo, HubRepoType.Dataset, folder, IgnorePatterns, _token, revision).GetAwaiter().GetResult();
        return folder;
    }
}

// Fetches a task's evaluation split from the Hugging Face Hub through SharpTune's Hub client, so `evaluate` can take
// a dataset id instead of a local file. The split's files are found in the repo listing: data files (parquet
// preferred, then jsonl/json/csv) under the config's folder whose name or folder is the split
// (`validation-00000-of-00001.parquet`, `data/validation-*.parquet`, `multiple_choice/validation-*.parquet`,
// `default/validation/0000.parquet`); when the main branch has none, the Hub's automatic Parquet conversion
// (revision `refs/convert/parquet`) is tried. Defaults are the datasets and splits the harness's task YAMLs name
// (hellaswag: Rowan/hellaswag validation; truthful_qa multiple_choice validation; tau/commonsense_qa validation).
using SharpTune.Hub;

namespace SharpTune.Eval;

/// <summary>A dataset split on the Hub.</summary>
/// <param name="RepoId">Dataset repo id (owner/name).</param>
/// <param name="Config">Dataset config (subset) name, or null for the default one.</param>
/// <param name="Split">Split name (validation, test, ...).</param>
public sealed record HubDatasetSplit(string RepoId, string? Config, string Split);

/// <summary>Locates and downloads evaluation splits on the Hub.</summary>
public static class HubEvalData
{
    /// <summary>The Hub revision holding the Hub's automatic Parquet conversion of a dataset.</summary>
    public const string ParquetConversionRevision = "refs/convert/parquet";

    /// <summary>The dataset split each task evaluates, as in the harness's task YAML (dataset_path/name, split).</summary>
    public static IReadOnlyDictionary<string, HubDatasetSplit> Defaults { get; } = new Dictionary<string, HubDatasetSplit>
    {
        ["hellaswag"] = new("Rowan/hellaswag", null, "validation"),
        ["truthfulqa_mc1"] = new("truthfulqa/truthful_qa", "multiple_choice", "validation"),
        ["truthfulqa_mc2"] = new("truthfulqa/truthful_qa", "multiple_choice", "validation"),
        ["commonsense_qa"] = new("tau/commonsense_qa", null, "validation"),
    };

    private static readonly string[] Preference = [".parquet", ".jsonl", ".json", ".csv"];

    /// <summary>
    /// The files of <paramref name="split"/> among a repo's <paramref name="repoFiles"/>: every shard of the most
    /// preferred data format, in name order; empty when none match.
    /// </summary>
    public static IReadOnlyList<string> SelectSplitFiles(IReadOnlyList<string> repoFiles, string? config, string split)
    {
        ArgumentNullException.ThrowIfNull(repoFiles);
        var matches = repoFiles.Where(f => IsSplitFile(f, config, split)).ToArray();
        foreach (var ext in Preference)
        {
            var withExt = matches.Where(f => f.EndsWith(ext, StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal).ToArray();
            if (withExt.Length > 0) return withExt;
        }
        return [];
    }

    private static bool IsSplitFile(string file, string? config, string split)
    {
        var parts = file.Split('/');
        var name = parts[^1];
        var folders = parts[..^1];
        if (!Preference.Any(e => name.EndsWith(e, StringComparison.OrdinalIgnoreCase))) return false;
        if (config is not null && !folders.Contains(config, StringComparer.Ordinal)) return false;
        var stem = name[..name.IndexOf('.', StringComparison.Ordinal)];
        return folders.Contains(split, StringComparer.Ordinal)
            || stem.Equals(split, StringComparison.Ordinal)
            || stem.StartsWith(split + "-", StringComparison.Ordinal);
    }

    /// <summary>
    /// Downloads the split's files into <paramref name="cacheDir"/> (files already there and verified are kept) and
    /// returns their local paths in shard order.
    /// </summary>
    /// <exception cref="HubException">The Hub is unreachable, the repo is missing or gated, or no file matches the split.</exception>
    public static async Task<IReadOnlyList<string>> DownloadSplitAsync(HubClient client, HubDatasetSplit source, string cacheDir,
        string? token = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(source);
        foreach (var revision in new[] { "main", ParquetConversionRevision })
        {
            IReadOnlyList<string> files;
            try
            {
                files = await client.ListFilesAsync(source.RepoId, HubRepoType.Dataset, revision, token, cancellationToken).ConfigureAwait(false);
            }
            catch (HubException) when (revision != "main")
            {
                break; // no conversion branch: report what main had
            }
            var selected = SelectSplitFiles(files, source.Config, source.Split);
            if (selected.Count == 0) continue;
            var folder = Path.Combine(cacheDir, source.RepoId.Replace('/', Path.DirectorySeparatorChar), revision == "main" ? "main" : "parquet");
            var local = new List<string>();
            foreach (var file in selected)
            {
                await client.DownloadFileAsync(source.RepoId, HubRepoType.Dataset, file, folder, token, revision, null, cancellationToken).ConfigureAwait(false);
                local.Add(Path.Combine(folder, file));
            }
            return local;
        }
        throw new HubException(
            $"dataset {source.RepoId}: no {source.Split} split{(source.Config is null ? "" : $" of config '{source.Config}'")} found " +
            $"(looked for .parquet/.jsonl/.json/.csv files named or foldered '{source.Split}' on main and {ParquetConversionRevision}); " +
            "download it yourself and pass the file");
    }
}

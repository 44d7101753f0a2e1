// A Hugging Face weight folder opened lazily: either model.safetensors or model.safetensors.index.json plus its
// shards. Every shard header is opened and validated up front (cheap: headers only) and cross-checked against the
// index, so a broken folder fails before any tensor is loaded rather than half-way through.
// Reference: transformers modeling_utils (sharded checkpoints, index "weight_map").
using System.Text.Json;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>The safetensors weights of a folder, single-file or sharded, loadable tensor by tensor.</summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    private readonly Dictionary<string, SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _byKey;

    private SafetensorsCheckpoint(string folder, Dictionary<string, SafetensorsFile> files, Dictionary<string, SafetensorsFile> byKey)
    {
        Folder = folder;
        _files = files;
        _byKey = byKey;
    }

    /// <summary>The folder the weights were opened from.</summary>
    public string Folder { get; }

    /// <summary>All tensor keys, in ordinal order.</summary>
    public IReadOnlyList<string> Keys => _byKey.Keys.Order(StringComparer.Ordinal).ToArray();

    /// <summary>The weight files, in the order they are listed.</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files.Values.ToArray();

    /// <summary>True when the checkpoint holds <paramref name="key"/>.</summary>
    public bool Contains(string key) => _byKey.ContainsKey(key);

    /// <summary>The file that holds <paramref name="key"/>.</summary>
    public SafetensorsFile FileOf(string key) =>
        _byKey.TryGetValue(key, out var f) ? f : throw new CheckpointFormatException(Folder, $"no tensor named '{key}'");

    /// <summary>Header entry of <paramref name="key"/>.</summary>
    public SafetensorsTensorInfo GetInfo(string key) => FileOf(key).GetInfo(key);

    /// <summary>Loads <paramref name="key"/> into a new CPU tensor.</summary>
    public Tensor Load(string key) => FileOf(key).Load(key);

    /// <summary>Reads <paramref name="key"/> straight into <paramref name="destination"/> (same shape and dtype).</summary>
    public void LoadInto(string key, Tensor destination) => FileOf(key).LoadInto(key, destination);

    /// <summary>Loads every tensor.</summary>
    public Dictionary<string, Tensor> LoadAll()
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var key in Keys) result[key] = Load(key);
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>
    /// Opens the weights in <paramref name="folder"/>: <c>model.safetensors</c> when present (as transformers
    /// prefers it), else <c>model.safetensors.index.json</c> and its shards. Throws <see cref="CheckpointFormatException"/> naming the file for a missing shard, a
    /// key the index places in a shard that lacks it, a key in two shards, or any corrupt header.
    /// </summary>
    public static SafetensorsCheckpoint Open(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"checkpoint folder not found: {folder}");
        // transformers looks for model.safetensors before the index; so do we, so both load the same weights.
        var single = Path.Combine(folder, SafetensorsWriter.SingleFileName);
        if (File.Exists(single))
        {
            var file = SafetensorsFile.Open(single);
            return new SafetensorsCheckpoint(folder,
                new Dictionary<string, SafetensorsFile> { [SafetensorsWriter.SingleFileName] = file },
                file.Keys.ToDictionary(k => k, _ => file, StringComparer.Ordinal));
        }
        var indexPath = Path.Combine(folder, SafetensorsWriter.IndexFileName);
        if (File.Exists(indexPath)) return OpenIndexed(folder, indexPath);
        var found = Directory.EnumerateFiles(folder, "*.safetensors").Select(Path.GetFileName).Order().ToArray();
        var pickles = Directory.EnumerateFiles(folder, "*.bin").Concat(Directory.EnumerateFiles(folder, "*.pt"))
            .Select(Path.GetFileName).Order().ToArray();
        throw new CheckpointFormatException(folder,
            $"no {SafetensorsWriter.SingleFileName} or {SafetensorsWriter.IndexFileName} found" +
            (found.Length > 0 ? $" (safetensors files present: {string.Join(", ", found)})" : "") +
            (pickles.Length > 0 ? $" ({string.Join(", ", pickles)}: PyTorch pickle checkpoints are not read; convert them to safetensors)" : ""));
    }

    /// <summary>Reads the weight map of an index file (key to shard file name).</summary>
    public static IReadOnlyDictionary<string, string> ReadIndex(string indexPath)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(indexPath, $"index is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object ||
                !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(indexPath, "index has no 'weight_map' object");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new CheckpointFormatException(indexPath, $"weight_map['{p.Name}'] must be a file name, found {p.Value.ValueKind}");
                var file = p.Value.GetString()!;
                if (file.Contains('/') || file.Contains('\\') || file is "." or "..")
                    throw new CheckpointFormatException(indexPath, $"weight_map['{p.Name}'] = '{file}' is not a file name in the folder");
                if (!result.TryAdd(p.Name, file))
                    throw new CheckpointFormatException(indexPath, $"weight_map lists '{p.Name}' twice");
            }
            return result;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var f in _files.Values) f.Dispose();
    }

    private static SafetensorsCheckpoint OpenIndexed(string folder, string indexPath)
    {
        var map = ReadIndex(indexPath);
        var files = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var name in map.Values.Distinct().Order(StringComparer.Ordinal))
            {
                var path = Path.Combine(folder, name);
                if (!File.Exists(path))
                    throw new CheckpointFormatException(indexPath, $"names shard '{name}', which does not exist in {folder}");
                files[name] = SafetensorsFile.Open(path);
            }
            var byKey = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            var problems = new List<string>();
            foreach (var (key, name) in map.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                if (!files[name].Contains(key)) problems.Add($"'{key}' is mapped to '{name}', which does not contain it");
                else byKey[key] = files[name];
            }
            if (problems.Count > 0)
                throw new CheckpointFormatException(indexPath,
                    $"{problems.Count} index entr{(problems.Count == 1 ? "y does" : "ies do")} not match the shards:\n  " +
                    string.Join("\n  ", problems));
            return new SafetensorsCheckpoint(folder, files, byKey);
        }
        catch
        {
            foreach (var f in files.Values) f.Dispose();
            throw;
        }
    }
}

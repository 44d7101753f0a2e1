// Saves and loads recipe_state/ atomically: the folder is written under a temporary name and renamed into place,
// so a run killed mid-save leaves the previous state intact.
// Layout (format "sharptune.recipe_state" version 1; our own until the safetensors writer lands):
//   recipe_state/manifest.json   format, version, optimizer type, parameter shapes, and the RecipeState record
//   recipe_state/optimizer.bin   TorchSharp OptimizerHelper.save_state_dict (per group options, then per parameter
//                                 state: AdamW step, exp_avg, exp_avg_sq; SGD momentum_buffer), raw tensor bytes
//   recipe_state/rng_cpu.bin     torch.get_rng_state() saved with TorchSharp's Tensor.Save
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;

namespace SharpTune.Checkpointing;

/// <summary>Writes and reads the <c>recipe_state/</c> folder beside a run's checkpoints.</summary>
public static class RecipeStateStore
{
    /// <summary>The folder name inside a run's output directory.</summary>
    public const string FolderName = "recipe_state";

    private const string Format = "sharptune.recipe_state";
    private const int Version = 1;
    private const string ManifestFile = "manifest.json";
    private const string OptimizerFile = "optimizer.bin";
    private const string RngFile = "rng_cpu.bin";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>True when <paramref name="outputDir"/> holds a saved recipe state.</summary>
    public static bool Exists(string outputDir) => File.Exists(Path.Combine(outputDir, FolderName, ManifestFile));

    /// <summary>
    /// Saves <paramref name="state"/>, the optimizer state and libtorch's CPU RNG state into
    /// <c><paramref name="outputDir"/>/recipe_state</c>, replacing any previous one atomically. Returns the folder.
    /// </summary>
    public static string Save(string outputDir, RecipeState state, OptimizerHelper optimizer)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(optimizer);
        Directory.CreateDirectory(outputDir);
        var target = Path.Combine(outputDir, FolderName);
        var temp = Path.Combine(outputDir, $".{FolderName}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            WriteFile(Path.Combine(temp, OptimizerFile), s =>
            {
                using var w = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
                optimizer.save_state_dict(w);
            });
            WriteFile(Path.Combine(temp, RngFile), s =>
            {
                using var rng = torch.get_rng_state();
                using var w = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
                rng.Save(w);
            });
            var manifest = new Manifest
            {
                Format = Format,
                Version = Version,
                OptimizerType = optimizer.GetType().Name,
                ParameterShapes = optimizer.parameters().Select(p => p.shape).ToList(),
                State = state,
            };
            WriteFile(Path.Combine(temp, ManifestFile), s => JsonSerializer.Serialize(s, manifest, Json));

            string? old = null;
            if (Directory.Exists(target))
            {
                old = Path.Combine(outputDir, $".{FolderName}.old-{Guid.NewGuid():N}");
                Directory.Move(target, old);
            }
            Directory.Move(temp, target);
            if (old is not null) Directory.Delete(old, recursive: true);
            return target;
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    /// <summary>
    /// Loads the saved state from <c><paramref name="outputDir"/>/recipe_state</c> into <paramref name="optimizer"/>
    /// (which must be built over the same parameters in the same order) and, when <paramref name="restoreRng"/>,
    /// restores libtorch's CPU RNG. Returns the counters.
    /// </summary>
    public static RecipeState Load(string outputDir, OptimizerHelper optimizer, bool restoreRng = true)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        var folder = Path.Combine(outputDir, FolderName);
        if (!Directory.Exists(folder))
        {
            // A save killed between its two renames leaves the previous state under its old-name; use it.
            var leftover = Directory.Exists(outputDir)
                ? Directory.GetDirectories(outputDir, $".{FolderName}.old-*").FirstOrDefault(d => File.Exists(Path.Combine(d, ManifestFile)))
                : null;
            folder = leftover ?? throw new FileNotFoundException($"no {FolderName}/ folder in '{outputDir}' to resume from", folder);
        }
        var manifestPath = Path.Combine(folder, ManifestFile);
        if (!File.Exists(manifestPath)) throw new FileNotFoundException($"recipe state manifest missing: '{manifestPath}'", manifestPath);
        var manifest = ReadManifest(manifestPath);
        if (manifest.Format != Format || manifest.Version != Version)
            throw new InvalidDataException($"'{manifestPath}': expected format '{Format}' version {Version}, got '{manifest.Format}' version {manifest.Version}");
        if (manifest.State is null) throw new InvalidDataException($"'{manifestPath}': key 'state' is missing");
        if (manifest.OptimizerType != optimizer.GetType().Name)
            throw new InvalidDataException($"'{manifestPath}': saved optimizer is {manifest.OptimizerType}, the recipe built {optimizer.GetType().Name}");
        var shapes = optimizer.parameters().Select(p => p.shape).ToList();
        var saved = manifest.ParameterShapes ?? [];
        if (saved.Count != shapes.Count)
            throw new InvalidDataException($"'{manifestPath}': saved optimizer covers {saved.Count} parameters, the recipe trains {shapes.Count} (different model or trainable set?)");
        for (var i = 0; i < shapes.Count; i++)
            if (!saved[i].SequenceEqual(shapes[i]))
                throw new InvalidDataException($"'{manifestPath}': parameter {i} has shape [{string.Join(", ", saved[i])}] in the saved state but [{string.Join(", ", shapes[i])}] in the model");

        LoadOptimizer(Path.Combine(folder, OptimizerFile), optimizer);
        if (restoreRng) RestoreRng(Path.Combine(folder, RngFile));
        return manifest.State;
    }

    // The readers below turn what a truncated or garbled file makes the deserializers throw (EndOfStreamException
    // without a file name, JsonException, ...) into one line naming the file. None of them can detect a flipped bit in
    // tensor data: the files carry no checksum.

    private static Manifest ReadManifest(string path)
    {
        try
        {
            using var s = File.OpenRead(path);
            return JsonSerializer.Deserialize<Manifest>(s, Json) ?? throw new CheckpointFormatException(path, "manifest is JSON null");
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"not valid JSON for a recipe state manifest (truncated or corrupt): {OneLine(e.Message)}", e);
        }
    }

    private static void LoadOptimizer(string path, OptimizerHelper optimizer)
    {
        using var s = File.OpenRead(path);
        using var r = new BinaryReader(s);
        try
        {
            optimizer.load_state_dict(r);
        }
        catch (EndOfStreamException e)
        {
            throw new CheckpointFormatException(path, $"truncated: the optimizer state needs more than the file's {s.Length} bytes", e);
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or FormatException or OverflowException
                                      or InvalidOperationException or IndexOutOfRangeException or ExternalException)
        {
            throw new CheckpointFormatException(path, $"corrupt optimizer state ({e.GetType().Name}: {OneLine(e.Message)})", e);
        }
        if (s.Position != s.Length)
            throw new CheckpointFormatException(path,
                $"{s.Length - s.Position} bytes follow the optimizer state (which ends at byte {s.Position}): corrupt, or saved for other parameters");
    }

    /// <summary>
    /// The CPU generator's state has a fixed size, so the file must be byte-for-byte as long as the current state
    /// saved the same way, with the same dtype/shape prefix; checking that first also keeps a garbled shape from
    /// allocating a huge tensor.
    /// </summary>
    private static void RestoreRng(string path)
    {
        var bytes = File.ReadAllBytes(path);
        using var current = torch.get_rng_state();
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) current.Save(w);
        var expected = ms.ToArray();
        if (bytes.Length < expected.Length)
            throw new CheckpointFormatException(path, $"truncated: {bytes.Length} bytes, a saved CPU generator state is {expected.Length}");
        if (bytes.Length > expected.Length)
            throw new CheckpointFormatException(path,
                $"{bytes.Length - expected.Length} bytes follow the CPU generator state ({expected.Length} bytes): corrupt");
        var prefix = expected.Length - (int)(current.numel() * current.element_size());
        if (!bytes.AsSpan(0, prefix).SequenceEqual(expected.AsSpan(0, prefix)))
            throw new CheckpointFormatException(path,
                $"does not hold a CPU generator state: its {prefix}-byte dtype/shape prefix differs from a {current.dtype} [{string.Join(", ", current.shape)}] tensor's");
        using var r = new BinaryReader(new MemoryStream(bytes));
        using var rng = TensorExtensionMethods.Load(r);
        try
        {
            torch.set_rng_state(rng);
        }
        catch (ExternalException e)
        {
            throw new CheckpointFormatException(path, $"libtorch rejects the CPU generator state: {OneLine(e.Message)}", e);
        }
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();

    private static void WriteFile(string path, Action<Stream> write)
    {
        using var s = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        write(s);
        s.Flush(flushToDisk: true);
    }

    private sealed class Manifest
    {
        [JsonPropertyName("format")] public string? Format { get; init; }
        [JsonPropertyName("version")] public int Version { get; init; }
        [JsonPropertyName("optimizer_type")] public string? OptimizerType { get; init; }
        [JsonPropertyName("parameter_shapes")] public List<long[]>? ParameterShapes { get; init; }
        [JsonPropertyName("state")] public RecipeState? State { get; init; }
    }
}

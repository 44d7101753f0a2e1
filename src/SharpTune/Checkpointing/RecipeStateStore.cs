// Saves and loads recipe_state/ atomically: the folder is written under a temporary name and renamed into place,
// so a run killed mid-save leaves the previous state intact.
// Layout (format "sharptune.recipe_state" version 1; our own until the safetensors writer lands):
//   recipe_state/manifest.json   format, version, optimizer type, parameter shapes, and the RecipeState record
//   recipe_state/optimizer.bin   TorchSharp OptimizerHelper.save_state_dict (per group options, then per parameter
//                                 state: AdamW step, exp_avg, exp_avg_sq; SGD momentum_buffer), raw tensor bytes
//   recipe_state/rng_cpu.bin     torch.get_rng_state() saved with TorchSharp's Tensor.Save
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
        Manifest manifest;
        using (var s = File.OpenRead(manifestPath))
            manifest = JsonSerializer.Deserialize<Manifest>(s, Json)
                       ?? throw new InvalidDataException($"'{manifestPath}' is empty");
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

        using (var s = File.OpenRead(Path.Combine(folder, OptimizerFile)))
        using (var r = new BinaryReader(s))
            optimizer.load_state_dict(r);
        if (restoreRng)
        {
            using var s = File.OpenRead(Path.Combine(folder, RngFile));
            using var r = new BinaryReader(s);
            using var rng = TensorExtensionMethods.Load(r);
            torch.set_rng_state(rng);
        }
        return manifest.State;
    }

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

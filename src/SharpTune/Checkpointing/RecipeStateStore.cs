// Saves and loads recipe_state/. A save writes a hidden .recipe_state.tmp-{guid}/ and commits it with one rename to
// the fixed name .recipe_state.next/; the previous recipe_state/ is then renamed to a hidden trash name, .next renamed
// to recipe_state/, and the trash deleted. A kill at any point therefore leaves exactly one newest state, found by a
// fixed rule (Find): .recipe_state.next/ if present, else recipe_state/. CheckpointCommit.Recover makes that physical
// at the next start. The whole protocol, with the checkpoint folders and pruning, is in docs/reliability.md.
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

    /// <summary>The hidden name a complete, committed state has between its commit and its rename to recipe_state/.</summary>
    public const string PendingName = "." + FolderName + ".next";

    /// <summary>True when <paramref name="outputDir"/> holds a saved recipe state (see <see cref="Find"/>).</summary>
    public static bool Exists(string outputDir) => Find(outputDir) is not null;

    /// <summary>
    /// The folder a resume loads: <c>.recipe_state.next/</c> (committed by a save that was killed before it was
    /// renamed into place, so newer than any <c>recipe_state/</c> beside it), else <c>recipe_state/</c>. When neither
    /// exists (a run killed before its first commit, or a folder written before this protocol), the complete hidden
    /// <c>.recipe_state.tmp-*</c> or <c>.recipe_state.old-*</c> state with the most steps; ties go to the ordinal
    /// first name, never to directory order. Null when there is none.
    /// </summary>
    public static string? Find(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return null;
        foreach (var name in new[] { PendingName, FolderName })
        {
            var folder = Path.Combine(outputDir, name);
            if (File.Exists(Path.Combine(folder, ManifestFile))) return folder;
        }
        return Directory.GetDirectories(outputDir, $".{FolderName}.*-*")
            .Where(d => Path.GetFileName(d).StartsWith($".{FolderName}.tmp-", StringComparison.Ordinal) ||
                        Path.GetFileName(d).StartsWith($".{FolderName}.old-", StringComparison.Ordinal))
            .Select(d => (Folder: d, State: TryReadManifest(d)?.State))
            .Where(x => x.State is not null && File.Exists(Path.Combine(x.Folder, OptimizerFile)) && File.Exists(Path.Combine(x.Folder, RngFile)))
            .OrderByDescending(x => x.State!.StepsRun).ThenByDescending(x => x.State!.EpochsRun).ThenBy(x => x.Folder, StringComparer.Ordinal)
            .Select(x => x.Folder)
            .FirstOrDefault();
    }

    /// <summary>The counters of the state <see cref="Find"/> picks, without touching any optimizer; null when none.</summary>
    public static RecipeState? Peek(string outputDir) => Find(outputDir) is { } folder ? ReadManifestIn(folder).State : null;

    /// <summary>
    /// Makes the state <see cref="Find"/> picks the folder <c>recipe_state/</c>: a pending or adopted hidden state is
    /// renamed into place and the one it supersedes deleted. Idempotent and itself safe to kill at any point.
    /// Returns true when anything moved.
    /// </summary>
    public static bool Recover(string outputDir)
    {
        var found = Find(outputDir);
        if (found is null || Path.GetFileName(found) == FolderName) return false;
        if (Path.GetFileName(found) != PendingName) CommitFs.MoveDirectory(found, Path.Combine(outputDir, PendingName));
        Promote(outputDir);
        return true;
    }

    /// <summary>
    /// Saves <paramref name="state"/>, the optimizer state and libtorch's CPU RNG state into
    /// <c><paramref name="outputDir"/>/recipe_state</c>, replacing any previous one atomically. Returns the folder.
    /// </summary>
    public static string Save(string outputDir, RecipeState state, OptimizerHelper optimizer)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(optimizer);
        Directory.CreateDirectory(outputDir);
        Recover(outputDir); // a pending state of a killed save is put in place first: the fixed .next name is free
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
            WriteFile(Path.Combine(temp, ManifestFile), s => JsonSerializer.Serialize(s, manifest, Json)); // last: marks it complete
        }
        catch
        {
            AtomicFile.TryDeleteFolder(temp);
            throw;
        }
        CommitFs.MoveDirectory(temp, Path.Combine(outputDir, PendingName)); // the commit point
        Promote(outputDir);
        return target;
    }

    // .recipe_state.next -> recipe_state: the superseded state goes to a hidden trash name first, so that until the
    // last rename the newest state is still found under .next, and a kill while deleting leaves only hidden trash.
    private static void Promote(string outputDir)
    {
        var target = Path.Combine(outputDir, FolderName);
        string? trash = null;
        if (Directory.Exists(target))
        {
            trash = Path.Combine(outputDir, $".{FolderName}.trash-{Guid.NewGuid():N}");
            CommitFs.MoveDirectory(target, trash);
        }
        CommitFs.MoveDirectory(Path.Combine(outputDir, PendingName), target);
        if (trash is not null) CommitFs.DeleteDirectory(trash);
    }

    /// <summary>
    /// Loads the saved state <see cref="Find"/> picks in <paramref name="outputDir"/> into <paramref name="optimizer"/>
    /// (which must be built over the same parameters in the same order) and, when <paramref name="restoreRng"/>,
    /// restores libtorch's CPU RNG. Returns the counters.
    /// </summary>
    public static RecipeState Load(string outputDir, OptimizerHelper optimizer, bool restoreRng = true)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        var folder = Find(outputDir) ?? throw new FileNotFoundException(
            $"no {FolderName}/ folder in '{outputDir}' to resume from", Path.Combine(outputDir, FolderName));
        var manifestPath = Path.Combine(folder, ManifestFile);
        var manifest = ReadManifestIn(folder);
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
        return manifest.State!; // ReadManifestIn checked it
    }

    // The manifest of a state folder, checked for format, version and state.
    private static Manifest ReadManifestIn(string folder)
    {
        var manifestPath = Path.Combine(folder, ManifestFile);
        if (!File.Exists(manifestPath)) throw new FileNotFoundException($"recipe state manifest missing: '{manifestPath}'", manifestPath);
        var manifest = ReadManifest(manifestPath);
        if (manifest.Format != Format || manifest.Version != Version)
            throw new InvalidDataException($"'{manifestPath}': expected format '{Format}' version {Version}, got '{manifest.Format}' version {manifest.Version}");
        if (manifest.State is null) throw new InvalidDataException($"'{manifestPath}': key 'state' is missing");
        return manifest;
    }

    // A hidden candidate's manifest, or null when it is missing or cut short by a kill (then the folder is incomplete).
    private static Manifest? TryReadManifest(string folder)
    {
        try
        {
            return ReadManifestIn(folder);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or JsonException)
        {
            return null;
        }
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

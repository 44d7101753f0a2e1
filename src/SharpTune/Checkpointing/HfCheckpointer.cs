// Hugging Face checkpoint folders in and out: the SharpTune counterpart of torchtune's FullModelHFCheckpointer
// (torchtune/training/checkpointing/_checkpointer.py). Because SharpTune models use HF state-dict keys and HF's
// rotary layout, no key mapping or q/k permutation is needed: loading is identity plus a strict check.
// Output layout (per save): <output_dir>/epoch_N/ or step_N/ holding model.safetensors or model-0000i-of-0000N
// shards + model.safetensors.index.json, config.json, the tokenizer/generation files of the source folder, and
// optionally adapter_model.safetensors + adapter_config.json (PEFT format).
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SharpTune.Config;
using SharpTune.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>Names a saved checkpoint: <c>epoch_N</c> or <c>step_N</c>.</summary>
/// <param name="Kind"><c>epoch</c> or <c>step</c>.</param>
/// <param name="Number">The epoch or global step number.</param>
public readonly record struct CheckpointTag(string Kind, long Number)
{
    /// <summary>The folder for the end of epoch <paramref name="epoch"/>.</summary>
    public static CheckpointTag Epoch(long epoch) => new("epoch", epoch);

    /// <summary>The folder for global step <paramref name="step"/>.</summary>
    public static CheckpointTag Step(long step) => new("step", step);

    /// <summary>The folder name, e.g. <c>epoch_0</c>.</summary>
    public string FolderName => $"{Kind}_{Number}";
}

/// <summary>A loaded HF checkpoint: its config.json and its tensors. Disposing frees the tensors.</summary>
public sealed class HfCheckpoint(string folder, JsonObject config, Dictionary<string, Tensor> stateDict) : IDisposable
{
    /// <summary>The folder it was read from.</summary>
    public string Folder { get; } = folder;

    /// <summary>The parsed config.json.</summary>
    public JsonObject Config { get; } = config;

    /// <summary>Tensors under their HF keys.</summary>
    public Dictionary<string, Tensor> StateDict { get; } = stateDict;

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in StateDict.Values) t.Dispose();
    }
}

/// <summary>Loads model weights from an HF folder and saves fine-tuned checkpoints in the same layout.</summary>
public sealed class HfCheckpointer
{
    /// <summary>Files copied from the source folder next to saved weights, when present.</summary>
    public static IReadOnlyList<string> CopiedFiles { get; } =
    [
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
        "generation_config.json", "vocab.json", "merges.txt", "chat_template.jinja",
        "original/tokenizer.model", "original/params.json",
    ];

    private static readonly Regex CheckpointFolder = new(@"^(epoch|step)_(\d+)$", RegexOptions.CultureInvariant);

    /// <summary>torchtune <c>model_type</c> values accepted for config compatibility.</summary>
    public static IReadOnlyList<string> KnownModelTypes { get; } = ["LLAMA2", "LLAMA3", "LLAMA3_2", "QWEN2", "QWEN2_5"];

    /// <summary>Creates a checkpointer reading <paramref name="checkpointDir"/> and writing under <paramref name="outputDir"/>.</summary>
    /// <param name="checkpointDir">The HF folder holding config.json and the weights to start from.</param>
    /// <param name="outputDir">Where <c>epoch_N/</c> / <c>step_N/</c> folders are written.</param>
    /// <param name="keepLastNCheckpoints">Keep only the newest N folders of each kind (null keeps all).</param>
    /// <param name="maxShardBytes">Largest weight file written (default 5 GB).</param>
    /// <param name="checkpointFiles">
    /// torchtune's <c>checkpoint_files</c>: when given, loading first checks that these are exactly the weight files
    /// the folder's <c>model.safetensors</c> / index names, so a stale or mistyped list fails instead of loading
    /// something else.
    /// </param>
    /// <param name="modelType">
    /// torchtune's <c>model_type</c> (one of <see cref="KnownModelTypes"/>). Informational: SharpTune keys are HF keys,
    /// so no key mapping depends on it; unknown values are rejected.
    /// </param>
    public HfCheckpointer(string checkpointDir, string outputDir, int? keepLastNCheckpoints = null,
        long maxShardBytes = SafetensorsWriter.DefaultMaxShardBytes, IReadOnlyList<string>? checkpointFiles = null,
        string? modelType = null)
    {
        if (modelType is not null && !KnownModelTypes.Contains(modelType))
            throw new ArgumentException($"model_type '{modelType}' is not one of {string.Join(", ", KnownModelTypes)}", nameof(modelType));
        CheckpointFiles = checkpointFiles;
        ModelType = modelType;
        if (keepLastNCheckpoints is <= 0)
            throw new ArgumentOutOfRangeException(nameof(keepLastNCheckpoints), keepLastNCheckpoints, "must be at least 1 (or null to keep all)");
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), maxShardBytes, "must be positive");
        CheckpointDir = checkpointDir;
        OutputDir = outputDir;
        KeepLastNCheckpoints = keepLastNCheckpoints;
        MaxShardBytes = maxShardBytes;
    }

    /// <summary>Config component: <c>_component_: sharptune.checkpointing.full_model_hf_checkpointer</c>.</summary>
    /// <remarks>
    /// torchtune's <c>recipe_checkpoint</c> key is not used: resuming (optimizer, RNG, data-loader position) is
    /// implemented, with the state in <c>output_dir/recipe_state</c> found by <c>resume_from_checkpoint: true</c>
    /// (<see cref="RecipeStateStore"/>). A non-null value is an error rather than being ignored.
    /// </remarks>
    [Component("sharptune.checkpointing.full_model_hf_checkpointer")]
    public static HfCheckpointer FullModelHfCheckpointer(string checkpointDir, string outputDir,
        int? keepLastNCheckpoints = null, long maxShardBytes = SafetensorsWriter.DefaultMaxShardBytes,
        List<string>? checkpointFiles = null, string? modelType = null, string? recipeCheckpoint = null)
    {
        if (recipeCheckpoint is not null)
            throw new NotSupportedException($"recipe_checkpoint '{recipeCheckpoint}': this key is not used; resume_from_checkpoint: true resumes from output_dir/{RecipeStateStore.FolderName} (remove the key or set it to null)");
        return new(checkpointDir, outputDir, keepLastNCheckpoints, maxShardBytes, checkpointFiles, modelType);
    }

    /// <summary>The weight files the config expects in <see cref="CheckpointDir"/> (null: whatever the folder names).</summary>
    public IReadOnlyList<string>? CheckpointFiles { get; }

    /// <summary>torchtune model_type, if configured.</summary>
    public string? ModelType { get; }

    /// <summary>The source HF folder.</summary>
    public string CheckpointDir { get; }

    /// <summary>The folder checkpoints are saved under.</summary>
    public string OutputDir { get; }

    /// <summary>How many checkpoints of each kind to keep (null: all).</summary>
    public int? KeepLastNCheckpoints { get; }

    /// <summary>Largest weight file written.</summary>
    public long MaxShardBytes { get; }

    /// <summary>Reads config.json of the source folder.</summary>
    public JsonObject ReadConfig() => ReadConfig(CheckpointDir);

    /// <summary>Loads config.json and every tensor of the source folder.</summary>
    public HfCheckpoint Load()
    {
        VerifyCheckpointFiles();
        return Load(CheckpointDir);
    }

    /// <summary>Loads the source folder's weights into <paramref name="model"/>; see <see cref="LoadInto(torch.nn.Module, string, bool, bool)"/>.</summary>
    public LoadReport LoadInto(nn.Module model, bool strict = true, bool convertDtype = false)
    {
        VerifyCheckpointFiles();
        return LoadInto(model, CheckpointDir, strict, convertDtype);
    }

    private void VerifyCheckpointFiles()
    {
        if (CheckpointFiles is null) return;
        using var weights = SafetensorsCheckpoint.Open(CheckpointDir);
        var actual = weights.Files.Select(f => Path.GetFileName(f.Path)).Order(StringComparer.Ordinal).ToArray();
        var expected = CheckpointFiles.Order(StringComparer.Ordinal).ToArray();
        if (!actual.SequenceEqual(expected))
            throw new CheckpointFormatException(CheckpointDir,
                $"checkpoint_files [{string.Join(", ", expected)}] do not match the folder's weight files [{string.Join(", ", actual)}]");
    }

    /// <summary>
    /// Saves <paramref name="stateDict"/> (merged weights, HF keys) as <c>OutputDir/epoch_N</c> or <c>step_N</c> with
    /// config.json (from <paramref name="config"/>, else the source folder's), the source folder's tokenizer and
    /// generation files, and optionally a PEFT adapter; then prunes old checkpoints. Returns the folder written.
    /// </summary>
    public string Save(CheckpointTag tag, IReadOnlyDictionary<string, Tensor> stateDict, JsonObject? config = null,
        PeftAdapterExport? adapter = null)
    {
        var path = Save(OutputDir, tag, stateDict, config ?? ReadConfig(CheckpointDir), CheckpointDir, adapter, MaxShardBytes);
        if (KeepLastNCheckpoints is { } n) Prune(OutputDir, n);
        return path;
    }

    /// <summary>Reads <c>config.json</c> of <paramref name="folder"/>.</summary>
    public static JsonObject ReadConfig(string folder)
    {
        var path = Path.Combine(folder, "config.json");
        if (!File.Exists(path)) throw new CheckpointFormatException(folder, "config.json not found");
        return PeftAdapter.ReadJsonObject(path);
    }

    /// <summary>Loads config.json and every tensor of <paramref name="folder"/> (single file or sharded).</summary>
    public static HfCheckpoint Load(string folder)
    {
        var config = ReadConfig(folder);
        using var weights = SafetensorsCheckpoint.Open(folder);
        return new HfCheckpoint(folder, config, weights.LoadAll());
    }

    /// <summary>
    /// Loads the weights of <paramref name="folder"/> into <paramref name="model"/>'s state dict, reading each tensor
    /// straight into the parameter's memory. Strict: every missing key, unexpected key, shape mismatch and dtype
    /// mismatch is listed in one <see cref="CheckpointFormatException"/> naming the folder (and each tensor's file),
    /// and nothing is loaded. Non-strict tolerates missing/unexpected keys (returned) but not shape/dtype mismatches.
    /// <paramref name="convertDtype"/> casts stored float tensors to the model's float dtype (F32 to BF16 when the config asks for
    /// bf16) instead of rejecting them; an integer or bool tensor where the model has a float is rejected either way.
    /// A weight tied to another (lm_head.weight sharing model.embed_tokens.weight) may be absent from the folder.
    /// </summary>
    public static LoadReport LoadInto(nn.Module model, string folder, bool strict = true, bool convertDtype = false) =>
        LoadInto(model.state_dict(), folder, strict, convertDtype);

    /// <summary>As <see cref="LoadInto(torch.nn.Module, string, bool, bool)"/>, into existing tensors keyed by HF key.</summary>
    public static LoadReport LoadInto(IReadOnlyDictionary<string, Tensor> destination, string folder, bool strict = true,
        bool convertDtype = false)
    {
        using var weights = SafetensorsCheckpoint.Open(folder);
        return CheckpointLoading.Load(destination, weights, strict, convertDtype);
    }

    /// <summary>
    /// Writes <c>outputDir/{tag}</c> atomically: the folder is assembled under a temporary name and renamed into
    /// place, so a crash or error leaves either the previous checkpoint of that name or none, never a partial one.
    /// LoRA keys in <paramref name="stateDict"/> are rejected (merge them first; pass the adapter separately). A
    /// <c>lm_head.weight</c> that shares memory with <c>model.embed_tokens.weight</c> is not written (HF tied layout).
    /// </summary>
    public static string Save(string outputDir, CheckpointTag tag, IReadOnlyDictionary<string, Tensor> stateDict,
        JsonObject config, string? sourceFolder, PeftAdapterExport? adapter = null,
        long maxShardBytes = SafetensorsWriter.DefaultMaxShardBytes)
    {
        if (tag.Kind is not ("epoch" or "step") || tag.Number < 0)
            throw new ArgumentException($"checkpoint tag must be epoch_N or step_N with N >= 0, got {tag.FolderName}", nameof(tag));
        return SaveFolder(Path.Combine(outputDir, tag.FolderName), stateDict, config, sourceFolder, adapter, maxShardBytes);
    }

    /// <summary>
    /// Writes the HF folder <paramref name="target"/> itself atomically (what the static Save does for
    /// <c>outputDir/{tag}</c>): safetensors shards, config.json with <c>torch_dtype</c> set from the weights, the
    /// support files of <paramref name="sourceFolder"/> and the adapter. Returns <paramref name="target"/>.
    /// </summary>
    public static string SaveFolder(string target, IReadOnlyDictionary<string, Tensor> stateDict, JsonObject config,
        string? sourceFolder, PeftAdapterExport? adapter = null, long maxShardBytes = SafetensorsWriter.DefaultMaxShardBytes)
    {
        var lora = stateDict.Keys.Where(PeftAdapter.IsAdapterKey).Take(3).ToArray();
        if (lora.Length > 0)
            throw new ArgumentException(
                $"the model state dict holds LoRA/DoRA tensors ({string.Join(", ", lora)}...): merge them into the base weights and pass the adapter via '{nameof(adapter)}'",
                nameof(stateDict));
        var weights = DropTiedHead(stateDict);
        var configOut = (JsonObject)config.DeepClone();
        if (FloatDtypeName(weights.Values) is { } dtypeName)
        {
            configOut["torch_dtype"] = dtypeName;
            if (configOut.ContainsKey("dtype")) configOut["dtype"] = dtypeName; // transformers >= 4.56 spelling
        }
        AtomicFile.WriteFolder(target, temp =>
        {
            SafetensorsWriter.SaveSharded(temp, weights, maxShardBytes);
            AtomicFile.WriteAllText(Path.Combine(temp, "config.json"), configOut.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            if (sourceFolder is not null) CopySupportFiles(sourceFolder, temp);
            if (adapter is not null) PeftAdapter.Save(temp, adapter.Weights, adapter.Config);
        });
        return target;
    }

    /// <summary>
    /// Deletes all but the newest <paramref name="keepLastN"/> <c>epoch_N</c> folders, and likewise <c>step_N</c>
    /// folders, in <paramref name="outputDir"/> (newest = highest N), never one named in <paramref name="keep"/> (the
    /// folder the committed recipe state names). Other folders are never touched. Each folder is first renamed to a
    /// hidden <c>.{name}.trash-{guid}</c> and then deleted, so a kill part-way leaves hidden trash, never a visible
    /// folder without its weights. Returns the folders deleted.
    /// </summary>
    public static IReadOnlyList<string> Prune(string outputDir, int keepLastN, IReadOnlyCollection<string>? keep = null)
    {
        if (keepLastN <= 0) throw new ArgumentOutOfRangeException(nameof(keepLastN), keepLastN, "must be at least 1");
        if (!Directory.Exists(outputDir)) return [];
        var deleted = new List<string>();
        var groups = Directory.EnumerateDirectories(outputDir)
            .Select(d => (Path: d, Match: CheckpointFolder.Match(Path.GetFileName(d))))
            .Where(x => x.Match.Success && long.TryParse(x.Match.Groups[2].Value, out _))
            .GroupBy(x => x.Match.Groups[1].Value);
        foreach (var group in groups)
            foreach (var old in group.OrderByDescending(x => long.Parse(x.Match.Groups[2].Value)).Skip(keepLastN))
            {
                var name = Path.GetFileName(old.Path);
                if (keep?.Contains(name) == true) continue;
                var trash = Path.Combine(outputDir, $".{name}.trash-{Guid.NewGuid():N}");
                CommitFs.MoveDirectory(old.Path, trash);
                CommitFs.DeleteDirectory(trash);
                deleted.Add(old.Path);
            }
        return deleted;
    }

    private static Dictionary<string, Tensor> DropTiedHead(IReadOnlyDictionary<string, Tensor> stateDict)
    {
        var result = stateDict.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        if (StateDictLoader.AliasGroups(result).TryGetValue("lm_head.weight", out var partners) &&
            partners.Contains("model.embed_tokens.weight"))
            result.Remove("lm_head.weight");
        return result;
    }

    private static string? FloatDtypeName(IEnumerable<Tensor> tensors)
    {
        var floats = tensors.Select(t => t.dtype).Where(d => d is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64)
            .Distinct().ToArray();
        if (floats.Length != 1) return null;
        return floats[0] switch
        {
            ScalarType.Float32 => "float32",
            ScalarType.BFloat16 => "bfloat16",
            ScalarType.Float16 => "float16",
            _ => "float64",
        };
    }

    private static void CopySupportFiles(string sourceFolder, string destination)
    {
        foreach (var rel in CopiedFiles)
        {
            var src = Path.Combine(sourceFolder, rel);
            if (!File.Exists(src)) continue;
            var dst = Path.Combine(destination, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(dst)!);
            File.Copy(src, dst, overwrite: true);
        }
    }
}

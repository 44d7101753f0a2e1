// LoRA/DoRA adapters in Hugging Face PEFT's on-disk format, so an adapter trained here loads with
// peft.PeftModel.from_pretrained and vice versa.
// References: PEFT utils/save_and_load.py (get_peft_model_state_dict drops the adapter name and saves DoRA's
// magnitude as "<module>.lora_magnitude_vector", without ".weight"); PEFT tuners/lora/config.py (LoraConfig fields);
// torchtune models/convert_weights.py (tune_to_peft_adapter_weights / _config: "base_model.model." prefix).
// Our state-dict keys are already HF keys in HF's rotary layout, so unlike torchtune no q/k permutation is needed.
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>An adapter to write next to a checkpoint: its config and its weights under model (HF) keys.</summary>
/// <param name="Config">The adapter_config.json contents.</param>
/// <param name="Weights">Adapter tensors keyed like the model's state dict (<c>...q_proj.lora_A.weight</c>).</param>
public sealed record PeftAdapterExport(PeftAdapterConfig Config, IReadOnlyDictionary<string, Tensor> Weights);

/// <summary>Reads and writes <c>adapter_model.safetensors</c> + <c>adapter_config.json</c> in PEFT's naming.</summary>
public static class PeftAdapter
{
    /// <summary>PEFT's adapter weights file name.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>PEFT's adapter config file name.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>The prefix PEFT's <c>PeftModelForCausalLM</c> puts before the base model's keys.</summary>
    public const string PeftPrefix = "base_model.model.";

    private static readonly string[] MagnitudeSuffixes = [".lora_magnitude_vector.weight", ".lora_magnitude_vector", ".magnitude"];

    /// <summary>True when <paramref name="modelKey"/> names a LoRA A/B matrix or a DoRA magnitude.</summary>
    public static bool IsAdapterKey(string modelKey) =>
        modelKey.EndsWith(".lora_A.weight", StringComparison.Ordinal) ||
        modelKey.EndsWith(".lora_B.weight", StringComparison.Ordinal) ||
        MagnitudeSuffixes.Any(s => modelKey.EndsWith(s, StringComparison.Ordinal));

    /// <summary>The adapter tensors of a full state dict (same tensor objects, no copy).</summary>
    public static Dictionary<string, Tensor> SelectAdapterWeights(IReadOnlyDictionary<string, Tensor> stateDict) =>
        stateDict.Where(p => IsAdapterKey(p.Key)).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);

    /// <summary>
    /// Model key to PEFT key: <c>model.layers.0.self_attn.q_proj.lora_A.weight</c> becomes
    /// <c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>; a DoRA magnitude
    /// (<c>.magnitude</c>, <c>.lora_magnitude_vector[.weight]</c>) becomes <c>base_model.model.&lt;module&gt;.lora_magnitude_vector</c>.
    /// </summary>
    public static string ToPeftKey(string modelKey)
    {
        if (modelKey.EndsWith(".lora_A.weight", StringComparison.Ordinal) || modelKey.EndsWith(".lora_B.weight", StringComparison.Ordinal))
            return PeftPrefix + modelKey;
        foreach (var s in MagnitudeSuffixes)
            if (modelKey.EndsWith(s, StringComparison.Ordinal))
                return PeftPrefix + modelKey[..^s.Length] + ".lora_magnitude_vector";
        throw new ArgumentException($"'{modelKey}' is not a LoRA/DoRA adapter key (expected ...lora_A.weight, ...lora_B.weight or a DoRA magnitude)", nameof(modelKey));
    }

    /// <summary>PEFT key to model key (the inverse of <see cref="ToPeftKey"/>; magnitudes map to <c>&lt;module&gt;.lora_magnitude_vector</c>).</summary>
    public static string FromPeftKey(string peftKey)
    {
        if (!peftKey.StartsWith(PeftPrefix, StringComparison.Ordinal))
            throw new ArgumentException($"PEFT key '{peftKey}' does not start with '{PeftPrefix}'", nameof(peftKey));
        var key = peftKey[PeftPrefix.Length..];
        if (key.EndsWith(".lora_A.weight", StringComparison.Ordinal) || key.EndsWith(".lora_B.weight", StringComparison.Ordinal) ||
            key.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal))
            return key;
        throw new ArgumentException($"PEFT key '{peftKey}' is not a LoRA A/B weight or DoRA magnitude", nameof(peftKey));
    }

    /// <summary>The HF module names (last key segment before the adapter part) that carry adapters, sorted.</summary>
    public static IReadOnlyList<string> TargetModulesOf(IEnumerable<string> modelKeys) =>
        modelKeys.Where(IsAdapterKey)
            .Select(k => ModulePath(ToPeftKey(k)[PeftPrefix.Length..]).Split('.')[^1])
            .Distinct().Order(StringComparer.Ordinal).ToArray();

    /// <summary>
    /// Writes <c>adapter_model.safetensors</c> (PEFT keys) and then <c>adapter_config.json</c> into
    /// <paramref name="folder"/>, each atomically. Checks that every LoRA pair has rank <c>config.R</c> and that the
    /// config's target modules cover every adapted module.
    /// </summary>
    public static void Save(string folder, IReadOnlyDictionary<string, Tensor> adapterWeights, PeftAdapterConfig config)
    {
        Validate(folder, adapterWeights.ToDictionary(p => p.Key, p => p.Value.shape, StringComparer.Ordinal), config);
        var peft = adapterWeights.ToDictionary(p => ToPeftKey(p.Key), p => p.Value, StringComparer.Ordinal);
        Directory.CreateDirectory(folder);
        SafetensorsWriter.Save(Path.Combine(folder, WeightsFileName), peft);
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFileName),
            config.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <summary>Reads a PEFT adapter folder; weights come back under model keys.</summary>
    public static (PeftAdapterConfig Config, Dictionary<string, Tensor> Weights) Load(string folder)
    {
        var configPath = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(configPath)) throw new CheckpointFormatException(folder, $"{ConfigFileName} not found");
        var weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(weightsPath))
            throw new CheckpointFormatException(folder,
                $"{WeightsFileName} not found" + (File.Exists(Path.Combine(folder, "adapter_model.bin")) ? " (adapter_model.bin is a pickle and is not read; convert it to safetensors)" : ""));
        var config = PeftAdapterConfig.FromJson(ReadJsonObject(configPath), configPath);
        using var file = SafetensorsFile.Open(weightsPath);
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var k in file.Keys)
        {
            string modelKey;
            try
            {
                modelKey = FromPeftKey(k);
            }
            catch (ArgumentException e)
            {
                throw new CheckpointFormatException(weightsPath, e.Message, e);
            }
            shapes[modelKey] = file.GetInfo(k).Shape;
        }
        if (config.TargetModules.Count == 0) config = config with { TargetModules = TargetModulesOf(shapes.Keys) };
        Validate(weightsPath, shapes, config);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var k in file.Keys) weights[FromPeftKey(k)] = file.Load(k);
        return (config, weights);
    }

    internal static JsonObject ReadJsonObject(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new CheckpointFormatException(path, "expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"not valid JSON: {e.Message}", e);
        }
    }

    private static string ModulePath(string key)
    {
        foreach (var s in new[] { ".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector" })
            if (key.EndsWith(s, StringComparison.Ordinal)) return key[..^s.Length];
        return key;
    }

    private static void Validate(string where, IReadOnlyDictionary<string, long[]> shapes, PeftAdapterConfig config)
    {
        var problems = new List<string>();
        var modules = shapes.Keys.Select(k => ModulePath(ToPeftKey(k)[PeftPrefix.Length..])).Distinct().Order(StringComparer.Ordinal);
        foreach (var m in modules)
        {
            shapes.TryGetValue(m + ".lora_A.weight", out var a);
            shapes.TryGetValue(m + ".lora_B.weight", out var b);
            if (a is null || b is null) problems.Add($"'{m}' needs both lora_A and lora_B");
            else if (a.Length != 2 || b.Length != 2 || a[0] != config.R || b[1] != config.R)
                problems.Add($"'{m}': lora_A [{string.Join(", ", a)}] / lora_B [{string.Join(", ", b)}] do not have rank r={config.R}");
            var hasMagnitude = shapes.Keys.Any(k => k.StartsWith(m + ".", StringComparison.Ordinal) && MagnitudeSuffixes.Any(s => k.EndsWith(s, StringComparison.Ordinal)));
            if (config.UseDora && !hasMagnitude) problems.Add($"'{m}': use_dora is set but the DoRA magnitude is missing");
            if (!config.UseDora && hasMagnitude) problems.Add($"'{m}': has a DoRA magnitude but use_dora is false");
            var name = m.Split('.')[^1];
            if (!config.TargetModules.Contains(name)) problems.Add($"'{m}': module '{name}' is not in target_modules [{string.Join(", ", config.TargetModules)}]");
        }
        if (problems.Count > 0)
            throw new CheckpointFormatException(where, $"adapter is inconsistent ({problems.Count} problems):\n  " + string.Join("\n  ", problems));
    }
}

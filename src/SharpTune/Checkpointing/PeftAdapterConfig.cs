// adapter_config.json for LoRA/DoRA, with PEFT's field names (PEFT tuners/lora/config.py, LoraConfig;
// config.py, PeftConfigMixin: peft_type, task_type, base_model_name_or_path).
using System.Text.Json.Nodes;

namespace SharpTune.Checkpointing;

/// <summary>The LoRA hyperparameters PEFT needs to rebuild an adapter.</summary>
public sealed record PeftAdapterConfig
{
    /// <summary>LoRA rank (<c>r</c>).</summary>
    public required int R { get; init; }

    /// <summary>LoRA alpha; the update is scaled by alpha / r (<c>lora_alpha</c>).</summary>
    public required double LoraAlpha { get; init; }

    /// <summary>HF module names carrying adapters, e.g. q_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [];

    /// <summary>Dropout on the LoRA input (<c>lora_dropout</c>).</summary>
    public double LoraDropout { get; init; }

    /// <summary>DoRA (<c>use_dora</c>): weight-decomposed LoRA with a magnitude vector per output row.</summary>
    public bool UseDora { get; init; }

    /// <summary>The base model's hub id or folder (<c>base_model_name_or_path</c>).</summary>
    public string? BaseModelNameOrPath { get; init; }

    /// <summary>PEFT task type; causal language modelling.</summary>
    public string TaskType { get; init; } = "CAUSAL_LM";

    /// <summary>Serialises with PEFT's field names.</summary>
    public JsonObject ToJson() => new()
    {
        ["base_model_name_or_path"] = BaseModelNameOrPath,
        ["bias"] = "none",
        ["fan_in_fan_out"] = false,
        ["inference_mode"] = true,
        ["lora_alpha"] = LoraAlpha,
        ["lora_dropout"] = LoraDropout,
        ["modules_to_save"] = null,
        ["peft_type"] = "LORA",
        ["r"] = R,
        ["target_modules"] = new JsonArray(TargetModules.Select(m => (JsonNode?)JsonValue.Create(m)).ToArray()),
        ["task_type"] = TaskType,
        ["use_dora"] = UseDora,
        ["use_rslora"] = false,
    };

    /// <summary>Parses PEFT's adapter_config.json; settings SharpTune cannot honour are errors, never ignored.</summary>
    public static PeftAdapterConfig FromJson(JsonObject json, string path)
    {
        string? Str(string k) => json[k] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        bool Flag(string k) => json[k] is JsonValue v && v.TryGetValue<bool>(out var b) && b;

        var peftType = Str("peft_type");
        if (peftType != "LORA")
            throw new CheckpointFormatException(path, $"peft_type '{peftType ?? "(missing)"}' is not supported (expected LORA)");
        if (json["r"] is not JsonValue rv || !rv.TryGetValue<int>(out var r) || r <= 0)
            throw new CheckpointFormatException(path, "'r' must be a positive integer");
        if (json["lora_alpha"] is not JsonValue av || !av.TryGetValue<double>(out var alpha))
            throw new CheckpointFormatException(path, "'lora_alpha' must be a number");
        var dropout = json["lora_dropout"] is JsonValue dv && dv.TryGetValue<double>(out var d) ? d : 0.0;
        if (Str("bias") is { } bias && bias != "none")
            throw new CheckpointFormatException(path, $"bias '{bias}' is not supported (expected none)");
        if (Flag("use_rslora")) throw new CheckpointFormatException(path, "use_rslora (alpha / sqrt(r) scaling) is not supported");
        if (Flag("fan_in_fan_out")) throw new CheckpointFormatException(path, "fan_in_fan_out is not supported");
        foreach (var k in new[] { "rank_pattern", "alpha_pattern" })
            if (json[k] is JsonObject o && o.Count > 0)
                throw new CheckpointFormatException(path, $"'{k}' (per-module rank/alpha) is not supported");
        if (json["modules_to_save"] is JsonArray { Count: > 0 })
            throw new CheckpointFormatException(path, "'modules_to_save' is not supported");
        IReadOnlyList<string> targets = json["target_modules"] switch
        {
            JsonArray arr => arr.Select(n => n?.GetValue<string>() ?? throw new CheckpointFormatException(path, "target_modules holds a null")).ToArray(),
            // A regex string: the adapted modules are then read from the weights.
            JsonValue => [],
            null => [],
            var other => throw new CheckpointFormatException(path, $"target_modules must be a list or a string, found {other.GetValueKind()}"),
        };
        return new PeftAdapterConfig
        {
            R = r,
            LoraAlpha = alpha,
            LoraDropout = dropout,
            TargetModules = targets,
            UseDora = Flag("use_dora"),
            BaseModelNameOrPath = Str("base_model_name_or_path"),
            TaskType = Str("task_type") ?? "CAUSAL_LM",
        };
    }
}

// LoRA/DoRA settings as torchtune's lora_* builders take them (lora_attn_modules, apply_lora_to_mlp,
// apply_lora_to_output, lora_rank, lora_alpha, lora_dropout, use_dora).
namespace SharpTune.Models;

/// <summary>Where and how to apply LoRA.</summary>
public sealed record LoraOptions
{
    /// <summary>Attention projections to adapt: any of q_proj, k_proj, v_proj, output_proj (o_proj is accepted too).</summary>
    public required IReadOnlyList<string> AttnModules { get; init; }

    /// <summary>Adapt gate_proj, up_proj and down_proj.</summary>
    public bool ApplyToMlp { get; init; }

    /// <summary>Adapt the output projection (lm_head); impossible with tied embeddings.</summary>
    public bool ApplyToOutput { get; init; }

    /// <summary>Rank r.</summary>
    public int Rank { get; init; } = 8;

    /// <summary>Alpha (scale = alpha / r).</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>Dropout on the adapter input.</summary>
    public double Dropout { get; init; }

    /// <summary>DoRA instead of LoRA.</summary>
    public bool UseDora { get; init; }

    private static readonly string[] Known = ["q_proj", "k_proj", "v_proj", "output_proj", "o_proj"];

    /// <summary>True when <paramref name="hfName"/> (q_proj, k_proj, v_proj, o_proj) is listed.</summary>
    public bool AdaptsAttention(string hfName) =>
        AttnModules.Contains(hfName) || (hfName == "o_proj" && AttnModules.Contains("output_proj"));

    /// <summary>Throws on unknown module names or bad numbers.</summary>
    public void Validate()
    {
        foreach (var m in AttnModules)
            if (!Known.Contains(m))
                throw new ArgumentException($"unknown lora_attn_modules entry '{m}'; expected one of {string.Join(", ", Known)}");
        if (Rank <= 0) throw new ArgumentException($"lora_rank must be positive, got {Rank}");
        if (Dropout is < 0 or >= 1) throw new ArgumentException($"lora_dropout must be in [0, 1), got {Dropout}");
    }
}

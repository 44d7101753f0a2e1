// Qwen2 / Qwen2.5 builders with the published hyperparameters (HF config.json of each checkpoint; torchtune
// models/qwen2/_model_builders.py, models/qwen2_5/_model_builders.py). Qwen2 differs from Llama only in q/k/v bias,
// RMSNorm eps and RoPE base 1e6. max_seq_len is 32768 (the context the models were trained for; torchtune uses the same).
using SharpTune.Config;
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Models.Qwen2;

/// <summary>Qwen2 and Qwen2.5 model builders (base and LoRA).</summary>
public static class Qwen2Models
{
    private static readonly string[] DefaultLoraAttn = ["q_proj", "v_proj", "output_proj"];

    /// <summary>Qwen2-0.5B architecture. https://huggingface.co/Qwen/Qwen2-0.5B/blob/main/config.json</summary>
    public static DecoderArgs Qwen2_0_5BArgs() => new()
    {
        VocabSize = 151_936, NumLayers = 24, NumHeads = 14, NumKvHeads = 2, EmbedDim = 896, IntermediateDim = 4_864,
        MaxSeqLen = 32_768, NormEps = 1e-06, RopeBase = 1_000_000, TieEmbeddings = true, QkvBias = true,
    };

    /// <summary>Qwen2-0.5B.</summary>
    [Component("sharptune.models.qwen2.qwen2_0_5b")]
    public static TransformerDecoder Qwen2_0_5B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_0_5BArgs(), null, device, dtype);

    /// <summary>Qwen2-0.5B with LoRA/DoRA adapters (tied output: apply_lora_to_output is rejected).</summary>
    [Component("sharptune.models.qwen2.lora_qwen2_0_5b")]
    public static TransformerDecoder LoraQwen2_0_5B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_0_5BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Qwen2-1.5B architecture. https://huggingface.co/Qwen/Qwen2-1.5B/blob/main/config.json</summary>
    public static DecoderArgs Qwen2_1_5BArgs() => new()
    {
        VocabSize = 151_936, NumLayers = 28, NumHeads = 12, NumKvHeads = 2, EmbedDim = 1_536, IntermediateDim = 8_960,
        MaxSeqLen = 32_768, NormEps = 1e-06, RopeBase = 1_000_000, TieEmbeddings = true, QkvBias = true,
    };

    /// <summary>Qwen2-1.5B.</summary>
    [Component("sharptune.models.qwen2.qwen2_1_5b")]
    public static TransformerDecoder Qwen2_1_5B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_1_5BArgs(), null, device, dtype);

    /// <summary>Qwen2-1.5B with LoRA/DoRA adapters (tied output: apply_lora_to_output is rejected).</summary>
    [Component("sharptune.models.qwen2.lora_qwen2_1_5b")]
    public static TransformerDecoder LoraQwen2_1_5B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_1_5BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Qwen2-7B architecture. https://huggingface.co/Qwen/Qwen2-7B/blob/main/config.json</summary>
    public static DecoderArgs Qwen2_7BArgs() => new()
    {
        VocabSize = 152_064, NumLayers = 28, NumHeads = 28, NumKvHeads = 4, EmbedDim = 3_584, IntermediateDim = 18_944,
        MaxSeqLen = 32_768, NormEps = 1e-06, RopeBase = 1_000_000, TieEmbeddings = false, QkvBias = true,
    };

    /// <summary>Qwen2-7B.</summary>
    [Component("sharptune.models.qwen2.qwen2_7b")]
    public static TransformerDecoder Qwen2_7B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_7BArgs(), null, device, dtype);

    /// <summary>Qwen2-7B with LoRA/DoRA adapters.</summary>
    [Component("sharptune.models.qwen2.lora_qwen2_7b")]
    public static TransformerDecoder LoraQwen2_7B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_7BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Qwen2.5-0.5B architecture. https://huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json</summary>
    public static DecoderArgs Qwen2_5_0_5BArgs() => new()
    {
        VocabSize = 151_936, NumLayers = 24, NumHeads = 14, NumKvHeads = 2, EmbedDim = 896, IntermediateDim = 4_864,
        MaxSeqLen = 32_768, NormEps = 1e-06, RopeBase = 1_000_000, TieEmbeddings = true, QkvBias = true,
    };

    /// <summary>Qwen2.5-0.5B.</summary>
    [Component("sharptune.models.qwen2_5.qwen2_5_0_5b")]
    public static TransformerDecoder Qwen2_5_0_5B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_5_0_5BArgs(), null, device, dtype);

    /// <summary>Qwen2.5-0.5B with LoRA/DoRA adapters (tied output: apply_lora_to_output is rejected).</summary>
    [Component("sharptune.models.qwen2_5.lora_qwen2_5_0_5b")]
    public static TransformerDecoder LoraQwen2_5_0_5B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_5_0_5BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Qwen2.5-1.5B architecture. https://huggingface.co/Qwen/Qwen2.5-1.5B/blob/main/config.json</summary>
    public static DecoderArgs Qwen2_5_1_5BArgs() => new()
    {
        VocabSize = 151_936, NumLayers = 28, NumHeads = 12, NumKvHeads = 2, EmbedDim = 1_536, IntermediateDim = 8_960,
        MaxSeqLen = 32_768, NormEps = 1e-06, RopeBase = 1_000_000, TieEmbeddings = true, QkvBias = true,
    };

    /// <summary>Qwen2.5-1.5B.</summary>
    [Component("sharptune.models.qwen2_5.qwen2_5_1_5b")]
    public static TransformerDecoder Qwen2_5_1_5B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_5_1_5BArgs(), null, device, dtype);

    /// <summary>Qwen2.5-1.5B with LoRA/DoRA adapters (tied output: apply_lora_to_output is rejected).</summary>
    [Component("sharptune.models.qwen2_5.lora_qwen2_5_1_5b")]
    public static TransformerDecoder LoraQwen2_5_1_5B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_5_1_5BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Qwen2.5-3B architecture. https://huggingface.co/Qwen/Qwen2.5-3B/blob/main/config.json</summary>
    public static DecoderArgs Qwen2_5_3BArgs() => new()
    {
        VocabSize = 151_936, NumLayers = 36, NumHeads = 16, NumKvHeads = 2, EmbedDim = 2_048, IntermediateDim = 11_008,
        MaxSeqLen = 32_768, NormEps = 1e-06, RopeBase = 1_000_000, TieEmbeddings = true, QkvBias = true,
    };

    /// <summary>Qwen2.5-3B.</summary>
    [Component("sharptune.models.qwen2_5.qwen2_5_3b")]
    public static TransformerDecoder Qwen2_5_3B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_5_3BArgs(), null, device, dtype);

    /// <summary>Qwen2.5-3B with LoRA/DoRA adapters (tied output: apply_lora_to_output is rejected).</summary>
    [Component("sharptune.models.qwen2_5.lora_qwen2_5_3b")]
    public static TransformerDecoder LoraQwen2_5_3B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_5_3BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Qwen2.5-7B architecture. https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json</summary>
    public static DecoderArgs Qwen2_5_7BArgs() => new()
    {
        VocabSize = 152_064, NumLayers = 28, NumHeads = 28, NumKvHeads = 4, EmbedDim = 3_584, IntermediateDim = 18_944,
        MaxSeqLen = 32_768, NormEps = 1e-06, RopeBase = 1_000_000, TieEmbeddings = false, QkvBias = true,
    };

    /// <summary>Qwen2.5-7B.</summary>
    [Component("sharptune.models.qwen2_5.qwen2_5_7b")]
    public static TransformerDecoder Qwen2_5_7B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_5_7BArgs(), null, device, dtype);

    /// <summary>Qwen2.5-7B with LoRA/DoRA adapters.</summary>
    [Component("sharptune.models.qwen2_5.lora_qwen2_5_7b")]
    public static TransformerDecoder LoraQwen2_5_7B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_5_7BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Qwen2.5-14B architecture. https://huggingface.co/Qwen/Qwen2.5-14B/blob/main/config.json Base checkpoint; the -Instruct config uses rms_norm_eps 1e-6.</summary>
    public static DecoderArgs Qwen2_5_14BArgs() => new()
    {
        VocabSize = 152_064, NumLayers = 48, NumHeads = 40, NumKvHeads = 8, EmbedDim = 5_120, IntermediateDim = 13_824,
        MaxSeqLen = 32_768, NormEps = 1e-05, RopeBase = 1_000_000, TieEmbeddings = false, QkvBias = true,
    };

    /// <summary>Qwen2.5-14B.</summary>
    [Component("sharptune.models.qwen2_5.qwen2_5_14b")]
    public static TransformerDecoder Qwen2_5_14B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Qwen2_5_14BArgs(), null, device, dtype);

    /// <summary>Qwen2.5-14B with LoRA/DoRA adapters.</summary>
    [Component("sharptune.models.qwen2_5.lora_qwen2_5_14b")]
    public static TransformerDecoder LoraQwen2_5_14B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Qwen2_5_14BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);
}

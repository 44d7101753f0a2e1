// Llama 3.1 / 3.2 builders with the published hyperparameters (HF config.json of each checkpoint; torchtune
// models/llama3_1/_model_builders.py and models/llama3_2/_model_builders.py).
using SharpTune.Config;
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Models.Llama3;

/// <summary>Llama 3.x model builders (base and LoRA).</summary>
public static class Llama3Models
{
    private static readonly string[] DefaultLoraAttn = ["q_proj", "v_proj", "output_proj"];

    /// <summary>Llama 3.1 8B architecture. https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json</summary>
    public static DecoderArgs Llama3_1_8BArgs() => new()
    {
        VocabSize = 128_256, NumLayers = 32, NumHeads = 32, NumKvHeads = 8, EmbedDim = 4096, IntermediateDim = 14_336,
        MaxSeqLen = 131_072, NormEps = 1e-5, RopeBase = 500_000, RopeScaling = new Llama3RopeScaling(8, 1, 4, 8192), TieEmbeddings = false,
    };

    /// <summary>Llama 3.1 70B architecture. https://huggingface.co/meta-llama/Llama-3.1-70B/blob/main/config.json</summary>
    public static DecoderArgs Llama3_1_70BArgs() => new()
    {
        VocabSize = 128_256, NumLayers = 80, NumHeads = 64, NumKvHeads = 8, EmbedDim = 8192, IntermediateDim = 28_672,
        MaxSeqLen = 131_072, NormEps = 1e-5, RopeBase = 500_000, RopeScaling = new Llama3RopeScaling(8, 1, 4, 8192), TieEmbeddings = false,
    };

    /// <summary>Llama 3.2 1B architecture. https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json</summary>
    public static DecoderArgs Llama3_2_1BArgs() => new()
    {
        VocabSize = 128_256, NumLayers = 16, NumHeads = 32, NumKvHeads = 8, EmbedDim = 2048, IntermediateDim = 8192,
        MaxSeqLen = 131_072, NormEps = 1e-5, RopeBase = 500_000, RopeScaling = new Llama3RopeScaling(32, 1, 4, 8192), TieEmbeddings = true,
    };

    /// <summary>Llama 3.2 3B architecture. https://huggingface.co/meta-llama/Llama-3.2-3B/blob/main/config.json</summary>
    public static DecoderArgs Llama3_2_3BArgs() => new()
    {
        VocabSize = 128_256, NumLayers = 28, NumHeads = 24, NumKvHeads = 8, EmbedDim = 3072, IntermediateDim = 8192,
        MaxSeqLen = 131_072, NormEps = 1e-5, RopeBase = 500_000, RopeScaling = new Llama3RopeScaling(32, 1, 4, 8192), TieEmbeddings = true,
    };

    /// <summary>Llama 3.1 8B.</summary>
    [Component("sharptune.models.llama3_1.llama3_1_8b")]
    public static TransformerDecoder Llama3_1_8B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Llama3_1_8BArgs(), null, device, dtype);

    /// <summary>Llama 3.1 70B.</summary>
    [Component("sharptune.models.llama3_1.llama3_1_70b")]
    public static TransformerDecoder Llama3_1_70B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Llama3_1_70BArgs(), null, device, dtype);

    /// <summary>Llama 3.2 1B.</summary>
    [Component("sharptune.models.llama3_2.llama3_2_1b")]
    public static TransformerDecoder Llama3_2_1B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Llama3_2_1BArgs(), null, device, dtype);

    /// <summary>Llama 3.2 3B.</summary>
    [Component("sharptune.models.llama3_2.llama3_2_3b")]
    public static TransformerDecoder Llama3_2_3B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Llama3_2_3BArgs(), null, device, dtype);

    /// <summary>Llama 3.1 8B with LoRA/DoRA adapters.</summary>
    [Component("sharptune.models.llama3_1.lora_llama3_1_8b")]
    public static TransformerDecoder LoraLlama3_1_8B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Llama3_1_8BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Llama 3.1 70B with LoRA/DoRA adapters.</summary>
    [Component("sharptune.models.llama3_1.lora_llama3_1_70b")]
    public static TransformerDecoder LoraLlama3_1_70B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Llama3_1_70BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Llama 3.2 1B with LoRA/DoRA adapters (tied output: apply_lora_to_output is rejected).</summary>
    [Component("sharptune.models.llama3_2.lora_llama3_2_1b")]
    public static TransformerDecoder LoraLlama3_2_1B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Llama3_2_1BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);

    /// <summary>Llama 3.2 3B with LoRA/DoRA adapters (tied output: apply_lora_to_output is rejected).</summary>
    [Component("sharptune.models.llama3_2.lora_llama3_2_3b")]
    public static TransformerDecoder LoraLlama3_2_3B(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Llama3_2_3BArgs(), DecoderBuilder.Lora(loraAttnModules ?? DefaultLoraAttn, applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora), device, dtype);
}

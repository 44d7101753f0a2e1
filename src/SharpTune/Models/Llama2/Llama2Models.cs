// Llama 2-architecture builders (no RoPE scaling, theta 1e4): Llama 2 7B, TinyLlama 1.1B, Karpathy's llama2.c
// TinyStories models, and tiny random configurations for tests.
using SharpTune.Config;
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Models.Llama2;

/// <summary>Llama 2-family and tiny test builders.</summary>
public static class Llama2Models
{
    /// <summary>Llama 2 7B architecture. https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json</summary>
    public static DecoderArgs Llama2_7BArgs() => new()
    {
        VocabSize = 32_000, NumLayers = 32, NumHeads = 32, NumKvHeads = 32, EmbedDim = 4096, IntermediateDim = 11_008,
        MaxSeqLen = 4096, NormEps = 1e-5, RopeBase = 10_000, TieEmbeddings = false,
    };

    /// <summary>TinyLlama 1.1B architecture. https://huggingface.co/TinyLlama/TinyLlama-1.1B-Chat-v1.0/blob/main/config.json</summary>
    public static DecoderArgs TinyLlama1_1BArgs() => new()
    {
        VocabSize = 32_000, NumLayers = 22, NumHeads = 32, NumKvHeads = 4, EmbedDim = 2048, IntermediateDim = 5632,
        MaxSeqLen = 2048, NormEps = 1e-5, RopeBase = 10_000, TieEmbeddings = false,
    };

    /// <summary>llama2.c stories260K architecture (dim 64, 5 layers, 8 heads, 4 kv heads, vocab 512, tied).
    /// https://huggingface.co/karpathy/tinyllamas/tree/main/stories260K</summary>
    public static DecoderArgs Stories260KArgs() => new()
    {
        VocabSize = 512, NumLayers = 5, NumHeads = 8, NumKvHeads = 4, EmbedDim = 64, IntermediateDim = 172,
        MaxSeqLen = 512, NormEps = 1e-5, RopeBase = 10_000, TieEmbeddings = true,
    };

    /// <summary>A tiny random GQA model for tests (vocab 64, d 32, 2 layers, 4 heads, 2 kv heads).</summary>
    public static DecoderArgs TinyArgs(bool tieEmbeddings = true, bool qkvBias = false, Llama3RopeScaling? ropeScaling = null) => new()
    {
        VocabSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, EmbedDim = 32, IntermediateDim = 48,
        MaxSeqLen = 64, NormEps = 1e-5, RopeBase = 10_000, RopeScaling = ropeScaling, TieEmbeddings = tieEmbeddings, QkvBias = qkvBias,
    };

    /// <summary>Llama 2 7B.</summary>
    [Component("sharptune.models.llama2.llama2_7b")]
    public static TransformerDecoder Llama2_7B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Llama2_7BArgs(), null, device, dtype);

    /// <summary>TinyLlama 1.1B.</summary>
    [Component("sharptune.models.llama2.tinyllama_1_1b")]
    public static TransformerDecoder TinyLlama1_1B(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(TinyLlama1_1BArgs(), null, device, dtype);

    /// <summary>llama2.c stories260K (load weights with the llama2.c importer).</summary>
    [Component("sharptune.models.llama2.stories260k")]
    public static TransformerDecoder Stories260K(Device? device = null, ScalarType dtype = ScalarType.Float32) => DecoderBuilder.Build(Stories260KArgs(), null, device, dtype);

    /// <summary>A tiny random model for tests and smoke runs.</summary>
    [Component("sharptune.models.llama2.tiny")]
    public static TransformerDecoder Tiny(bool tieEmbeddings = true, bool qkvBias = false) => DecoderBuilder.Build(TinyArgs(tieEmbeddings, qkvBias));

    /// <summary>A tiny random model with LoRA for tests and smoke runs.</summary>
    [Component("sharptune.models.llama2.lora_tiny")]
    public static TransformerDecoder LoraTiny(IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 4, double loraAlpha = 8, double loraDropout = 0.0, bool useDora = false,
        bool tieEmbeddings = true, bool qkvBias = false) =>
        DecoderBuilder.Build(TinyArgs(tieEmbeddings, qkvBias),
            DecoderBuilder.Lora(loraAttnModules ?? ["q_proj", "v_proj"], applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha, loraDropout, useDora));
}

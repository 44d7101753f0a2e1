// torchtune's generic component builders (torchtune/models/llama3/_component_builders.py `llama3`, `lora_llama3`):
// a Llama-3-style decoder whose every hyperparameter is a config key, for custom sizes such as the tiny models the
// tiny configs train on CPU in seconds. The named builders (Llama3Models) fix the published numbers instead.
using SharpTune.Config;
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Models.Llama3;

/// <summary>Llama-3-style decoders with explicit hyperparameters.</summary>
public static class Llama3ComponentBuilders
{
    /// <summary>A Llama-3-style decoder of any size (torchtune <c>llama3(...)</c>).</summary>
    [Component("sharptune.models.llama3.llama3")]
    public static TransformerDecoder Llama3(int vocabSize, int numLayers, int numHeads, int numKvHeads, int embedDim,
        int intermediateDim, int maxSeqLen, double normEps = 1e-5, double ropeBase = 500_000, bool tieEmbeddings = false,
        bool qkvBias = false, int? headDim = null, Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Args(vocabSize, numLayers, numHeads, numKvHeads, embedDim, intermediateDim, maxSeqLen, normEps,
            ropeBase, tieEmbeddings, qkvBias, headDim), null, device, dtype);

    /// <summary>The same decoder with LoRA/DoRA adapters (torchtune <c>lora_llama3(...)</c>); base weights frozen.</summary>
    [Component("sharptune.models.llama3.lora_llama3")]
    public static TransformerDecoder LoraLlama3(int vocabSize, int numLayers, int numHeads, int numKvHeads, int embedDim,
        int intermediateDim, int maxSeqLen, IReadOnlyList<string>? loraAttnModules = null, bool applyLoraToMlp = false,
        bool applyLoraToOutput = false, int loraRank = 8, double loraAlpha = 16, double loraDropout = 0.0, bool useDora = false,
        double normEps = 1e-5, double ropeBase = 500_000, bool tieEmbeddings = false, bool qkvBias = false, int? headDim = null,
        Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(Args(vocabSize, numLayers, numHeads, numKvHeads, embedDim, intermediateDim, maxSeqLen, normEps,
                ropeBase, tieEmbeddings, qkvBias, headDim),
            DecoderBuilder.Lora(loraAttnModules ?? ["q_proj", "v_proj"], applyLoraToMlp, applyLoraToOutput, loraRank, loraAlpha,
                loraDropout, useDora), device, dtype);

    private static DecoderArgs Args(int vocabSize, int numLayers, int numHeads, int numKvHeads, int embedDim, int intermediateDim,
        int maxSeqLen, double normEps, double ropeBase, bool tieEmbeddings, bool qkvBias, int? headDim) => new()
    {
        VocabSize = vocabSize, NumLayers = numLayers, NumHeads = numHeads, NumKvHeads = numKvHeads, EmbedDim = embedDim,
        IntermediateDim = intermediateDim, MaxSeqLen = maxSeqLen, NormEps = normEps, RopeBase = ropeBase,
        TieEmbeddings = tieEmbeddings, QkvBias = qkvBias, HeadDim = headDim,
    };
}

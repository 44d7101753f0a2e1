// Composes a TransformerDecoder from DecoderArgs, putting LoraLinear where LoRA is requested and nn.Linear
// elsewhere (torchtune's lora_llama3/lora_qwen2 component builders, collapsed into one since the families share
// the architecture and differ only in numbers and q/k/v bias).
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Models;

/// <summary>Builds Llama-family decoders from their hyperparameters.</summary>
public static class DecoderBuilder
{
    /// <summary>
    /// Builds the model on <paramref name="device"/> (CPU by default; <c>meta</c> allocates nothing) in
    /// <paramref name="dtype"/>. With <paramref name="lora"/>, base weights are frozen and only adapters train.
    /// </summary>
    public static TransformerDecoder Build(DecoderArgs args, LoraOptions? lora = null, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        args.Validate();
        lora?.Validate();
        if (lora is { ApplyToOutput: true } && args.TieEmbeddings)
            throw new ArgumentException("apply_lora_to_output is not supported with tied embeddings (the output is the token embedding); set apply_lora_to_output: False");
        device ??= CPU;
        var d = args.EmbedDim;
        var hd = args.ResolvedHeadDim;

        nn.Module<Tensor, Tensor> Proj(long inF, long outF, bool bias, bool adapt) => adapt && lora is not null
            ? new LoraLinear(inF, outF, lora.Rank, lora.Alpha, lora.Dropout, bias, lora.UseDora, device, dtype)
            : nn.Linear(inF, outF, bias, device, dtype);

        var layers = new List<DecoderLayer>(args.NumLayers);
        for (var i = 0; i < args.NumLayers; i++)
        {
            var attn = new Attention(args.NumHeads, args.NumKvHeads, hd,
                Proj(d, args.NumHeads * hd, args.QkvBias, lora?.AdaptsAttention("q_proj") ?? false),
                Proj(d, args.NumKvHeads * hd, args.QkvBias, lora?.AdaptsAttention("k_proj") ?? false),
                Proj(d, args.NumKvHeads * hd, args.QkvBias, lora?.AdaptsAttention("v_proj") ?? false),
                Proj(args.NumHeads * hd, d, false, lora?.AdaptsAttention("o_proj") ?? false));
            var mlpLora = lora?.ApplyToMlp ?? false;
            var mlp = new FeedForward(
                Proj(d, args.IntermediateDim, false, mlpLora),
                Proj(d, args.IntermediateDim, false, mlpLora),
                Proj(args.IntermediateDim, d, false, mlpLora));
            layers.Add(new DecoderLayer(attn, mlp,
                new RmsNorm(d, args.NormEps, device, dtype), new RmsNorm(d, args.NormEps, device, dtype)));
        }
        var stack = new DecoderStack(new TokenEmbedding(args.VocabSize, d, device, dtype), layers, new RmsNorm(d, args.NormEps, device, dtype));
        var lmHead = args.TieEmbeddings ? null : Proj(d, args.VocabSize, false, lora?.ApplyToOutput ?? false);
        var model = new TransformerDecoder(args, stack, lmHead);
        if (lora is not null) Adapters.SetAdapterOnlyTrainable(model);
        return model;
    }

    /// <summary>Assembles <see cref="LoraOptions"/> from torchtune-style builder arguments.</summary>
    public static LoraOptions Lora(IEnumerable<string> loraAttnModules, bool applyLoraToMlp, bool applyLoraToOutput,
        int loraRank, double loraAlpha, double loraDropout, bool useDora) => new()
    {
        AttnModules = loraAttnModules.ToList(),
        ApplyToMlp = applyLoraToMlp,
        ApplyToOutput = applyLoraToOutput,
        Rank = loraRank,
        Alpha = loraAlpha,
        Dropout = loraDropout,
        UseDora = useDora,
    };
}

// Builds a decoder from an HF config.json (the generic counterpart of the per-size builders).
using SharpTune.Config;
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Models;

/// <summary>Builders driven by a Hugging Face <c>config.json</c>.</summary>
public static class HfModels
{
    /// <summary>Builds the architecture <paramref name="config"/> describes, optionally with LoRA.</summary>
    public static TransformerDecoder FromConfig(HfModelConfig config, LoraOptions? lora = null, Device? device = null, ScalarType dtype = ScalarType.Float32) =>
        DecoderBuilder.Build(config.ToDecoderArgs(), lora, device, dtype);

    /// <summary>Builds the model described by the config.json at <paramref name="configPath"/> (random weights).</summary>
    [Component("sharptune.models.from_hf_config")]
    public static TransformerDecoder FromConfigFile(string configPath) => FromConfig(HfModelConfig.Parse(configPath));
}

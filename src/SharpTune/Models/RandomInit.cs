// Random weights as Hugging Face initialises a fresh Llama/Qwen2 model, and a real-shape HF folder made from a
// config.json with them (`sharptune init`, the recipes' random_init_checkpoint, bench/RealShapes).
// transformers' LlamaPreTrainedModel._init_weights / Qwen2PreTrainedModel._init_weights: nn.Linear weight
// ~ N(0, initializer_range) and bias 0, nn.Embedding ~ N(0, initializer_range), RMSNorm weight 1. initializer_range
// is 0.02 in every Llama 3 and Qwen2 config.json. torch.nn's own defaults (Embedding N(0, 1), Linear kaiming-uniform)
// are what a TransformerDecoder gets at construction; with N(0, 1) embeddings tied to the output projection a real-
// shape model starts with logits of standard deviation sqrt(d) ~ 30-45 and a first loss in the hundreds.
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Modules;
using SharpTune.Modules.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Models;

/// <summary>HF-style random initialisation of a decoder's base weights.</summary>
public static class RandomInit
{
    /// <summary>initializer_range of the Llama 3 and Qwen2 config.json files.</summary>
    public const double HfStd = 0.02;

    /// <summary>
    /// Redraws <paramref name="model"/>'s base weights in place from a CPU generator seeded with <paramref name="seed"/>
    /// (libtorch's global generator is left as it was, so a run that creates its weights and one that finds them
    /// continue with the same random state): every matrix (projections, embeddings) N(0, <paramref name="std"/>),
    /// every bias 0; norm weights and LoRA/DoRA adapter tensors are left as they are. A tied matrix is drawn once.
    /// </summary>
    public static void HfStyle(TransformerDecoder model, long seed, double std = HfStd)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!(std > 0)) throw new ArgumentOutOfRangeException(nameof(std), std, "must be positive");
        using var generator = new Generator(unchecked((ulong)seed));
        using var noGrad = no_grad();
        var seen = new HashSet<IntPtr>();
        foreach (var (name, p) in model.named_parameters())
        {
            if (Adapters.IsAdapterKey(name) || !seen.Add(p.Handle)) continue;
            if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
            else if (p.dim() == 2)
            {
                // Drawn in fp32 on the CPU, then copied: the same values whatever the model's device, one matrix at a time.
                using var draw = empty(p.shape, ScalarType.Float32).normal_(0, std, generator);
                p.copy_(draw);
            }
        }
    }

    /// <summary>
    /// Writes an HF folder <paramref name="outputDir"/> (config.json + safetensors) for the model that
    /// <paramref name="configPath"/> describes, with weights drawn by <see cref="HfStyle"/> (std: the file's
    /// initializer_range, else 0.02, unless <paramref name="std"/> is given) from <paramref name="seed"/>, in
    /// <paramref name="dtype"/>. Written atomically; refuses a folder that already holds a config.json.
    /// </summary>
    public static InitReport WriteHfFolder(string configPath, string outputDir, long seed, ScalarType dtype, double? std = null)
    {
        var config = HfModelConfig.Parse(configPath);
        var json = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        if (File.Exists(Path.Combine(outputDir, "config.json")))
            throw new IOException($"{outputDir} already holds a config.json: refusing to overwrite a model folder (choose an empty folder)");
        var sigma = std ?? (json["initializer_range"] is JsonValue v && v.TryGetValue<double>(out var r) ? r : HfStd);
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new ArgumentException($"dtype must be float32 or bfloat16, got {dtype}", nameof(dtype));
        using var model = HfModels.FromConfig(config, dtype: dtype);
        HfStyle(model, seed, sigma);
        HfCheckpointer.SaveFolder(outputDir, model.state_dict(), json, sourceFolder: null);
        return new InitReport(Path.GetFullPath(outputDir), ModuleParameters.Count(model), sigma, dtype);
    }
}

/// <summary>What <see cref="RandomInit.WriteHfFolder"/> wrote.</summary>
/// <param name="Folder">The HF folder.</param>
/// <param name="Parameters">Distinct parameters (a tied matrix counted once).</param>
/// <param name="Std">The standard deviation of the matrices.</param>
/// <param name="Dtype">The stored element type.</param>
public sealed record InitReport(string Folder, long Parameters, double Std, ScalarType Dtype);

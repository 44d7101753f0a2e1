// Helpers around LoRA/DoRA adapters, after torchtune.modules.peft (get_adapter_params, set_trainable_params,
// get_merged_lora_ckpt) and PEFT's naming (target_modules, lora_A/lora_B keys).
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Modules.Peft;

/// <summary>Trainable-set, merge and adapter state-dict helpers for models containing <see cref="LoraLinear"/>.</summary>
public static class Adapters
{
    /// <summary>Suffixes of adapter tensors in state-dict keys.</summary>
    public static readonly IReadOnlyList<string> AdapterKeySuffixes = [".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector"];

    /// <summary>True when <paramref name="key"/> names an adapter tensor (lora_A, lora_B or DoRA magnitude).</summary>
    public static bool IsAdapterKey(string key) => AdapterKeySuffixes.Any(key.EndsWith);

    /// <summary>All LoRA layers with their module paths (e.g. <c>model.layers.0.self_attn.q_proj</c>).</summary>
    public static IReadOnlyList<(string Name, LoraLinear Layer)> LoraLayers(nn.Module module) =>
        module.named_modules().Where(m => m.module is LoraLinear).Select(m => (m.name, (LoraLinear)m.module)).ToList();

    /// <summary>Freezes everything except adapter parameters (torchtune's set_trainable_params(get_adapter_params)).</summary>
    public static void SetAdapterOnlyTrainable(nn.Module module)
    {
        foreach (var (name, p) in module.named_parameters()) p.requires_grad = IsAdapterKey(name);
    }

    /// <summary>Initialises every DoRA magnitude from the current base weights; call after loading a checkpoint.</summary>
    public static void InitializeDoraMagnitudes(nn.Module module)
    {
        foreach (var (_, layer) in LoraLayers(module))
            if (layer.UseDora) layer.InitializeDoraMagnitude();
    }

    /// <summary>The adapter tensors keyed by HF module path (<c>model.layers.0.self_attn.q_proj.lora_A.weight</c>).
    /// PEFT files prefix these with <c>base_model.model.</c>.</summary>
    public static Dictionary<string, Tensor> AdapterStateDict(nn.Module module) =>
        module.state_dict().Where(kv => IsAdapterKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);

    /// <summary>
    /// The state dict with every LoRA layer merged into its base weight and adapter keys removed: plain HF layout
    /// (what a merged checkpoint contains). Tensors of non-LoRA entries are the model's own (not copies).
    /// </summary>
    public static Dictionary<string, Tensor> MergedStateDict(nn.Module module)
    {
        var sd = module.state_dict();
        var merged = new Dictionary<string, Tensor>();
        var lora = LoraLayers(module).ToDictionary(l => l.Name + ".weight", l => l.Layer);
        foreach (var (key, value) in sd)
        {
            if (IsAdapterKey(key)) continue;
            merged[key] = lora.TryGetValue(key, out var layer) ? layer.MergedWeight() : value;
        }
        return merged;
    }

    /// <summary>Distinct HF module names carrying adapters (PEFT <c>target_modules</c>), e.g. q_proj, v_proj, o_proj.</summary>
    public static IReadOnlyList<string> TargetModules(nn.Module module) =>
        LoraLayers(module).Select(l => l.Name[(l.Name.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal).ToList();
}

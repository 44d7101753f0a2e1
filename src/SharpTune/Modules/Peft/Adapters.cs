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

    /// <summary>
    /// Every parameter of <paramref name="module"/> once, in registration order. TorchSharp's parameters() yields a
    /// Parameter registered under two names twice; an optimizer given both would step it twice.
    /// </summary>
    public static IReadOnlyList<(string Name, Parameter Parameter)> UniqueNamedParameters(nn.Module module)
    {
        var seen = new HashSet<(long, string, string, ScalarType)>();
        var result = new List<(string, Parameter)>();
        foreach (var (name, p) in module.named_parameters())
            if (seen.Add(Identity(p))) result.Add((name, p));
        return result;
    }

    /// <summary>
    /// Identity of a parameter's storage view. TorchSharp hands out a new wrapper (and native handle) per access, so
    /// handles cannot identify a shared tensor; the data pointer, shape and strides can. Meta tensors have no data,
    /// so there the handle is used (our models register a tied weight only once anyway).
    /// </summary>
    [System.Runtime.InteropServices.DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr tensor); // TorchSharp's own native export behind data<T>()

    /// <summary>Address of the first element of <paramref name="t"/> (CPU/CUDA tensors; 0 for meta).</summary>
    public static long DataAddress(Tensor t) => t.is_meta ? 0 : (long)THSTensor_data(t.Handle);

    private static (long, string, string, ScalarType) Identity(Tensor p)
    {
        var ptr = p.is_meta ? 0 : (long)THSTensor_data(p.Handle);
        return (ptr != 0 ? ptr : -(long)p.Handle, string.Join(",", p.shape), string.Join(",", p.stride()), p.dtype);
    }

    /// <summary>The parameters with requires_grad, deduplicated: what the optimizer should receive.</summary>
    public static IReadOnlyList<Parameter> TrainableParameters(nn.Module module) =>
        UniqueNamedParameters(module).Where(p => p.Parameter.requires_grad).Select(p => p.Parameter).ToList();

    /// <summary>Number of elements in the deduplicated trainable parameters.</summary>
    public static long CountTrainable(nn.Module module) => TrainableParameters(module).Sum(p => p.numel());

    /// <summary>Number of elements in all deduplicated parameters.</summary>
    public static long CountParameters(nn.Module module) => UniqueNamedParameters(module).Sum(p => p.Parameter.numel());

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

// The parameters of a module, each once: what an optimizer, a gradient sync or a parameter count must see. TorchSharp's
// parameters() lists a Parameter registered under two names twice, and assigning lm_head.weight =
// embed_tokens.weight leaves two Parameter objects with different native handles over one storage; an optimizer
// given both would step the weight twice. One identity rule serves the whole library: two entries are the same
// parameter when they view the same memory (device, data pointer, shape, strides, dtype).
// Reference: torch.nn.Module.parameters (remove_duplicate=True), which compares tensor identity.
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>Deduplicated parameter lists and counts.</summary>
public static class ModuleParameters
{
    /// <summary>Every parameter of <paramref name="module"/> once, with its first name, in registration order.</summary>
    public static IReadOnlyList<(string Name, Parameter Parameter)> UniqueNamed(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        var seen = new HashSet<string>();
        var result = new List<(string, Parameter)>();
        foreach (var (name, p) in module.named_parameters())
            if (seen.Add(Identity(p))) result.Add((name, p));
        return result;
    }

    /// <summary>Each of <paramref name="parameters"/> once, in first-seen order.</summary>
    public static IReadOnlyList<Parameter> Deduplicate(IEnumerable<Parameter> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var seen = new HashSet<string>();
        var unique = new List<Parameter>();
        foreach (var p in parameters)
            if (seen.Add(Identity(p))) unique.Add(p);
        return unique;
    }

    /// <summary>The parameters that require gradients, each once: what the optimizer should receive.</summary>
    public static IReadOnlyList<Parameter> Trainable(nn.Module module) =>
        UniqueNamed(module).Where(p => p.Parameter.requires_grad).Select(p => p.Parameter).ToList();

    /// <summary>Elements in all parameters, each counted once.</summary>
    public static long Count(nn.Module module) => UniqueNamed(module).Sum(p => p.Parameter.numel());

    /// <summary>Elements in the trainable parameters, each counted once.</summary>
    public static long CountTrainable(nn.Module module) => Trainable(module).Sum(p => p.numel());

    /// <summary>Address of the first element of <paramref name="t"/> (CPU/CUDA tensors; 0 for meta).</summary>
    public static long DataAddress(Tensor t) => t.is_meta ? 0 : (long)Native.TensorMemory.Address(t);

    // TorchSharp hands out a new wrapper (and native handle) per access, so handles cannot identify a shared tensor;
    // the data pointer (which includes the storage offset; it works for every dtype), shape and strides can. Meta
    // tensors have no data, so there the handle is used (our models register a tied weight only once anyway).
    private static string Identity(Tensor p)
    {
        var data = DataAddress(p);
        return data == 0 ? $"handle:{p.Handle}" : $"{p.device}:{p.dtype}:{data}:{string.Join(',', p.shape)}:{string.Join(',', p.stride())}";
    }
}

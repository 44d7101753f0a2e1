// Strict state-dict loading (torch's load_state_dict(strict=True) semantics), one implementation for every source:
// an in-memory state dict (TransformerDecoder.LoadStateDict) or a checkpoint read lazily from safetensors files
// (Checkpointing/HfCheckpointer). Every missing key, unexpected key, shape mismatch and dtype mismatch is collected
// and reported in one error (torch reports names only; a half-loaded model is a silent wrong-answer bug), and nothing
// is copied unless the whole check passes. Dtype conversion, when asked for, is only between float types.
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>What a non-strict load skipped.</summary>
/// <param name="MissingKeys">Model keys the source lacks (left at their current values).</param>
/// <param name="UnexpectedKeys">Source keys the model does not have (ignored).</param>
public sealed record LoadReport(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

/// <summary>One tensor a source offers, as the loader checks it before copying anything.</summary>
/// <param name="Shape">Its shape.</param>
/// <param name="Dtype">Its element type.</param>
/// <param name="DtypeName">The element type as the source names it (e.g. safetensors' <c>BF16</c>).</param>
/// <param name="Where">Where it lives, for messages (e.g. <c> in model-00001-of-00002.safetensors</c>), or empty.</param>
public readonly record struct SourceTensor(IReadOnlyList<long> Shape, ScalarType Dtype, string DtypeName, string Where);

/// <summary>Named tensors to load: an in-memory state dict, or a checkpoint read lazily.</summary>
public interface IStateDictSource
{
    /// <summary>What the messages call the source (<c>checkpoint</c>, a file name).</summary>
    string Name { get; }

    /// <summary>Every key the source holds.</summary>
    IEnumerable<string> Keys { get; }

    /// <summary>True when the source holds <paramref name="key"/>.</summary>
    bool Contains(string key);

    /// <summary>Shape, dtype and location of <paramref name="key"/>.</summary>
    SourceTensor Describe(string key);

    /// <summary>Copies <paramref name="key"/> into <paramref name="destination"/> (same shape; dtype converted when it differs).</summary>
    void CopyInto(string key, Tensor destination);
}

/// <summary>How strictly to load.</summary>
/// <param name="Strict">Missing and unexpected keys are errors (shape and dtype mismatches always are).</param>
/// <param name="ConvertFloat">Cast stored float tensors to the model's float dtype instead of rejecting them.</param>
/// <param name="MayBeMissing">Keys that may be absent even when strict (e.g. LoRA adapters absent from a base checkpoint).</param>
/// <param name="MayBeExtra">Source keys that may be present without a model counterpart even when strict.</param>
public sealed record LoadRules(bool Strict = true, bool ConvertFloat = false, Func<string, bool>? MayBeMissing = null, Func<string, bool>? MayBeExtra = null);

/// <summary>Copies tensors into a module's parameters and persistent buffers by name.</summary>
public static class StateDictLoader
{
    /// <summary>
    /// Loads the in-memory <paramref name="source"/> into <paramref name="module"/>; all problems are listed in one
    /// <see cref="InvalidDataException"/> naming <paramref name="sourceName"/>.
    /// </summary>
    public static LoadReport Load(nn.Module module, IDictionary<string, Tensor> source, bool strict = true,
        Func<string, bool>? mayBeMissing = null, string sourceName = "state dict") =>
        Load(module.state_dict(), new InMemory(source, sourceName), new LoadRules(strict, MayBeMissing: mayBeMissing),
            (count, list) => new InvalidDataException($"cannot load {sourceName}: {count}{list}"));

    /// <summary>
    /// Checks every key of <paramref name="destination"/> (model tensors by HF key) against <paramref name="source"/>,
    /// throws <paramref name="fail"/>("N problems", the problems one per line) when anything is wrong, else copies. A weight tied to
    /// another (lm_head.weight sharing model.embed_tokens.weight) is satisfied by its partner.
    /// </summary>
    public static LoadReport Load(IReadOnlyDictionary<string, Tensor> destination, IStateDictSource source, LoadRules rules,
        Func<string, string, Exception> fail)
    {
        var aliases = AliasGroups(destination);
        var missing = new List<string>();
        var unexpected = source.Keys.Where(k => !destination.ContainsKey(k)).ToList();
        var problems = new List<string>();
        foreach (var key in destination.Keys.Order(StringComparer.Ordinal))
        {
            var dst = destination[key];
            if (!source.Contains(key))
            {
                if (aliases.TryGetValue(key, out var partners) && partners.Any(source.Contains)) continue;
                missing.Add(key);
                if (rules.Strict && rules.MayBeMissing?.Invoke(key) != true)
                    problems.Add($"missing from {source.Name}: '{key}' (model expects [{Dims(dst.shape)}] {dst.dtype})");
                continue;
            }
            var info = source.Describe(key);
            if (!info.Shape.SequenceEqual(dst.shape))
                problems.Add($"shape mismatch: '{key}': {source.Name} [{Dims(info.Shape)}]{info.Where}, model [{Dims(dst.shape)}]");
            else if (info.Dtype != dst.dtype && !rules.ConvertFloat)
                problems.Add($"dtype mismatch: '{key}': {source.Name} {info.DtypeName}{info.Where}, model {dst.dtype}");
            else if (info.Dtype != dst.dtype && !(IsFloat(info.Dtype) && IsFloat(dst.dtype)))
                problems.Add($"dtype mismatch: '{key}': {source.Name} {info.DtypeName}{info.Where}, model {dst.dtype} " +
                             "(only float dtypes convert into each other; an integer or bool tensor where a float is expected means a corrupt or wrong file)");
        }
        if (rules.Strict)
            foreach (var key in unexpected.Where(k => rules.MayBeExtra?.Invoke(k) != true))
                problems.Add($"unexpected in {source.Name}: '{key}'{source.Describe(key).Where}");
        if (problems.Count > 0)
            throw fail($"{problems.Count} problem{(problems.Count == 1 ? "" : "s")}", "\n  " + string.Join("\n  ", problems));

        using (no_grad())
            foreach (var key in destination.Keys.Where(source.Contains))
                source.CopyInto(key, destination[key]);
        return new LoadReport(missing, unexpected);
    }

    /// <summary>For each key whose tensor shares memory with another key's, the other keys.</summary>
    public static Dictionary<string, List<string>> AliasGroups(IReadOnlyDictionary<string, Tensor> tensors)
    {
        var byStorage = new Dictionary<(long, string, string), List<string>>();
        foreach (var (key, t) in tensors)
        {
            if (t.numel() == 0 || ModuleParameters.DataAddress(t) is var address && address == 0) continue;
            var id = (address, Dims(t.shape), Dims(t.stride())); // the same view of the same memory
            if (!byStorage.TryGetValue(id, out var list)) byStorage[id] = list = [];
            list.Add(key);
        }
        var result = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var group in byStorage.Values.Where(g => g.Count > 1))
            foreach (var key in group)
                result[key] = group.Where(k => k != key).ToList();
        return result;
    }

    private static string Dims(IEnumerable<long> shape) => string.Join(", ", shape);

    // Converting between these changes precision, not meaning.
    private static bool IsFloat(ScalarType type) => type is ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16;

    private sealed class InMemory(IDictionary<string, Tensor> tensors, string name) : IStateDictSource
    {
        public string Name => name;
        public IEnumerable<string> Keys => tensors.Keys;
        public bool Contains(string key) => tensors.ContainsKey(key);
        public SourceTensor Describe(string key) => new(tensors[key].shape, tensors[key].dtype, tensors[key].dtype.ToString(), "");
        public void CopyInto(string key, Tensor destination) => destination.copy_(tensors[key]);
    }
}

// Strict loading of checkpoint tensors into existing model tensors (torch's load_state_dict(strict=True) semantics):
// every missing key, unexpected key, shape mismatch and dtype mismatch is collected and reported in one error, and
// nothing is copied unless the whole check passes. Dtype conversion, when asked for, is only between float types. Matching tensors are read straight into the model's parameter
// memory, so loading needs no second copy of the weights.
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

/// <summary>What a non-strict load skipped.</summary>
/// <param name="MissingKeys">Model keys the checkpoint lacks (left at their current values).</param>
/// <param name="UnexpectedKeys">Checkpoint keys the model does not have (ignored).</param>
public sealed record LoadReport(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

internal static class StateDictLoader
{
    internal static LoadReport Load(IReadOnlyDictionary<string, Tensor> destination, SafetensorsCheckpoint source,
        bool strict, bool convertDtype)
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
                // A tied weight (lm_head.weight sharing model.embed_tokens.weight) is satisfied by its partner.
                if (aliases.TryGetValue(key, out var partners) && partners.Any(source.Contains)) continue;
                missing.Add(key);
                if (strict) problems.Add($"missing from checkpoint: '{key}' (model expects [{Dims(dst.shape)}] {dst.dtype})");
                continue;
            }
            var info = source.GetInfo(key);
            var file = Path.GetFileName(source.FileOf(key).Path);
            if (!info.Shape.SequenceEqual(dst.shape))
                problems.Add($"shape mismatch: '{key}': checkpoint [{Dims(info.Shape)}] in {file}, model [{Dims(dst.shape)}]");
            else if (info.ScalarType != dst.dtype && !convertDtype)
                problems.Add($"dtype mismatch: '{key}': checkpoint {info.DType} in {file}, model {dst.dtype}");
            else if (info.ScalarType != dst.dtype && !(SafetensorsDType.IsFloat(info.ScalarType) && SafetensorsDType.IsFloat(dst.dtype)))
                problems.Add($"dtype mismatch: '{key}': checkpoint {info.DType} in {file}, model {dst.dtype} " +
                             "(only float dtypes convert into each other; an integer or bool tensor where a float is expected means a corrupt or wrong file)");
        }
        if (strict)
            foreach (var key in unexpected.Where(k => !IsIgnorableExtra(k)))
                problems.Add($"unexpected in checkpoint: '{key}' in {Path.GetFileName(source.FileOf(key).Path)}");
        if (problems.Count > 0)
            throw new CheckpointFormatException(source.Folder,
                $"checkpoint does not match the model ({problems.Count} problem{(problems.Count == 1 ? "" : "s")}):\n  " +
                string.Join("\n  ", problems));

        using (torch.no_grad())
        {
            foreach (var key in destination.Keys.Where(source.Contains))
            {
                var dst = destination[key];
                if (source.GetInfo(key).ScalarType == dst.dtype)
                {
                    source.LoadInto(key, dst);
                }
                else
                {
                    using var staged = source.Load(key);
                    dst.copy_(staged);
                }
            }
        }
        return new LoadReport(missing, unexpected);
    }

    /// <summary>
    /// Checkpoint keys that may be present without a model counterpart: rotary inverse-frequency buffers, which older
    /// HF Llama checkpoints saved and transformers ignores on load (they are recomputed from config.json).
    /// </summary>
    internal static bool IsIgnorableExtra(string key) => key.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>For each key whose tensor shares memory with another key's, the other keys.</summary>
    internal static Dictionary<string, List<string>> AliasGroups(IReadOnlyDictionary<string, Tensor> tensors)
    {
        var byStorage = new Dictionary<(nint, string), List<string>>();
        foreach (var (key, t) in tensors)
        {
            if (t.device_type != DeviceType.CPU || !t.is_contiguous() || t.numel() == 0) continue;
            var id = (TensorStorage.AddressOf(t), Dims(t.shape));
            if (!byStorage.TryGetValue(id, out var list)) byStorage[id] = list = [];
            list.Add(key);
        }
        var result = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var group in byStorage.Values.Where(g => g.Count > 1))
            foreach (var key in group)
                result[key] = group.Where(k => k != key).ToList();
        return result;
    }

    internal static string Dims(IEnumerable<long> shape) => string.Join(", ", shape);
}

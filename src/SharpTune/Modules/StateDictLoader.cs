// Strict state-dict loading: every missing key, unexpected key, shape and dtype mismatch is collected and reported
// in one error (torch's load_state_dict reports names only; a half-loaded model is a silent wrong-answer bug).
using System.Text;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>What a non-strict load skipped.</summary>
/// <param name="MissingKeys">Model keys absent from the source.</param>
/// <param name="UnexpectedKeys">Source keys the model does not have.</param>
public sealed record LoadResult(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

/// <summary>Copies tensors into a module's parameters and persistent buffers by name.</summary>
public static class StateDictLoader
{
    /// <summary>
    /// Loads <paramref name="source"/> into <paramref name="module"/>. Shape and dtype mismatches are always errors.
    /// With <paramref name="strict"/>, missing and unexpected keys are errors too, except missing keys for which
    /// <paramref name="mayBeMissing"/> returns true (e.g. LoRA adapter weights absent from a base checkpoint).
    /// All problems are listed in one <see cref="InvalidDataException"/> naming <paramref name="sourceName"/>.
    /// </summary>
    public static LoadResult Load(nn.Module module, IDictionary<string, Tensor> source, bool strict = true,
        Func<string, bool>? mayBeMissing = null, string sourceName = "state dict")
    {
        var target = module.state_dict();
        var missing = target.Keys.Where(k => !source.ContainsKey(k)).ToList();
        var unexpected = source.Keys.Where(k => !target.ContainsKey(k)).ToList();
        var problems = new List<string>();
        foreach (var (key, dst) in target)
        {
            if (!source.TryGetValue(key, out var src)) continue;
            if (!src.shape.SequenceEqual(dst.shape))
                problems.Add($"shape mismatch for '{key}': model expects [{string.Join(", ", dst.shape)}], {sourceName} has [{string.Join(", ", src.shape)}]");
            else if (src.dtype != dst.dtype)
                problems.Add($"dtype mismatch for '{key}': model expects {dst.dtype}, {sourceName} has {src.dtype}");
        }
        var hardMissing = missing.Where(k => mayBeMissing is null || !mayBeMissing(k)).ToList();
        if (strict)
        {
            problems.AddRange(hardMissing.Select(k => $"missing key '{k}' (model expects [{string.Join(", ", target[k].shape)}] {target[k].dtype})"));
            problems.AddRange(unexpected.Select(k => $"unexpected key '{k}' in {sourceName}"));
        }
        if (problems.Count > 0)
        {
            var sb = new StringBuilder($"cannot load {sourceName}: {problems.Count} problem(s)");
            foreach (var p in problems) sb.Append("\n  - ").Append(p);
            throw new InvalidDataException(sb.ToString());
        }
        using (no_grad())
        {
            foreach (var (key, dst) in target)
                if (source.TryGetValue(key, out var src)) dst.copy_(src);
        }
        return new LoadResult(missing, unexpected);
    }
}

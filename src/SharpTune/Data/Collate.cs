// Batching samples into TorchSharp tensors: torchtune's padded_collate_sft (right padding, labels -100,
// pad_to_multiple_of) and padded_collate_packed with packed_block_causal_mask (torchtune/data/_collate.py,
// torchtune/modules/attention_utils.py). Shapes: b batch, s sequence.
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Data;

/// <summary>A batch of token ids and pre-shifted labels, plus the packing mask and positions when packed.</summary>
/// <param name="Tokens">int64 [b, s].</param>
/// <param name="Labels">int64 [b, s]; -100 where ignored.</param>
/// <param name="Mask">bool [b, s, s], true = query row may attend to key column; null when not packed (plain causal).</param>
/// <param name="InputPos">int64 [b, s] positions; null when not packed (0..s-1).</param>
public sealed record Batch(Tensor Tokens, Tensor Labels, Tensor? Mask = null, Tensor? InputPos = null) : IDisposable
{
    /// <summary>The batch on <paramref name="device"/>: itself on the CPU, where collate makes it, else a copy.</summary>
    public Batch To(Device device) => device.type == DeviceType.CPU ? this
        : new Batch(Tokens.to(device), Labels.to(device), Mask?.to(device), InputPos?.to(device));

    /// <summary>Disposes the tensors (when no dispose scope owns them).</summary>
    public void Dispose()
    {
        Tokens.Dispose();
        Labels.Dispose();
        Mask?.Dispose();
        InputPos?.Dispose();
    }
}

/// <summary>Collate functions.</summary>
public static class Collate
{
    /// <summary>
    /// Right-pads tokens with <paramref name="padId"/> and labels with <paramref name="ignoreIndex"/> to the longest
    /// sample, rounded up to <paramref name="padToMultipleOf"/> when given.
    /// </summary>
    public static Batch PadSft(IReadOnlyList<Sample> samples, int padId, int ignoreIndex = Sample.IgnoreIndex, int? padToMultipleOf = null)
    {
        if (samples.Count == 0) throw new ArgumentException("cannot collate an empty batch", nameof(samples));
        if (padToMultipleOf is < 1) throw new ArgumentOutOfRangeException(nameof(padToMultipleOf), padToMultipleOf, "must be positive");
        var s = samples.Max(x => x.Tokens.Length);
        if (padToMultipleOf is { } m && s % m != 0) s += m - s % m;
        var b = samples.Count;
        var tokens = new long[b * s];
        var labels = new long[b * s];
        for (var i = 0; i < b; i++)
        {
            var x = samples[i];
            if (x.Labels.Length != x.Tokens.Length)
                throw new ArgumentException($"sample {i}: {x.Tokens.Length} tokens but {x.Labels.Length} labels", nameof(samples));
            for (var j = 0; j < s; j++)
            {
                tokens[i * s + j] = j < x.Tokens.Length ? x.Tokens[j] : padId;
                labels[i * s + j] = j < x.Labels.Length ? x.Labels[j] : ignoreIndex;
            }
        }
        TorchRuntime.EnsureLoaded();
        return new Batch(torch.tensor(tokens, [b, s]), torch.tensor(labels, [b, s]));
    }

    /// <summary>Stacks packs (all of one length) with their positions [b, s] and block-causal masks [b, s, s].</summary>
    public static Batch Packed(IReadOnlyList<Sample> packs)
    {
        if (packs.Count == 0) throw new ArgumentException("cannot collate an empty batch", nameof(packs));
        var s = packs[0].Tokens.Length;
        var b = packs.Count;
        var tokens = new long[b * s];
        var labels = new long[b * s];
        var pos = new long[b * s];
        var mask = new bool[b * s * s];
        for (var i = 0; i < b; i++)
        {
            var p = packs[i];
            if (p.Tokens.Length != s || p.InputPos is null || p.SeqLens is null)
                throw new ArgumentException($"pack {i} is not a pack of length {s} with positions and sequence lengths", nameof(packs));
            for (var j = 0; j < s; j++)
            {
                tokens[i * s + j] = p.Tokens[j];
                labels[i * s + j] = p.Labels[j];
                pos[i * s + j] = p.InputPos[j];
            }
            BlockCausalMask(p.SeqLens, s).CopyTo(mask, i * s * s);
        }
        TorchRuntime.EnsureLoaded();
        return new Batch(torch.tensor(tokens, [b, s]), torch.tensor(labels, [b, s]),
            torch.tensor(mask, [b, s, s]), torch.tensor(pos, [b, s]));
    }

    /// <summary>
    /// Row-major [s, s] block-causal mask: entry (q, k) is true when k &lt;= q and both lie in the same block of
    /// <paramref name="seqLens"/> (which must sum to <paramref name="length"/>).
    /// </summary>
    public static bool[] BlockCausalMask(IReadOnlyList<int> seqLens, int length)
    {
        if (seqLens.Sum() != length)
            throw new ArgumentException($"sequence lengths sum to {seqLens.Sum()}, expected {length}", nameof(seqLens));
        var mask = new bool[length * length];
        var start = 0;
        foreach (var len in seqLens)
        {
            for (var q = start; q < start + len; q++)
                for (var k = start; k <= q; k++)
                    mask[q * length + k] = true;
            start += len;
        }
        return mask;
    }
}

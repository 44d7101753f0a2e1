// Packing: concatenate samples into fixed-length packs with per-sample positions and a block-causal mask, as
// torchtune's PackedDataset (torchtune/datasets/_packed.py) and padded_collate_packed do. Because labels are
// pre-shifted per sample (each sample's last label is -100), no token is trained to predict the next sample.
namespace SharpTune.Data;

/// <summary>Samples greedily packed into sequences of exactly <c>max_seq_len</c> tokens.</summary>
public sealed class PackedDataset : ISampleDataset
{
    private readonly List<Sample> _packs = [];

    /// <summary>
    /// Packs <paramref name="dataset"/> in order. A sample longer than <paramref name="maxSeqLen"/> is an error unless
    /// <paramref name="splitAcrossPack"/>; with it, samples are cut at pack boundaries. <paramref name="maxPacks"/> stops early.
    /// </summary>
    public PackedDataset(ISampleDataset dataset, int maxSeqLen, int padId, bool splitAcrossPack = false, int? maxPacks = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSeqLen, 1);
        MaxSeqLen = maxSeqLen;
        PadId = padId;
        Source = dataset;
        var tokens = new List<int>();
        var labels = new List<int>();
        var pos = new List<int>();
        var lens = new List<int>();
        for (var i = 0; i < dataset.Count && (maxPacks is null || _packs.Count < maxPacks); i++)
        {
            var s = dataset[i];
            if (s.Tokens.Length == 0) continue;
            if (s.Tokens.Length > maxSeqLen && !splitAcrossPack)
                throw new InvalidDataException(
                    $"sample {i} has {s.Tokens.Length} tokens, more than max_seq_len {maxSeqLen}; set split_across_pack or raise max_seq_len");
            if (tokens.Count + s.Tokens.Length > maxSeqLen && tokens.Count > 0 && !splitAcrossPack)
                Flush();
            tokens.AddRange(s.Tokens);
            labels.AddRange(s.Labels);
            for (var p = 0; p < s.Tokens.Length; p++) pos.Add(p % maxSeqLen);
            lens.Add(s.Tokens.Length);
            while (splitAcrossPack && tokens.Count > maxSeqLen && (maxPacks is null || _packs.Count < maxPacks))
            {
                // Cut at the boundary; the rest of the last sample starts the next pack and keeps its positions.
                var keptOfLast = maxSeqLen - (tokens.Count - lens[^1]);
                var rest = lens[^1] - keptOfLast;
                lens[^1] = keptOfLast;
                AddPack(tokens[..maxSeqLen], labels[..maxSeqLen], pos[..maxSeqLen], lens);
                tokens.RemoveRange(0, maxSeqLen);
                labels.RemoveRange(0, maxSeqLen);
                pos.RemoveRange(0, maxSeqLen);
                lens.Clear();
                lens.Add(rest);
            }
        }
        if (tokens.Count > 0 && (maxPacks is null || _packs.Count < maxPacks)) Flush();

        void Flush()
        {
            AddPack(tokens, labels, pos, lens);
            tokens.Clear(); labels.Clear(); pos.Clear(); lens.Clear();
        }
    }

    /// <summary>The dataset packed.</summary>
    public ISampleDataset Source { get; }

    /// <summary>The pack length.</summary>
    public int MaxSeqLen { get; }

    /// <summary>The id padding fills packs with.</summary>
    public int PadId { get; }

    /// <inheritdoc/>
    public int Count => _packs.Count;

    /// <inheritdoc/>
    public Sample this[int index] => _packs[index];

    private void AddPack(List<int> tokens, List<int> labels, List<int> pos, List<int> lens)
    {
        var n = tokens.Count;
        var pad = MaxSeqLen - n;
        var t = new int[MaxSeqLen];
        var l = new int[MaxSeqLen];
        var p = new int[MaxSeqLen];
        tokens.CopyTo(t); labels.CopyTo(l); pos.CopyTo(p);
        var last = n > 0 ? p[n - 1] : -1;
        for (var i = n; i < MaxSeqLen; i++)
        {
            t[i] = PadId;
            l[i] = Sample.IgnoreIndex;
            p[i] = Math.Min(last + (i - n) + 1, MaxSeqLen - 1); // positions continue, clamped, as torchtune pads them
        }
        int[] seqLens = pad > 0 ? [.. lens.Where(x => x > 0), pad] : [.. lens.Where(x => x > 0)];
        _packs.Add(new Sample(t, l, p, seqLens));
    }
}

// Deterministic, resumable iteration: a shuffling sampler keyed by (seed, epoch) like torch's DistributedSampler with
// set_epoch, and a loader that batches and collates. Order depends only on (count, seed, epoch), never on the runtime's
// Random implementation, so a resumed run sees exactly the batches it would have seen.
namespace SharpTune.Data;

/// <summary>A permutation of 0..count-1 per epoch, reproducible from the seed.</summary>
public sealed class EpochSampler
{
    /// <summary>Creates a sampler; <paramref name="shuffle"/> false keeps dataset order.</summary>
    public EpochSampler(int count, int seed, bool shuffle = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        Count = count;
        Seed = seed;
        Shuffle = shuffle;
    }

    /// <summary>Number of indices.</summary>
    public int Count { get; }

    /// <summary>The seed.</summary>
    public int Seed { get; }

    /// <summary>Whether indices are shuffled.</summary>
    public bool Shuffle { get; }

    /// <summary>The order of epoch <paramref name="epoch"/> (Fisher-Yates driven by SplitMix64 of seed and epoch).</summary>
    public int[] Order(int epoch)
    {
        var order = new int[Count];
        for (var i = 0; i < Count; i++) order[i] = i;
        if (!Shuffle) return order;
        var state = unchecked(((ulong)(uint)Seed << 32) ^ (ulong)(uint)epoch ^ 0x5851F42D4C957F2DUL);
        for (var i = Count - 1; i > 0; i--)
        {
            var j = (int)(Next(ref state) % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    private static ulong Next(ref ulong state)
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}

/// <summary>Batches a dataset in sampler order and collates each batch.</summary>
public sealed class DataLoader
{
    private readonly ISampleDataset _dataset;
    private readonly Func<IReadOnlyList<Sample>, Batch> _collate;

    /// <summary>
    /// Creates a loader. <paramref name="collate"/> defaults to <see cref="Collate.Packed"/> for packs (samples with
    /// sequence lengths, as <see cref="PackedDataset"/> makes) and to <see cref="Collate.PadSft"/> with <paramref name="padId"/> otherwise.
    /// </summary>
    public DataLoader(ISampleDataset dataset, int batchSize, int seed, bool shuffle = true, bool dropLast = true,
        int padId = 0, int? padToMultipleOf = null, Func<IReadOnlyList<Sample>, Batch>? collate = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        _dataset = dataset;
        BatchSize = batchSize;
        DropLast = dropLast;
        Sampler = new EpochSampler(dataset.Count, seed, shuffle);
        _collate = collate ?? (b => b.Count > 0 && b[0].SeqLens is not null ? Collate.Packed(b) : Collate.PadSft(b, padId, Sample.IgnoreIndex, padToMultipleOf)); // packs (also a held-out slice of them) carry their lengths
    }

    /// <summary>Samples per batch.</summary>
    public int BatchSize { get; }

    /// <summary>Whether a last partial batch is dropped.</summary>
    public bool DropLast { get; }

    /// <summary>The sampler.</summary>
    public EpochSampler Sampler { get; }

    /// <summary>Batches per epoch.</summary>
    public int BatchesPerEpoch => DropLast ? _dataset.Count / BatchSize : (_dataset.Count + BatchSize - 1) / BatchSize;

    /// <summary>The samples of batch <paramref name="batch"/> of <paramref name="epoch"/>, uncollated.</summary>
    public IReadOnlyList<Sample> Samples(int epoch, int batch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(batch, BatchesPerEpoch);
        var order = Sampler.Order(epoch);
        return Take(order, batch);
    }

    /// <summary>The dataset indices of batch <paramref name="batch"/> of <paramref name="epoch"/> (to look up per-sample
    /// side data such as a teacher cache in the shuffled order).</summary>
    public IReadOnlyList<int> Indices(int epoch, int batch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(batch, BatchesPerEpoch);
        var order = Sampler.Order(epoch);
        var start = batch * BatchSize;
        return order[start..Math.Min(start + BatchSize, order.Length)];
    }

    /// <summary>Collates <paramref name="samples"/> the way this loader collates its batches (used by sharded views).</summary>
    public Batch CollateSamples(IReadOnlyList<Sample> samples) => _collate(samples);

    /// <summary>Collated batches of <paramref name="epoch"/>, starting at batch <paramref name="startBatch"/> (to resume).</summary>
    public IEnumerable<Batch> Batches(int epoch, int startBatch = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(startBatch);
        var order = Sampler.Order(epoch);
        for (var b = startBatch; b < BatchesPerEpoch; b++) yield return _collate(Take(order, b));
    }

    private Sample[] Take(int[] order, int batch)
    {
        var start = batch * BatchSize;
        var end = Math.Min(start + BatchSize, order.Length);
        var samples = new Sample[end - start];
        for (var i = start; i < end; i++) samples[i - start] = _dataset[order[i]];
        return samples;
    }
}

// Deterministic, resumable iteration: a shuffling sampler keyed by (seed, epoch) like torch's DistributedSampler with
// set_epoch, and a loader that batches and collates. Order depends only on (count, seed, epoch), never on the runtime's
// Random implementation, so a resumed run sees exactly the batches it would have seen.
// Under data parallelism each rank reads its own view of the loader (ForRank): the SAME global batches, in the SAME
// order, as a one-process run with the same seed, of which rank r takes the r-th contiguous slice. With gradients
// summed over ranks and divided by the global count of valid tokens, the update equals the one-process update on the
// full batch; a resumed run may use a different number of ranks because positions are counted in global batches.
// A one-process run is rank 0 of 1: its slice is the whole batch.
// Reference: torch.utils.data.DistributedSampler (which instead strides over the whole epoch, so its global batches
// depend on the world size; we keep them independent of it).
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

/// <summary>Splits global batches between ranks.</summary>
public static class Sharding
{
    /// <summary>
    /// The contiguous slice of <paramref name="globalCount"/> items that <paramref name="rank"/> of
    /// <paramref name="worldSize"/> takes: sizes differ by at most one, lower ranks take the extra items.
    /// </summary>
    public static (int Start, int Count) Range(int globalCount, int rank, int worldSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(globalCount);
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, worldSize);
        var baseCount = globalCount / worldSize;
        var extra = globalCount % worldSize;
        return (rank * baseCount + Math.Min(rank, extra), baseCount + (rank < extra ? 1 : 0));
    }

    /// <summary>This rank's slice of <paramref name="global"/> (the list itself with one rank).</summary>
    public static IReadOnlyList<T> Shard<T>(IReadOnlyList<T> global, int rank, int worldSize)
    {
        ArgumentNullException.ThrowIfNull(global);
        var (start, count) = Range(global.Count, rank, worldSize);
        if (count == global.Count) return global;
        var shard = new T[count];
        for (var i = 0; i < count; i++) shard[i] = global[start + i];
        return shard;
    }
}

/// <summary>
/// Batches a dataset in sampler order and collates each batch; a rank's view (<see cref="ForRank"/>) reads its slice
/// of every global batch.
/// </summary>
public sealed class DataLoader
{
    private readonly ISampleDataset _dataset;
    private readonly Func<IReadOnlyList<Sample>, Batch> _collate;
    private int _orderEpoch = -1; // the order of the epoch read last: every batch of an epoch reads it, twice with indices
    private int[] _order = [];

    /// <summary>
    /// Creates a loader (a one-process run's: rank 0 of 1). <paramref name="collate"/> defaults to
    /// <see cref="Collate.Packed"/> for packs (samples with sequence lengths, as <see cref="PackedDataset"/> makes) and
    /// to <see cref="Collate.PadSft"/> with <paramref name="padId"/> otherwise.
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

    private DataLoader(DataLoader global, int rank, int worldSize)
    {
        (_dataset, _collate, BatchSize, DropLast, Sampler) = (global._dataset, global._collate, global.BatchSize, global.DropLast, global.Sampler);
        (Rank, WorldSize) = (rank, worldSize);
    }

    /// <summary>Samples per global batch (over all ranks).</summary>
    public int BatchSize { get; }

    /// <summary>Whether a last partial batch is dropped.</summary>
    public bool DropLast { get; }

    /// <summary>The sampler.</summary>
    public EpochSampler Sampler { get; }

    /// <summary>The rank whose slice of each global batch this loader reads (0 for a one-process run).</summary>
    public int Rank { get; }

    /// <summary>Number of ranks the global batches are split between (1 for a one-process run).</summary>
    public int WorldSize { get; } = 1;

    /// <summary>Global batches per epoch (the same on every rank and for any number of ranks).</summary>
    public int BatchesPerEpoch => DropLast ? _dataset.Count / BatchSize : (_dataset.Count + BatchSize - 1) / BatchSize;

    /// <summary>
    /// Rank <paramref name="rank"/>'s view of this loader: the same global batches, of which it reads the
    /// <paramref name="rank"/>-th contiguous slice (<see cref="Sharding.Range"/>). The batch size stays the GLOBAL
    /// batch size; it must be at least the world size so that no rank gets an empty slice (a final partial batch
    /// included, when it is kept).
    /// </summary>
    public DataLoader ForRank(int rank, int worldSize)
    {
        if (WorldSize != 1) throw new InvalidOperationException($"this loader is already rank {Rank} of {WorldSize}'s view");
        _ = Sharding.Range(0, rank, worldSize); // validates rank and world size
        if (BatchSize < worldSize)
            throw new ArgumentException(
                $"batch_size {BatchSize} is the global batch and must be >= the number of ranks ({worldSize}) so every rank gets samples",
                nameof(worldSize));
        var last = Sampler.Count % BatchSize;
        if (!DropLast && last > 0 && last < worldSize)
            throw new ArgumentException(
                $"the last batch holds {last} sample(s), fewer than the {worldSize} ranks; set drop_last or change batch_size",
                nameof(worldSize));
        return new DataLoader(this, rank, worldSize);
    }

    /// <summary>This rank's samples of global batch <paramref name="batch"/> of <paramref name="epoch"/>, uncollated.</summary>
    public IReadOnlyList<Sample> Samples(int epoch, int batch)
    {
        var indices = Indices(epoch, batch);
        var samples = new Sample[indices.Count];
        for (var i = 0; i < samples.Length; i++) samples[i] = _dataset[indices[i]];
        return samples;
    }

    /// <summary>The dataset indices of this rank's samples of global batch <paramref name="batch"/> of
    /// <paramref name="epoch"/>, in the order of <see cref="Samples"/> (to look up per-sample side data such as a
    /// teacher cache in the shuffled order).</summary>
    public IReadOnlyList<int> Indices(int epoch, int batch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(batch, BatchesPerEpoch);
        if (epoch != _orderEpoch) (_order, _orderEpoch) = (Sampler.Order(epoch), epoch);
        var start = batch * BatchSize;
        return Sharding.Shard(_order[start..Math.Min(start + BatchSize, _order.Length)], Rank, WorldSize);
    }

    /// <summary>This rank's samples of global batch <paramref name="batch"/> of <paramref name="epoch"/>, collated.</summary>
    public Batch Collated(int epoch, int batch) => _collate(Samples(epoch, batch));

    /// <summary>This rank's collated batches of <paramref name="epoch"/>, starting at global batch
    /// <paramref name="startBatch"/> (to resume).</summary>
    public IEnumerable<Batch> Batches(int epoch, int startBatch = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(startBatch);
        for (var b = startBatch; b < BatchesPerEpoch; b++) yield return Collated(epoch, b);
    }
}

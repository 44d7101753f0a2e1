// Each rank's share of every global batch. A distributed run walks the SAME global batches, in the SAME order, as a
// one-process run with the same seed (the sampler's order depends only on seed and epoch), and rank r takes the r-th
// contiguous slice of each. With gradients summed over ranks and divided by the global count of valid tokens, the
// update equals the one-process update on the full batch; a resumed run may use a different number of ranks because
// positions are counted in global batches.
// Reference: torch.utils.data.DistributedSampler (which instead strides over the whole epoch, so its global batches
// depend on the world size; we keep them independent of it).
using SharpTune.Data;

namespace SharpTune.Distributed;

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

    /// <summary>This rank's slice of <paramref name="global"/>.</summary>
    public static IReadOnlyList<T> Shard<T>(IReadOnlyList<T> global, int rank, int worldSize)
    {
        ArgumentNullException.ThrowIfNull(global);
        var (start, count) = Range(global.Count, rank, worldSize);
        var shard = new T[count];
        for (var i = 0; i < count; i++) shard[i] = global[start + i];
        return shard;
    }
}

/// <summary>A rank's view of a <see cref="DataLoader"/>: its own slice of every global batch, collated.</summary>
public sealed class ShardedDataLoader
{
    private readonly DataLoader _loader;

    /// <summary>
    /// Creates the view. The loader's batch size is the GLOBAL batch size; it must be at least the world size so that
    /// no rank gets an empty shard (a final partial batch included, when it is kept).
    /// </summary>
    public ShardedDataLoader(DataLoader loader, int rank, int worldSize)
    {
        ArgumentNullException.ThrowIfNull(loader);
        _ = Sharding.Range(0, rank, worldSize); // validates rank and world size
        if (loader.BatchSize < worldSize)
            throw new ArgumentException(
                $"batch_size {loader.BatchSize} is the global batch and must be >= the number of ranks ({worldSize}) so every rank gets samples",
                nameof(loader));
        var last = loader.Sampler.Count % loader.BatchSize;
        if (!loader.DropLast && last > 0 && last < worldSize)
            throw new ArgumentException(
                $"the last batch holds {last} sample(s), fewer than the {worldSize} ranks; set drop_last or change batch_size",
                nameof(loader));
        _loader = loader;
        Rank = rank;
        WorldSize = worldSize;
    }

    /// <summary>This rank.</summary>
    public int Rank { get; }

    /// <summary>Number of ranks.</summary>
    public int WorldSize { get; }

    /// <summary>Global batches per epoch (the same as the one-process loader's).</summary>
    public int BatchesPerEpoch => _loader.BatchesPerEpoch;

    /// <summary>This rank's samples of global batch <paramref name="batch"/> of <paramref name="epoch"/>.</summary>
    public IReadOnlyList<Sample> Samples(int epoch, int batch) => Sharding.Shard(_loader.Samples(epoch, batch), Rank, WorldSize);

    /// <summary>This rank's collated shards of the global batches of <paramref name="epoch"/>, from <paramref name="startBatch"/>.</summary>
    public IEnumerable<Batch> Batches(int epoch, int startBatch = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(startBatch);
        for (var b = startBatch; b < BatchesPerEpoch; b++) yield return _loader.CollateSamples(Samples(epoch, b));
    }
}

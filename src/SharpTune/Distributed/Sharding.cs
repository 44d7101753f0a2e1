// The older name of a rank's view of a DataLoader, kept for the one recipe that still constructs it (on-policy
// distillation); it holds no logic of its own: the view, its checks and the slicing rule are DataLoader.ForRank and
// Data.Sharding (Data/DataLoader.cs). New code calls DataLoader.ForRank.
using SharpTune.Data;

namespace SharpTune.Distributed;

/// <summary>A rank's view of a <see cref="DataLoader"/>: <see cref="DataLoader.ForRank"/> under its older name.</summary>
public sealed class ShardedDataLoader(DataLoader loader, int rank, int worldSize)
{
    private readonly DataLoader _view = loader.ForRank(rank, worldSize);

    /// <inheritdoc cref="DataLoader.BatchesPerEpoch"/>
    public int BatchesPerEpoch => _view.BatchesPerEpoch;

    /// <inheritdoc cref="DataLoader.Samples"/>
    public IReadOnlyList<Sample> Samples(int epoch, int batch) => _view.Samples(epoch, batch);

    /// <inheritdoc cref="DataLoader.Indices"/>
    public IReadOnlyList<int> Indices(int epoch, int batch) => _view.Indices(epoch, batch);
}

// Pre-allocated key/value cache for incremental decoding (as torchtune.modules.KVCache): keys and values are
// written at the current position and the filled prefix is read back.
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>Per-layer key/value cache of shape [b, n_kv, max_s, h_d].</summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor _k;
    private readonly Tensor _v;

    /// <summary>Allocates zeroed caches.</summary>
    public KvCache(long batchSize, long numKvHeads, long maxSeqLen, long headDim, ScalarType dtype, Device device)
    {
        _k = zeros([batchSize, numKvHeads, maxSeqLen, headDim], dtype: dtype, device: device);
        _v = zeros([batchSize, numKvHeads, maxSeqLen, headDim], dtype: dtype, device: device);
        MaxSeqLen = maxSeqLen;
        BatchSize = batchSize;
    }

    /// <summary>Caches over buffers the caller allocated (views [b, n_kv, max_s, h_d] of one key/value buffer); disposing
    /// the cache releases the views, the caller keeps the storage.</summary>
    internal KvCache(Tensor keys, Tensor values)
    {
        _k = keys;
        _v = values;
        BatchSize = keys.shape[0];
        MaxSeqLen = keys.shape[2];
    }

    /// <summary>Capacity in positions.</summary>
    public long MaxSeqLen { get; }

    /// <summary>Batch size the cache was set up for.</summary>
    public long BatchSize { get; }

    /// <summary>Number of positions filled so far.</summary>
    public long Size { get; private set; }

    /// <summary>Appends k, v [b, n_kv, s, h_d] and returns views of the filled prefix [b, n_kv, size, h_d].</summary>
    public (Tensor K, Tensor V) Update(Tensor k, Tensor v)
    {
        var s = k.shape[2];
        if (k.shape[0] != BatchSize) throw new ArgumentException($"KV cache set up for batch {BatchSize}, got batch {k.shape[0]}");
        if (Size + s > MaxSeqLen) throw new InvalidOperationException($"KV cache overflow: {Size} cached + {s} new > capacity {MaxSeqLen}; call ResetCaches or set up a larger cache");
        using (no_grad())
        {
            _k.narrow(2, Size, s).copy_(k);
            _v.narrow(2, Size, s).copy_(v);
        }
        Size += s;
        return (_k.narrow(2, 0, Size), _v.narrow(2, 0, Size));
    }

    /// <summary>Forgets the cached positions (the memory is kept).</summary>
    public void Reset() => Size = 0;

    /// <inheritdoc/>
    public void Dispose()
    {
        _k.Dispose();
        _v.Dispose();
    }
}

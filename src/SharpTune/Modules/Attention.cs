// Multi-head attention with grouped-query attention (Ainslie et al. 2023, https://arxiv.org/abs/2305.13245),
// named and laid out like HF's LlamaAttention/Qwen2Attention (q_proj, k_proj, v_proj, o_proj; optional q/k/v bias).
// Uses libtorch's scaled_dot_product_attention (TorchSharp spells the flag is_casual and has no GQA flag, so k/v
// heads are repeated, as transformers' repeat_kv does).
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>Grouped-query self-attention with RoPE and an optional KV cache.</summary>
/// <remarks>
/// Shapes: <c>b</c> batch, <c>s</c> query length, <c>s_kv</c> key length, <c>d</c> model dim, <c>n_h</c> query heads,
/// <c>n_kv</c> key/value heads, <c>h_d</c> head dim.
/// </remarks>
public sealed class Attention : nn.Module
{
    [ComponentName(Name = "q_proj")] private readonly nn.Module<Tensor, Tensor> _qProj;
    [ComponentName(Name = "k_proj")] private readonly nn.Module<Tensor, Tensor> _kProj;
    [ComponentName(Name = "v_proj")] private readonly nn.Module<Tensor, Tensor> _vProj;
    [ComponentName(Name = "o_proj")] private readonly nn.Module<Tensor, Tensor> _oProj;
    private readonly int _numHeads;
    private readonly int _numKvHeads;
    private readonly int _headDim;
    private KvCache? _cache;

    /// <summary>Composes attention from its projections ([d]->[n_h*h_d], [d]->[n_kv*h_d] twice, [n_h*h_d]->[d]).</summary>
    public Attention(int numHeads, int numKvHeads, int headDim,
        nn.Module<Tensor, Tensor> qProj, nn.Module<Tensor, Tensor> kProj, nn.Module<Tensor, Tensor> vProj, nn.Module<Tensor, Tensor> oProj)
        : base(nameof(Attention))
    {
        if (numHeads % numKvHeads != 0)
            throw new ArgumentException($"num_heads ({numHeads}) must be a multiple of num_kv_heads ({numKvHeads})");
        _numHeads = numHeads;
        _numKvHeads = numKvHeads;
        _headDim = headDim;
        _qProj = qProj;
        _kProj = kProj;
        _vProj = vProj;
        _oProj = oProj;
        RegisterComponents();
    }

    /// <summary>The KV cache, or null when caching is off.</summary>
    internal KvCache? Cache => _cache;

    internal nn.Module<Tensor, Tensor> QProj => _qProj;
    internal nn.Module<Tensor, Tensor> KProj => _kProj;
    internal nn.Module<Tensor, Tensor> VProj => _vProj;
    internal nn.Module<Tensor, Tensor> OProj => _oProj;
    internal int NumHeads => _numHeads;
    internal int NumKvHeads => _numKvHeads;
    internal int HeadDim => _headDim;

    internal void SetupCache(long batchSize, long maxSeqLen, ScalarType dtype, Device device)
    {
        _cache?.Dispose();
        _cache = new KvCache(batchSize, _numKvHeads, maxSeqLen, _headDim, dtype, device);
    }

    internal void SetupCache(KvCache cache)
    {
        _cache?.Dispose();
        _cache = cache;
    }

    internal void ResetCache() => _cache?.Reset();

    internal void RemoveCache()
    {
        _cache?.Dispose();
        _cache = null;
    }


    /// <summary>
    /// x [b, s, d]; cos/sin [b, 1, s, h_d]; mask [b, s, s_kv] bool (true = may attend) or null for causal.
    /// With a cache, s_kv counts cached plus new positions.
    /// </summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var b = x.shape[0];
        var s = x.shape[1];
        var q = _qProj.call(x).view(b, s, _numHeads, _headDim).transpose(1, 2); // [b, s, n_h*h_d] -> [b, n_h, s, h_d]
        var k = _kProj.call(x).view(b, s, _numKvHeads, _headDim).transpose(1, 2); // -> [b, n_kv, s, h_d]
        var v = _vProj.call(x).view(b, s, _numKvHeads, _headDim).transpose(1, 2); // -> [b, n_kv, s, h_d]
        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin);

        var cachedBefore = 0L;
        if (_cache is not null)
        {
            cachedBefore = _cache.Size;
            (k, v) = _cache.Update(k, v); // [b, n_kv, s_kv, h_d], s_kv = cached + s
        }
        var sKv = k.shape[2];
        var rep = _numHeads / _numKvHeads;
        if (rep > 1)
        {
            k = k.repeat_interleave(rep, dim: 1); // [b, n_kv, s_kv, h_d] -> [b, n_h, s_kv, h_d]
            v = v.repeat_interleave(rep, dim: 1); // [b, n_kv, s_kv, h_d] -> [b, n_h, s_kv, h_d]
        }

        Tensor attn;
        if (mask is not null)
        {
            if (mask.dim() != 3 || mask.shape[0] != b || mask.shape[1] != s || mask.shape[2] < sKv)
                throw new ArgumentException($"attention mask must be [b={b}, s={s}, s_kv>={sKv}] bool, got [{string.Join(", ", mask.shape)}]");
            var m = mask.narrow(2, 0, sKv).to_type(ScalarType.Bool).unsqueeze(1); // [b, s, s_kv] -> [b, 1, s, s_kv]
            attn = nn.functional.scaled_dot_product_attention(q, k, v, m, 0.0, false);
        }
        else if (cachedBefore == 0 && s == sKv)
        {
            attn = nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, s > 1);
        }
        else if (s == 1)
        {
            // One new token after the cache sees every cached key: no mask to build.
            attn = nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, false);
        }
        else
        {
            // Cached decoding: query i sits at absolute position cachedBefore + i and may see keys j <= that.
            var qPos = arange(cachedBefore, cachedBefore + s, device: x.device).unsqueeze(1); // [s, 1]
            var kPos = arange(0, sKv, device: x.device).unsqueeze(0); // [1, s_kv]
            var causal = kPos.le(qPos); // [s, s_kv]
            attn = nn.functional.scaled_dot_product_attention(q, k, v, causal, 0.0, false);
        }
        var merged = attn.transpose(1, 2).reshape(b, s, _numHeads * _headDim); // [b, n_h, s, h_d] -> [b, s, n_h*h_d]
        return _oProj.call(merged).MoveToOuterDisposeScope(); // [b, s, d]
    }
}

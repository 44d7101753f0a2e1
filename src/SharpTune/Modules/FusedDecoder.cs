// The one-token decoding step of generation with few libtorch calls per token. At stories260K size (d 64, 5 layers)
// the arithmetic of one operation takes well under a microsecond and each libtorch call through TorchSharp costs
// one to a few, so the module path (~60 calls per layer: RMSNorm in 9, three projections and their reshapes, RoPE
// cos/sin recomputed every step, rotate_half by cat, the cache repeated for GQA, a mask per step) is nearly all
// overhead. This step computes the same function in ~33 calls per layer from weights prepared once per generation:
//  - One matmul gives q, k, v and rotate_half(q), rotate_half(k): rotate_half(W x) = R(W) x, where R(W) holds each
//    head's second-half rows negated, then its first-half rows (transformers' rotate_half). RoPE of every head is
//    then one multiply by [cos; sin] and one sum over that axis; v passes through the same multiply with (1, 0).
//    cos/sin are looked up once per token for all layers, from a table of every cache slot built before decoding.
//  - RMSNorm's weight and sqrt(d) are folded into the columns of the matmul that follows it, so the norm is
//    x * rsqrt(sum(x^2) + d * eps): W (w * x / sqrt(sum/d + eps)) = (W diag(w) sqrt(d)) (x / sqrt(sum + d eps)).
//    The attention scale 1/sqrt(h_d) is folded into the q rows. gate and up are one matmul.
//  - Each layer's keys and values live in one buffer [b, n_kv, 2, c, h_d], so a token's k and v are one copy; the
//    model's KV caches are views of these buffers, so the prompt's prefill through the modules fills them.
//  - On the CPU in float32, wherever libtorch's threads have nothing to split (one thread, or a few microseconds of
//    work), everything between the matmuls runs in DecodeKernels, one pass over host memory each: the norms, the
//    SwiGLU gate, and attention (RoPE of q and k, the slot's k and v written, scores, softmax, weighted values).
//    Measured on stories260K at batch 32 (bench/Generation, one thread): 2.4x -> 4.0x run.c's batch-1 tokens/s.
//  - Elsewhere attention for the one new query is two batched matmuls and a softmax over the filled slots, the query
//    heads of a group stacked against their shared k/v head (no repeat of the cache), with a key bias (0 or -inf)
//    that hides left-padding slots, skipped when no row is padded. The residual adds are the matmuls' accumulation
//    (addmm_).
// No scalar arguments in the loop (TorchSharp allocates a native Scalar for each). Weights are copied per generation,
// so every generation sees the model's current weights (the on-policy recipe trains between generations); LoRA layers
// contribute their merged weight. The copies are bounded (MaxFusedBytes): beyond that a token's arithmetic dwarfs the
// call overhead and the module path is used.
using SharpTune.Modules.Peft;
using SharpTune.Native;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Modules;

/// <summary>One-token-per-row decoding with fused projection weights over KV buffers it owns.</summary>
/// <remarks>
/// Shapes: <c>b</c> batch, <c>c</c> cache slots, <c>s</c> slots attended (filled plus the new one), <c>d</c> model dim,
/// <c>n_h</c> query heads, <c>n_kv</c> key/value heads, <c>r</c> = n_h / n_kv, <c>h_d</c> head dim, <c>f</c>
/// intermediate dim, <c>n</c> = n_h + 2 n_kv heads out of the fused projection (q, then k and v of each kv head).
/// </remarks>
internal sealed unsafe class FusedDecoder : IDisposable
{
    // Attention work (rows x query heads x slots x head dim) up to which the single-threaded kernel runs even when
    // libtorch has several threads: about 20 us of arithmetic, less than the calls it replaces.
    private const long SmallAttention = 1L << 18;

    /// <summary>Largest total size of the fused weight copies; bigger models decode through the modules.</summary>
    internal const long MaxFusedBytes = 256L << 20;

    private sealed record Layer(Tensor Qkv, Tensor? QkvBias, Tensor OT, Tensor GateUp, Tensor DownT, Tensor Cache, Tensor KeysT, Tensor Values);

    private readonly Layer[] _layers;
    private readonly Tensor _embedding;   // [v, d], the model's
    private readonly RmsNorm _finalNorm;  // the model's
    private readonly Tensor _rope;        // [b|1, c, 2, 2, h_d]: per slot, [cos; sin] of a rotated head and [1; 0] of v
    private readonly Tensor _headKinds;   // [n] int64: 0 for a rotated head (q, k), 1 for v
    private readonly Tensor? _keyBias;    // [b*n_kv, 1, c]: -inf at a row's padding slots, else 0; null without padding
    private readonly Tensor _normEps;     // d * eps, 0-dim float32
    private readonly List<Tensor> _owned = [];
    private readonly ScalarType _dtype;
    private readonly int _b, _heads, _kvHeads, _headDim, _ffn, _capacity;
    private readonly bool _hostKernel;     // float32 on the CPU: DecodeKernels can run
    private readonly Tensor? _attention;  // [b, n_h*h_d], the attention kernel's output
    private readonly Tensor? _normed;     // [b, d], the norm kernel's output
    private readonly Tensor? _act;        // [b, f], the gate kernel's output
    private readonly float _normEpsValue; // d * eps
    private readonly bool[]? _pad;        // [b*c] padSlots on the host, for the attention kernel
    private readonly float[] _scores;     // the attention kernel's scratch, one per slot

    private FusedDecoder(TransformerDecoder model, int batchSize, int capacity, Tensor positions, Tensor? padSlots, bool hostKernels)
    {
        var args = model.Args;
        var layers = model.Model.Layers;
        _b = batchSize;
        _heads = args.NumHeads;
        _kvHeads = args.NumKvHeads;
        _headDim = args.ResolvedHeadDim;
        _ffn = args.IntermediateDim;
        _capacity = capacity;
        _embedding = model.Model.EmbedTokens.weight;
        _finalNorm = model.Model.Norm;
        _dtype = _embedding.dtype;
        var device = _embedding.device;
        var d = args.EmbedDim;

        using var scope = NewDisposeScope();
        _normEpsValue = (float)(d * args.NormEps);
        _normEps = Own(tensor(_normEpsValue, device: device));
        var (cos, sin) = model.Rope.CosSin(positions, _dtype); // [b|1, 1, c, h_d] each
        cos = cos.squeeze(1);
        sin = sin.squeeze(1);
        var main = stack([cos, ones_like(cos)], 2); // [b|1, c, 2, h_d]: rotated head, v
        var rotated = stack([sin, zeros_like(sin)], 2);
        _rope = Own(stack([main, rotated], 2)); // [b|1, c, 2, 2, h_d]
        long[] kinds = [.. Enumerable.Repeat(0L, _heads), .. Enumerable.Range(0, 2 * _kvHeads).Select(i => (long)(i % 2))];
        _headKinds = Own(tensor(kinds, device: device));
        if (padSlots is not null)
        {
            var bias = zeros(padSlots.shape, dtype: _dtype, device: device).masked_fill(padSlots, double.NegativeInfinity); // [b, c]
            _keyBias = Own(bias.unsqueeze(1).expand(_b, _kvHeads, capacity).reshape(_b * _kvHeads, 1, capacity)); // -> [b*n_kv, 1, c]
        }
        _hostKernel = hostKernels && device.type == TorchSharp.DeviceType.CPU && _dtype == ScalarType.Float32;
        _scores = new float[_hostKernel ? capacity : 0];
        if (_hostKernel)
        {
            _attention = Own(zeros([_b, _heads * _headDim], dtype: _dtype, device: device));
            _normed = Own(zeros([_b, d], dtype: _dtype, device: device));
            _act = Own(zeros([_b, _ffn], dtype: _dtype, device: device));
            if (padSlots is not null) // on the host already (a CPU run); one byte per bool
            {
                var pad = padSlots.contiguous();
                _pad = new ReadOnlySpan<bool>((void*)TensorMemory.Address(pad), checked((int)pad.numel())).ToArray();
            }
        }
        _layers = new Layer[layers.Count];
        var caches = new KvCache[layers.Count];
        var foldScale = Math.Sqrt(d);
        for (var i = 0; i < layers.Count; i++)
        {
            var layer = layers[i];
            var attn = layer.SelfAttn;
            var (wq, bq) = WeightOf(attn.QProj);
            var (wk, bk) = WeightOf(attn.KProj);
            var (wv, bv) = WeightOf(attn.VProj);
            var qScale = 1.0 / Math.Sqrt(_headDim); // scaled_dot_product_attention's default
            wq = wq * qScale;
            var qkv = Heads(wq, wk, wv, zeros_like(wv)) * (layer.InputLayernorm.Weight * foldScale); // [2n h_d, d] * [d]
            Tensor? qkvBias = null;
            if (bq is not null || bk is not null || bv is not null)
            {
                Tensor Or0(Tensor? bias, long rows) => bias ?? zeros(rows, dtype: _dtype, device: device);
                var q = Or0(bq, wq.shape[0]) * qScale;
                var v = Or0(bv, wv.shape[0]);
                qkvBias = Own(Heads(q.unsqueeze(1), Or0(bk, wk.shape[0]).unsqueeze(1), v.unsqueeze(1), zeros_like(v).unsqueeze(1)).squeeze(1));
            }
            var gateUp = cat([WeightOf(layer.Mlp.GateProj).Weight, WeightOf(layer.Mlp.UpProj).Weight], 0) // [2f, d]
                * (layer.PostAttentionLayernorm.Weight * foldScale);
            var cache = zeros([_b, _kvHeads, 2, capacity, _headDim], dtype: _dtype, device: device); // [b, n_kv, k|v, c, h_d]
            var keys = cache.select(2, 0); // [b, n_kv, c, h_d]
            _layers[i] = new Layer(Own(qkv), qkvBias, Own(WeightOf(attn.OProj).Weight.t()), Own(gateUp),
                Own(WeightOf(layer.Mlp.DownProj).Weight.t()), Own(cache),
                Own(keys.view(_b * _kvHeads, capacity, _headDim).transpose(1, 2)), // [b*n_kv, h_d, c]
                Own(cache.select(2, 1).view(_b * _kvHeads, capacity, _headDim))); // [b*n_kv, c, h_d]
            caches[i] = new KvCache(keys.DetachFromDisposeScope(), cache.select(2, 1).DetachFromDisposeScope()); // the model's views
        }
        model.SetupCaches(caches);
    }

    /// <summary>
    /// Sets up <paramref name="model"/>'s KV caches for <paramref name="batchSize"/> rows of <paramref name="capacity"/>
    /// slots over buffers of a new fused step and returns the step, or returns null and sets up nothing where it does
    /// not apply (a projection that is neither Linear nor LoraLinear, a bias outside q/k/v, or fused copies above
    /// <see cref="MaxFusedBytes"/>). <paramref name="positions"/> [b|1, c] int64 are the RoPE positions of every slot;
    /// <paramref name="padSlots"/> [b, c] bool marks left-padding slots (null when no row is padded).
    /// </summary>
    /// <paramref name="hostKernels"/>: false keeps every step in libtorch calls (tests compare the two).
    internal static FusedDecoder? TryCreate(TransformerDecoder model, int batchSize, int capacity, Tensor positions, Tensor? padSlots,
        bool hostKernels = true)
    {
        var args = model.Args;
        long d = args.EmbedDim, f = args.IntermediateDim, hd = args.ResolvedHeadDim;
        long elements = 0;
        foreach (var layer in model.Model.Layers)
        {
            var a = layer.SelfAttn;
            if (new[] { a.QProj, a.KProj, a.VProj }.Any(p => p is not (Linear or LoraLinear))) return null;
            if (new[] { a.OProj, layer.Mlp.GateProj, layer.Mlp.UpProj, layer.Mlp.DownProj }.Any(p => p is not (Linear { bias: null } or LoraLinear { Bias: null })))
                return null;
            elements += 2 * d * hd * (args.NumHeads + 2 * args.NumKvHeads) + 2 * f * d; // q, k, v and their rotations; gate and up
            if (a.OProj is LoraLinear) elements += args.NumHeads * hd * d; // merged copies
            if (layer.Mlp.DownProj is LoraLinear) elements += f * d;
        }
        if (elements * model.OutputWeight.ElementSize > MaxFusedBytes) return null;
        return new FusedDecoder(model, batchSize, capacity, positions, padSlots, hostKernels);
    }

    /// <summary>
    /// Feeds <paramref name="ids"/> [b] int64 at cache slot <paramref name="slot"/> (every earlier slot filled) and
    /// returns the final normed hidden states [b, d]. Writes the slot's keys and values into the caches.
    /// </summary>
    internal Tensor Step(Tensor ids, int slot)
    {
        using var scope = NewDisposeScope();
        var s = slot + 1;
        var n = _heads + 2 * _kvHeads;
        var kernel = _hostKernel && (get_num_threads() == 1 || (long)_b * _heads * s * _headDim <= SmallAttention);
        var cs = kernel ? null : _rope.select(1, slot).index_select(2, _headKinds); // [b|1, 2, 2, h_d] -> [b|1, 2, n, h_d]
        var bias = kernel ? null : _keyBias?.narrow(2, 0, s); // [b*n_kv, 1, s]
        var h = _embedding.index_select(0, ids); // [b] -> [b, d]
        foreach (var l in _layers)
        {
            var qkv = nn.functional.linear(Norm(h, kernel), l.Qkv, l.QkvBias); // [b, 2n h_d]
            Tensor attn; // [b, n_h*h_d]
            if (kernel)
            {
                DecodeKernels.Attention((float*)TensorMemory.Address(qkv), (float*)TensorMemory.Address(_rope), (int)_rope.shape[0],
                    (float*)TensorMemory.Address(l.Cache), (float*)TensorMemory.Address(_attention!),
                    _b, _heads, _kvHeads, _headDim, _capacity, slot, _pad, _scores);
                attn = _attention!;
            }
            else
            {
                var heads = qkv.view(_b, 2, n, _headDim).mul_(cs!).sum(1); // [b, 2, n, h_d] -> [b, n, h_d]: roped q, k; v
                l.Cache.select(3, slot).copy_(heads.narrow(1, _heads, 2 * _kvHeads).view(_b, _kvHeads, 2, _headDim)); // k, v of each kv head
                var q = heads.narrow(1, 0, _heads).reshape(_b * _kvHeads, _heads / _kvHeads, _headDim); // [b, n_h, h_d] -> [b*n_kv, r, h_d]
                var scores = q.bmm(l.KeysT.narrow(2, 0, s)); // [b*n_kv, r, s], scaled through q
                if (bias is not null) scores.add_(bias);
                var probs = _dtype == ScalarType.Float32 ? scores.softmax(-1) : scores.softmax(-1, ScalarType.Float32).to_type(_dtype);
                attn = probs.bmm(l.Values.narrow(1, 0, s)).view(_b, _heads * _headDim); // [b*n_kv, r, h_d] -> [b, n_h*h_d]
            }
            h.addmm_(attn, l.OT); // h += o_proj(attn)
            var gateUp = nn.functional.linear(Norm(h, kernel), l.GateUp); // [b, 2f]
            Tensor act; // [b, f]
            if (kernel)
            {
                DecodeKernels.SiluGate((float*)TensorMemory.Address(gateUp), (float*)TensorMemory.Address(_act!), _b, _ffn);
                act = _act!;
            }
            else
            {
                act = nn.functional.silu(gateUp.narrow(1, 0, _ffn)).mul_(gateUp.narrow(1, _ffn, _ffn));
            }
            h.addmm_(act, l.DownT); // h += down_proj(act)
        }
        return _finalNorm.call(h).MoveToOuterDisposeScope();
    }

    // x / sqrt(sum(x^2) + d eps) (the weight and sqrt(d) are in the next matmul), the statistic in float32; x [b, d]
    // contiguous. The kernel's result lives in one buffer that the next norm overwrites.
    private Tensor Norm(Tensor x, bool kernel)
    {
        if (kernel)
        {
            DecodeKernels.RmsNorm((float*)TensorMemory.Address(x), (float*)TensorMemory.Address(_normed!), _b, (int)x.shape[1], _normEpsValue);
            return _normed!;
        }
        var xf = _dtype == ScalarType.Float32 ? x : x.to_type(ScalarType.Float32);
        var normed = xf * (xf * xf).sum(-1, keepdim: true).add_(_normEps).rsqrt_(); // [b, d] * [b, 1]
        return _dtype == ScalarType.Float32 ? normed : normed.to_type(_dtype);
    }

    // The fused projection's rows [2n h_d, ..] from q [n_h h_d, ..], k and v [n_kv h_d, ..] (weights or biases as
    // [rows, 1]): q, then k and v of each kv head; then the rotate_half rows of q and k, and zero rows for v.
    private Tensor Heads(Tensor q, Tensor k, Tensor v, Tensor zero)
    {
        Tensor PerKvHead(Tensor a, Tensor b) => stack([a.view(_kvHeads, _headDim, -1), b.view(_kvHeads, _headDim, -1)], 1).view(2 * _kvHeads * _headDim, -1);
        return cat([q, PerKvHead(k, v), RotateHalfRows(q, _heads), PerKvHead(RotateHalfRows(k, _kvHeads), zero)], 0);
    }

    // Rows [heads*h_d, ..] of a projection -> the rows that compute rotate_half of its output: per head, the second
    // half negated, then the first half (transformers' rotate_half: cat(-x2, x1)).
    private Tensor RotateHalfRows(Tensor m, int heads)
    {
        var v = m.reshape(heads, 2, _headDim / 2, -1); // [heads*h_d, ..] -> [heads, 2, h_d/2, ..]
        return cat([v.select(1, 1).neg(), v.select(1, 0)], 1).reshape(m.shape); // -> [heads, h_d, ..] -> [heads*h_d, ..]
    }

    // The weight a projection applies (LoRA merged in) and its bias.
    private static (Tensor Weight, Tensor? Bias) WeightOf(nn.Module<Tensor, Tensor> projection) => projection switch
    {
        Linear l => (l.weight!, l.bias),
        LoraLinear l => (l.MergedWeight(), l.Bias),
        _ => throw new InvalidOperationException($"unsupported projection {projection.GetType().Name}"),
    };

    private Tensor Own(Tensor t)
    {
        _owned.Add(t.DetachFromDisposeScope());
        return t;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}

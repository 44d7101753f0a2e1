// The float32 CPU kernels of one decoding step (FusedDecoder), each one pass over host memory in place of several
// libtorch calls. Attention of one new token per row over the KV cache: rope the token's q and k, write k and v into
// the cache slot, then per query head the scores q.k over the filled slots, their softmax, and the weighted sum of
// the values. RMSNorm's statistic and scaling, and the SwiGLU gate silu(gate) * up. At small models' sizes
// (stories260K: head dim 8, 32 rows, <= 256 slots) libtorch's route - a copy into the cache, two batched matmuls, a
// mask add and a softmax, each a call through TorchSharp with its own dispatch and output allocation - took about two
// thirds of a batch-32 decoding step though the arithmetic is a few hundred thousand multiply-adds; here it is one
// loop nest with SIMD along the head dimension (AVX2: 8 floats) and a vectorised float exp.
// The arithmetic is the same function in another order: scores as dot products over h_d terms, exp(x - max) per slot,
// the values summed with those weights and divided by their sum once at the end (libtorch divides first, then
// multiplies). Padding slots get exp(-inf) = 0 exactly, as the additive -inf mask does there.
// Single-threaded by design: the caller uses them where libtorch's own parallelism has nothing to split (one thread,
// or a step whose attention is a few microseconds of work).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SharpTune.Modules;

/// <summary>One decoding step's attention, RMSNorm and SwiGLU gate over host float32 memory.</summary>
/// <remarks>
/// Layouts (float32, contiguous): <c>qkv</c> [b, 2, n, h_d] with n = n_h + 2 n_kv: per row the projection x of every
/// head (the query heads, then key and value of each kv head), then rotate_half(x) of each (zero for values);
/// <c>rope</c> [b|1, c, 2, 2, h_d]: per row (or shared) and slot, [cos, 1] then [sin, 0] (rotated head, value);
/// <c>cache</c> [b, n_kv, 2, c, h_d]: keys then values per kv head; <c>output</c> [b, n_h, h_d]; <c>pad</c> [b, c],
/// true at a row's padding slots (or null). Query head <c>h</c> reads kv head <c>h / r</c>, <c>r</c> = n_h / n_kv. The
/// query rows carry the 1/sqrt(h_d) scale. RoPE is x cos + rotate_half(x) sin (transformers' apply_rotary_pos_emb).
/// </remarks>
internal static unsafe class DecodeKernels
{
    /// <summary>Writes slot <paramref name="slot"/>'s roped keys and values, then attends over slots 0..slot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // fully optimised from the first call: no tier-0 or OSR loops
    public static void Attention(float* qkv, float* rope, int ropeRows, float* cache, float* output, int batch, int queryHeads, int kvHeads,
        int headDim, int capacity, int slot, bool[]? pad, Span<float> scores)
    {
        if (queryHeads % kvHeads != 0) throw new ArgumentException($"{queryHeads} query heads do not split over {kvHeads} kv heads");
        if ((uint)slot >= (uint)capacity) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"cache has {capacity} slots");
        if (ropeRows != 1 && ropeRows != batch) throw new ArgumentException($"rope table has {ropeRows} rows, expected 1 or {batch}");
        if (scores.Length < slot + 1) throw new ArgumentException($"scores buffer holds {scores.Length} floats, needs {slot + 1}");
        if (pad is not null && pad.Length != (long)batch * capacity)
            throw new ArgumentException($"pad mask has {pad.Length} entries, expected {batch} x {capacity}");
        var n = queryHeads + 2 * kvHeads;
        var group = queryHeads / kvHeads;
        var filled = slot + 1;
        long plane = (long)capacity * headDim; // one kv head's keys (or values)
        Span<float> q = headDim <= 256 ? stackalloc float[headDim] : new float[headDim];
        fixed (float* s = scores, qr = q)
        {
            for (var row = 0; row < batch; row++)
            {
                float* x = qkv + (long)row * 2 * n * headDim;   // [n, h_d]
                float* xr = x + (long)n * headDim;               // rotate_half(x), [n, h_d]
                float* cos = rope + ((long)(ropeRows == 1 ? 0 : row) * capacity + slot) * 4 * headDim;
                float* sin = cos + 2 * headDim;
                for (var g = 0; g < kvHeads; g++)
                {
                    float* keys = cache + ((long)row * kvHeads + g) * 2 * plane;
                    float* values = keys + plane;
                    var k = queryHeads + 2 * g;
                    Rope(x + (long)k * headDim, xr + (long)k * headDim, cos, sin, keys + (long)slot * headDim, headDim);
                    new Span<float>(x + (long)(k + 1) * headDim, headDim).CopyTo(new Span<float>(values + (long)slot * headDim, headDim));
                    for (var j = 0; j < group; j++)
                    {
                        var h = g * group + j;
                        Rope(x + (long)h * headDim, xr + (long)h * headDim, cos, sin, qr, headDim);
                        Head(qr, keys, values, output + ((long)row * queryHeads + h) * headDim,
                            headDim, filled, pad is null ? null : new ReadOnlySpan<bool>(pad, row * capacity, filled), s);
                    }
                }
            }
        }
    }

    // y = x cos + xr sin over n floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rope(float* x, float* xr, float* cos, float* sin, float* y, int n)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
                (Vector256.Load(x + i) * Vector256.Load(cos + i) + Vector256.Load(xr + i) * Vector256.Load(sin + i)).Store(y + i);
        for (; i < n; i++) y[i] = x[i] * cos[i] + xr[i] * sin[i];
    }

    // softmax(q K^T) V for one query head over `filled` slots.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Head(float* q, float* keys, float* values, float* output, int headDim, int filled, ReadOnlySpan<bool> pad, float* s)
    {
        var simd = Avx.IsSupported && headDim % Vector256<float>.Count == 0;
        var t = 0;
        if (simd)
            for (; t <= filled - 8; t += 8) // eight slots' dot products at once, reduced by one tree of horizontal adds
                Scores8(q, keys + (long)t * headDim, headDim).Store(s + t);
        for (; t < filled; t++) s[t] = Dot(q, keys + (long)t * headDim, headDim);
        if (!pad.IsEmpty)
            for (t = 0; t < filled; t++)
                if (pad[t]) s[t] = float.NegativeInfinity;
        var max = Max(s, filled);
        var inv = 1f / Exp(s, filled, max);
        if (simd)
        {
            for (var d = 0; d < headDim; d += Vector256<float>.Count)
                (WeightedSum(s, values + d, headDim, filled) * inv).Store(output + d);
            return;
        }
        new Span<float>(output, headDim).Clear();
        for (t = 0; t < filled; t++)
            for (var d = 0; d < headDim; d++) output[d] += s[t] * values[(long)t * headDim + d];
        for (var d = 0; d < headDim; d++) output[d] *= inv;
    }

    // q . k_i for the eight consecutive key rows k_0..k_7 of headDim (a multiple of 8) floats each.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Scores8(float* q, float* k, int headDim)
    {
        Vector256<float> p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default, p6 = default, p7 = default;
        for (var d = 0; d < headDim; d += 8)
        {
            var qd = Vector256.Load(q + d);
            p0 += qd * Vector256.Load(k + d);
            p1 += qd * Vector256.Load(k + headDim + d);
            p2 += qd * Vector256.Load(k + 2 * headDim + d);
            p3 += qd * Vector256.Load(k + 3 * headDim + d);
            p4 += qd * Vector256.Load(k + 4 * headDim + d);
            p5 += qd * Vector256.Load(k + 5 * headDim + d);
            p6 += qd * Vector256.Load(k + 6 * headDim + d);
            p7 += qd * Vector256.Load(k + 7 * headDim + d);
        }
        // hadd(hadd(p0, p1), hadd(p2, p3)) = [sum of p0..p3's low halves | their high halves]; the two halves added
        var a = Avx.HorizontalAdd(Avx.HorizontalAdd(p0, p1), Avx.HorizontalAdd(p2, p3));
        var b = Avx.HorizontalAdd(Avx.HorizontalAdd(p4, p5), Avx.HorizontalAdd(p6, p7));
        return Avx.Permute2x128(a, b, 0x20) + Avx.Permute2x128(a, b, 0x31);
    }

    // sum_t w[t] v_t[0..8) over n rows of `stride` floats, four accumulators to hide the add latency.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> WeightedSum(float* w, float* v, int stride, int n)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        var t = 0;
        for (; t <= n - 4; t += 4)
        {
            a0 += Vector256.Create(w[t]) * Vector256.Load(v + (long)t * stride);
            a1 += Vector256.Create(w[t + 1]) * Vector256.Load(v + (long)(t + 1) * stride);
            a2 += Vector256.Create(w[t + 2]) * Vector256.Load(v + (long)(t + 2) * stride);
            a3 += Vector256.Create(w[t + 3]) * Vector256.Load(v + (long)(t + 3) * stride);
        }
        for (; t < n; t++) a0 += Vector256.Create(w[t]) * Vector256.Load(v + (long)t * stride);
        return (a0 + a1) + (a2 + a3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* a, float* b, int n)
    {
        var i = 0;
        var sum = 0f;
        if (Vector256.IsHardwareAccelerated && n >= Vector256<float>.Count)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
                acc += Vector256.Load(a + i) * Vector256.Load(b + i);
            sum = Vector256.Sum(acc);
        }
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Max(float* s, int n)
    {
        var t = 0;
        var max = float.NegativeInfinity;
        if (Vector256.IsHardwareAccelerated && n >= Vector256<float>.Count)
        {
            var m = Vector256.Create(float.NegativeInfinity);
            for (; t <= n - Vector256<float>.Count; t += Vector256<float>.Count) m = Vector256.Max(m, Vector256.Load(s + t));
            for (var i = 0; i < Vector256<float>.Count; i++) max = MathF.Max(max, m[i]);
        }
        for (; t < n; t++) max = MathF.Max(max, s[t]);
        return max;
    }

    // s[t] = exp(s[t] - max) for t < n; returns their sum.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Exp(float* s, int n, float max)
    {
        var t = 0;
        var sum = 0f;
        if (Avx2.IsSupported)
        {
            var m = Vector256.Create(max);
            var acc = Vector256<float>.Zero;
            for (; t <= n - Vector256<float>.Count; t += Vector256<float>.Count)
            {
                var e = ExpNonPositive(Vector256.Load(s + t) - m);
                e.Store(s + t);
                acc += e;
            }
            sum = Vector256.Sum(acc);
        }
        for (; t < n; t++)
        {
            s[t] = MathF.Exp(s[t] - max);
            sum += s[t];
        }
        return sum;
    }

    /// <summary>
    /// exp(x) for x &lt;= 0 (softmax's x - max), 0 below -87.33 and at -inf; needs AVX2. Cephes' expf: x = n ln2 + r with |r| &lt;=
    /// ln2/2 (ln2 split in two for an exact n ln2), e^r by its degree-7 minimax polynomial, 2^n put in the exponent
    /// bits. Relative error a few float ulps (tested against double exp), like libtorch's vectorised exp; all in float,
    /// where Vector256.Exp widens to double (half the speed).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> ExpNonPositive(Vector256<float> x)
    {
        var low = Vector256.Create(-87.33f);
        var tiny = Vector256.LessThan(x, low); // also -inf (padding)
        x = Avx.Max(x, low);
        var n = Avx.RoundToNegativeInfinity(x * Vector256.Create(1.44269504088896341f) + Vector256.Create(0.5f));
        var r = x - n * Vector256.Create(0.693359375f) - n * Vector256.Create(-2.12194440e-4f);
        var p = Vector256.Create(1.9875691500e-4f);
        p = p * r + Vector256.Create(1.3981999507e-3f);
        p = p * r + Vector256.Create(8.3334519073e-3f);
        p = p * r + Vector256.Create(4.1665795894e-2f);
        p = p * r + Vector256.Create(1.6666665459e-1f);
        p = p * r + Vector256.Create(5.0000001201e-1f);
        var y = p * (r * r) + r + Vector256<float>.One;
        var scale = Vector256.ShiftLeft(Avx.ConvertToVector256Int32WithTruncation(n) + Vector256.Create(127), 23).AsSingle(); // 2^n, n >= -126
        return Vector256.AndNot(y * scale, tiny);
    }

    /// <summary>y[r] = x[r] / sqrt(sum(x[r]^2) + <paramref name="normEps"/>) for each of <paramref name="rows"/> rows of
    /// <paramref name="dim"/> floats (RMSNorm with its weight and sqrt(d) folded into the next matmul; normEps = d eps).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, float* y, int rows, int dim, float normEps)
    {
        for (var r = 0; r < rows; r++, x += dim, y += dim)
        {
            var i = 0;
            var sum = 0f;
            if (Vector256.IsHardwareAccelerated && dim >= Vector256<float>.Count)
            {
                var acc = Vector256<float>.Zero;
                for (; i <= dim - Vector256<float>.Count; i += Vector256<float>.Count)
                {
                    var v = Vector256.Load(x + i);
                    acc += v * v;
                }
                sum = Vector256.Sum(acc);
            }
            for (; i < dim; i++) sum += x[i] * x[i];
            var scale = 1f / MathF.Sqrt(sum + normEps);
            i = 0;
            if (Vector256.IsHardwareAccelerated)
                for (; i <= dim - Vector256<float>.Count; i += Vector256<float>.Count)
                    (Vector256.Load(x + i) * scale).Store(y + i);
            for (; i < dim; i++) y[i] = x[i] * scale;
        }
    }

    /// <summary>y[r, j] = silu(g[r, j]) * g[r, f + j] for each of <paramref name="rows"/> rows of
    /// <paramref name="gateUp"/> [rows, 2f] (gate, then up): the SwiGLU MLP's activation, y [rows, f].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SiluGate(float* gateUp, float* y, int rows, int f)
    {
        for (var r = 0; r < rows; r++, gateUp += 2 * f, y += f)
        {
            var j = 0;
            if (Avx2.IsSupported)
                for (; j <= f - Vector256<float>.Count; j += Vector256<float>.Count)
                {
                    // silu(x) = x sigmoid(x); sigmoid from e = exp(-|x|) <= 1: 1 / (1 + e) for x >= 0, e / (1 + e) below
                    var x = Vector256.Load(gateUp + j);
                    var e = ExpNonPositive(-Vector256.Abs(x));
                    var sigmoid = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256<float>.Zero), e, Vector256<float>.One)
                                  / (Vector256<float>.One + e);
                    (x * sigmoid * Vector256.Load(gateUp + f + j)).Store(y + j);
                }
            for (; j < f; j++)
            {
                var x = gateUp[j];
                y[j] = x / (1f + MathF.Exp(-x)) * gateUp[f + j];
            }
        }
    }
}

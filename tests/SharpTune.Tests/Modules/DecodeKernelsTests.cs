// The decoding step's host kernels against float64 computations written out here from the definitions (RoPE as
// x cos + rotate_half(x) sin, softmax attention, RMSNorm, silu(x) = x / (1 + e^-x), exp), over shapes that reach the
// scalar tails (head dim 12, widths 13), GQA groups, padding slots and per-row RoPE tables. Bounds follow from the
// float32 arithmetic (FloatBounds); the kernels' summation order differs from the references'.
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SharpTune.Modules;

namespace SharpTune.Tests.Modules;

public sealed unsafe class DecodeKernelsTests
{
    private static float[] Normal(Random rng, int n, double scale = 1) =>
        [.. Enumerable.Range(0, n).Select(_ => (float)(scale * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())))];

    [Theory]
    [InlineData(8, 4, 2, 1)]
    [InlineData(8, 4, 4, 3)]
    [InlineData(12, 4, 2, 3)]
    [InlineData(64, 8, 2, 1)]
    public void Attention_MatchesFloat64SoftmaxAttentionAndWritesTheSlot(int hd, int nH, int nKv, int ropeRows)
    {
        // Given 3 rows, a 20-slot cache filled up to slot 16, row 1 left-padded in slots 0..4, and a new token at slot 17
        const int b = 3, c = 20, slot = 17;
        var rng = new Random(hd * 100 + nH * 10 + nKv + ropeRows);
        var n = nH + 2 * nKv;
        var qkv = Normal(rng, b * 2 * n * hd);                                   // [b, 2, n, h_d]
        for (var i = 0; i < b * 2 * n * hd; i++)                                 // values' rotate_half rows are zero
            if ((i / hd) % n >= nH && ((i / hd) % n - nH) % 2 == 1 && (i / (n * hd)) % 2 == 1) qkv[i] = 0;
        var rope = new float[ropeRows * c * 4 * hd];                             // [b|1, c, 2, 2, h_d]
        for (var r = 0; r < ropeRows; r++)
            for (var t = 0; t < c; t++)
                for (var d = 0; d < hd; d++)
                {
                    var angle = (t + r) * Math.Pow(10_000, -2.0 * (d % (hd / 2)) / hd);
                    var at = ((r * c + t) * 4) * hd + d;
                    (rope[at], rope[at + hd], rope[at + 2 * hd], rope[at + 3 * hd]) = ((float)Math.Cos(angle), 1, (float)Math.Sin(angle), 0);
                }
        var cache = Normal(rng, b * nKv * 2 * c * hd);                             // [b, n_kv, 2, c, h_d]
        var before = (float[])cache.Clone();
        var pad = new bool[b * c];
        for (var t = 0; t < 5; t++) pad[c + t] = true;
        var output = new float[b * nH * hd];

        // When the kernel runs
        fixed (float* pq = qkv, pr = rope, pc = cache, po = output)
            DecodeKernels.Attention(pq, pr, ropeRows, pc, po, b, nH, nKv, hd, c, slot, pad, new float[c]);

        // Then the slot holds the roped key and the value, the other slots are untouched, and every head's output is
        // the float64 softmax attention over the row's unpadded slots
        for (var row = 0; row < b; row++)
        {
            var r = ropeRows == 1 ? 0 : row;
            double Roped(int head, int d) // x cos + rotate_half(x) sin, float64
            {
                var x = qkv[((row * 2) * n + head) * hd + d];
                var xr = qkv[((row * 2 + 1) * n + head) * hd + d];
                var at = ((r * c + slot) * 4) * hd + d;
                return (double)x * rope[at] + (double)xr * rope[at + 2 * hd];
            }
            for (var g = 0; g < nKv; g++)
            {
                var keys = ((row * nKv + g) * 2) * c * hd;
                var values = keys + c * hd;
                for (var t = 0; t < c; t++)
                    for (var d = 0; d < hd; d++)
                    {
                        if (t != slot)
                        {
                            Assert.Equal(before[keys + t * hd + d], cache[keys + t * hd + d]);
                            Assert.Equal(before[values + t * hd + d], cache[values + t * hd + d]);
                        }
                    }
                for (var d = 0; d < hd; d++)
                {
                    var k = nH + 2 * g;
                    Assert.Equal(Roped(k, d), cache[keys + slot * hd + d], 2 * FloatBounds.U * (Math.Abs(Roped(k, d)) + 1e-30) + 1e-6);
                    Assert.Equal(qkv[((row * 2) * n + k + 1) * hd + d], cache[values + slot * hd + d]);
                }
                for (var j = 0; j < nH / nKv; j++)
                {
                    var h = g * (nH / nKv) + j;
                    var q = Enumerable.Range(0, hd).Select(d => Roped(h, d)).ToArray();
                    var slots = Enumerable.Range(0, slot + 1).Where(t => !pad[row * c + t]).ToArray();
                    var scores = slots.Select(t => Enumerable.Range(0, hd).Sum(d => q[d] * cache[keys + t * hd + d])).ToArray();
                    var absScores = slots.Select(t => Enumerable.Range(0, hd).Sum(d => Math.Abs(q[d] * cache[keys + t * hd + d]))).Max();
                    var max = scores.Max();
                    var weights = scores.Select(x => Math.Exp(x - max)).ToArray();
                    var sum = weights.Sum();
                    var vMax = slots.SelectMany(t => Enumerable.Range(0, hd).Select(d => Math.Abs((double)cache[values + t * hd + d]))).Max();
                    // Each weight: the roped q (2 roundings), the dot product (h_d terms), the max subtraction and the
                    // exp (8 u) perturb it relatively; the weighted sum and its normaliser add gamma(s + 2).
                    var weightError = FloatBounds.Gamma(hd + 3) * absScores * 2 + 8 * FloatBounds.U;
                    var bound = (2 * weightError + FloatBounds.Gamma(slot + 3)) * vMax * 1.01;
                    for (var d = 0; d < hd; d++)
                    {
                        var expected = slots.Select((t, i) => weights[i] * cache[values + t * hd + d]).Sum() / sum;
                        var actual = output[(row * nH + h) * hd + d];
                        Assert.True(Math.Abs(actual - expected) <= bound,
                            $"row {row} head {h} dim {d}: {actual} vs {expected:R}, |diff| {Math.Abs(actual - expected):E3} > bound {bound:E3}");
                    }
                }
            }
        }
    }

    [Fact]
    public void Attention_PaddingSlotsGetNoWeight()
    {
        // Given one row whose padding slot holds a key that would dominate the scores and a huge value
        const int hd = 8, c = 4, slot = 2;
        var qkv = new float[2 * 3 * hd];                 // n_h = 1, n_kv = 1: q, k, v; then rotate_half rows (zero)
        for (var d = 0; d < hd; d++) (qkv[d], qkv[hd + d], qkv[2 * hd + d]) = (1, 1, 2);
        var rope = new float[c * 4 * hd];
        for (var t = 0; t < c; t++) for (var d = 0; d < hd; d++) (rope[t * 4 * hd + d], rope[t * 4 * hd + hd + d]) = (1, 1); // cos 1, sin 0
        var cache = new float[2 * c * hd];
        for (var d = 0; d < hd; d++) (cache[d], cache[c * hd + d], cache[hd + d], cache[c * hd + hd + d]) = (100, 1e6f, 1, 2); // slot 0 padded, slot 1 valid
        var output = new float[hd];

        // When the kernel attends over slots 0..2 with slot 0 padded
        fixed (float* pq = qkv, pr = rope, pc = cache, po = output)
            DecodeKernels.Attention(pq, pr, 1, pc, po, 1, 1, 1, hd, c, slot, [true, false, false, false], new float[c]);

        // Then slots 1 and 2 (same key 1s, value 2) share the weight and slot 0's value is not seen
        Assert.All(output, x => Assert.Equal(2f, x));
    }

    [Avx2Fact]
    public void ExpNonPositive_MatchesFloat64ExpWithinEightUlps()
    {
        // Given a grid over the range softmax feeds it, x - max in [-87, 0], plus the cut-off and -inf
        var xs = Enumerable.Range(0, 87_001).Select(i => -i / 1000f).Concat([-1e-7f, -0.3465736f, -0.3465737f]).ToArray();

        // When evaluated eight at a time
        var worst = 0.0;
        for (var i = 0; i + 8 <= xs.Length; i += 8)
        {
            var e = DecodeKernels.ExpNonPositive(Vector256.Create(xs, i));
            for (var j = 0; j < 8; j++)
            {
                var exact = Math.Exp(xs[i + j]);
                // Then the relative error stays within 8 u: 1.7 u of the polynomial (Cephes' figure), u each for the
                // reduced argument, the two final adds and the product, 0.06 gamma(14) for Horner
                // (|p r^2| <= 0.06), and headroom for the subnormal-free 2^n scaling (exact)
                if (xs[i + j] >= -80) worst = Math.Max(worst, Math.Abs(e[j] - exact) / exact);
                else Assert.True(Math.Abs(e[j] - exact) <= 1e-34, $"exp({xs[i + j]}) = {e[j]}");
            }
        }
        Assert.True(worst <= 8 * FloatBounds.U, $"max relative error {worst:E3} > 8 u");
        var tail = DecodeKernels.ExpNonPositive(Vector256.Create(0f, -87.4f, -100f, float.NegativeInfinity, -1f, -2f, -3f, -4f));
        Assert.Equal(1f, tail[0]);
        Assert.Equal(0f, tail[1]);
        Assert.Equal(0f, tail[2]);
        Assert.Equal(0f, tail[3]);
    }

    [Theory]
    [InlineData(13)]
    [InlineData(64)]
    public void RmsNorm_MatchesFloat64(int dim)
    {
        // Given 3 rows and d eps
        var rng = new Random(dim);
        var x = Normal(rng, 3 * dim, scale: 3);
        var y = new float[x.Length];
        const float normEps = 1e-5f * 64;

        // When normed
        fixed (float* px = x, py = y) DecodeKernels.RmsNorm(px, py, 3, dim, normEps);

        // Then y = x / sqrt(sum x^2 + d eps): the sum of squares (d terms and their squaring), the sqrt, the division
        // and the product each round once
        for (var r = 0; r < 3; r++)
        {
            var row = x.Skip(r * dim).Take(dim).Select(v => (double)v).ToArray();
            var scale = 1 / Math.Sqrt(row.Sum(v => v * v) + normEps);
            for (var i = 0; i < dim; i++)
                Assert.Equal(row[i] * scale, y[r * dim + i], (FloatBounds.Gamma(dim + 1) / 2 + 3 * FloatBounds.U) * Math.Abs(row[i] * scale) * 1.01);
        }
    }

    [Theory]
    [InlineData(13)]
    [InlineData(48)]
    public void SiluGate_MatchesFloat64(int f)
    {
        // Given rows of gate values across silu's range (both signs, beyond exp's float range) and up values
        var rng = new Random(f);
        var gateUp = Normal(rng, 2 * 2 * f, scale: 8);
        (gateUp[0], gateUp[1], gateUp[2], gateUp[3]) = (100, -100, 0, -1e-3f);
        var y = new float[2 * f];

        // When the gate is applied
        fixed (float* pg = gateUp, py = y) DecodeKernels.SiluGate(pg, py, 2, f);

        // Then y = x / (1 + e^-x) * up: the exp (8 u), the sum, the division and two products
        for (var r = 0; r < 2; r++)
            for (var j = 0; j < f; j++)
            {
                double x = gateUp[r * 2 * f + j], up = gateUp[r * 2 * f + f + j];
                var expected = x / (1 + Math.Exp(-x)) * up;
                Assert.Equal(expected, y[r * f + j], 12 * FloatBounds.U * Math.Abs(expected) + 1e-38);
            }
    }
}

/// <summary>A fact that needs AVX2 (the kernels' own exp); skipped with the reason elsewhere.</summary>
public sealed class Avx2FactAttribute : FactAttribute
{
    public Avx2FactAttribute()
    {
        if (!Avx2.IsSupported) Skip = "AVX2 not available on this CPU: the kernels use Vector256.Exp there";
    }
}

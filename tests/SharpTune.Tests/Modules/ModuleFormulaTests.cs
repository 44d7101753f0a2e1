using SharpTune.Models;
using SharpTune.Models.Llama2;
using SharpTune.Modules;
using SharpTune.Native;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Tests.Modules;

/// <summary>Each module against its textbook formula, evaluated independently in managed code or plain tensor ops.</summary>
public sealed class ModuleFormulaTests
{
    public ModuleFormulaTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    public void RmsNorm_RandomInput_EqualsDirectFormula()
    {
        // Given x [2, 3, 8] and a non-trivial weight
        manual_seed(1);
        using var norm = new RmsNorm(8, eps: 1e-5);
        using (no_grad()) norm.Weight.copy_(arange(1, 9, dtype: ScalarType.Float32) / 4);
        var x = randn(2, 3, 8);
        // When normalised
        var y = norm.call(x).data<float>().ToArray();
        // Then y_i = w_i * x_i / sqrt(mean(x^2) + eps), computed row by row in double
        var xs = x.data<float>().ToArray();
        for (var r = 0; r < 6; r++)
        {
            var ms = 0.0;
            for (var i = 0; i < 8; i++) ms += xs[r * 8 + i] * (double)xs[r * 8 + i];
            var inv = 1 / Math.Sqrt(ms / 8 + 1e-5);
            for (var i = 0; i < 8; i++) Assert.Equal((i + 1) / 4.0 * xs[r * 8 + i] * inv, y[r * 8 + i], 5);
        }
    }

    [Fact]
    public void RmsNorm_Bf16Input_ComputesStatisticInFloat32()
    {
        // A bf16 mean of squares would lose the small component; fp32 keeps the result equal to the fp32 path rounded.
        using var norm = new RmsNorm(4, eps: 1e-6);
        var x = tensor(new float[] { 300f, 1f, 1f, 1f }).reshape(1, 4);
        var expected = norm.call(x).to_type(ScalarType.BFloat16).to_type(ScalarType.Float32).data<float>().ToArray();
        var actual = norm.call(x.to_type(ScalarType.BFloat16)).to_type(ScalarType.Float32).data<float>().ToArray();
        Assert.Equal(ScalarType.BFloat16, norm.call(x.to_type(ScalarType.BFloat16)).dtype);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void RotaryApply_RotateHalfLayout_EqualsPairwise2DRotationByPositionTimesFrequency()
    {
        // Given q [1, 1, 3, 8] at positions 0, 5, 9 and base 10000
        manual_seed(2);
        var rope = new RotaryEmbedding(8, 10_000);
        var q = randn(1, 1, 3, 8);
        var pos = tensor(new long[] { 0, 5, 9 }).unsqueeze(0);
        var (cos, sin) = rope.CosSin(pos, ScalarType.Float32);
        var y = RotaryEmbedding.Apply(q, cos, sin).data<float>().ToArray();
        var xs = q.data<float>().ToArray();
        long[] p = [0, 5, 9];
        // Then pair (x_i, x_{i+4}) is rotated by angle p * 10000^(-2i/8)
        for (var t = 0; t < 3; t++)
            for (var i = 0; i < 4; i++)
            {
                var angle = p[t] * Math.Pow(10_000, -2.0 * i / 8);
                double a = xs[t * 8 + i], b = xs[t * 8 + i + 4];
                Assert.Equal(a * Math.Cos(angle) - b * Math.Sin(angle), y[t * 8 + i], 4);
                Assert.Equal(b * Math.Cos(angle) + a * Math.Sin(angle), y[t * 8 + i + 4], 4);
            }
    }

    [Fact]
    public void InverseFrequencies_Llama31Scaling_MatchesPublishedRule()
    {
        // Llama 3.1 8B: head_dim 128, theta 500000, factor 8, low 1, high 4, original context 8192.
        var scaled = RotaryEmbedding.InverseFrequencies(128, 500_000, new Llama3RopeScaling(8, 1, 4, 8192));
        var plain = RotaryEmbedding.InverseFrequencies(128, 500_000, null);
        var changed = 0;
        for (var i = 0; i < 64; i++)
        {
            var wavelen = 2 * Math.PI / plain[i];
            if (wavelen < 8192 / 4.0) Assert.Equal(plain[i], scaled[i]); // high frequency: kept
            else if (wavelen > 8192 / 1.0) Assert.Equal(plain[i] / 8, scaled[i], 15); // low frequency: divided by factor
            else
            {
                var s = (8192 / wavelen - 1) / (4 - 1);
                Assert.Equal((1 - s) * plain[i] / 8 + s * plain[i], scaled[i], 15);
                changed++;
            }
        }
        // The published rule leaves a band of smoothed frequencies; with these numbers it is non-empty, and the first
        // frequency (1.0) and the last (divided by 8) are fixed anchors.
        Assert.True(changed > 0);
        Assert.Equal(1.0, scaled[0]);
        Assert.Equal(1.0, Math.Pow(500_000, -126.0 / 128) / 8 / scaled[63], 12);
    }

    [Fact]
    public void FeedForward_RandomInput_EqualsSwiGluFormula()
    {
        manual_seed(3);
        var gate = nn.Linear(6, 10, false); var up = nn.Linear(6, 10, false); var down = nn.Linear(10, 6, false);
        using var ff = new FeedForward(gate, up, down);
        var x = randn(2, 4, 6);
        var g = x.matmul(gate.weight!.t());
        var expected = (g * (1 / (1 + (-g).exp())) * x.matmul(up.weight!.t())).matmul(down.weight!.t());
        Assert.True(ff.call(x).allclose(expected, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void Attention_GqaWithBias_EqualsExplicitSoftmaxFormula()
    {
        // Given a GQA attention (4 query heads sharing 2 kv heads) with q/k/v bias
        manual_seed(4);
        const int heads = 4, kvHeads = 2, hd = 8, d = 32, s = 5;
        var qp = nn.Linear(d, heads * hd, true); var kp = nn.Linear(d, kvHeads * hd, true);
        var vp = nn.Linear(d, kvHeads * hd, true); var op = nn.Linear(heads * hd, d, false);
        using var attn = new Attention(heads, kvHeads, hd, qp, kp, vp, op);
        var rope = new RotaryEmbedding(hd, 10_000);
        var x = randn(1, s, d);
        var (cos, sin) = rope.CosSin(arange(s, dtype: ScalarType.Int64).unsqueeze(0), ScalarType.Float32);
        var actual = attn.Forward(x, cos, sin, null);

        // Then it equals softmax(q k^T / sqrt(h_d) + causal) v per head, query head h reading kv head h / 2
        var q = RotaryEmbedding.Apply(qp.call(x).view(1, s, heads, hd).transpose(1, 2), cos, sin);
        var k = RotaryEmbedding.Apply(kp.call(x).view(1, s, kvHeads, hd).transpose(1, 2), cos, sin);
        var v = vp.call(x).view(1, s, kvHeads, hd).transpose(1, 2);
        var outs = new List<Tensor>();
        var causal = ones(s, s).tril().eq(0);
        for (var h = 0; h < heads; h++)
        {
            var scores = q[0, h].matmul(k[0, h / 2].t()) / Math.Sqrt(hd);
            var w = scores.masked_fill(causal, double.NegativeInfinity).softmax(-1);
            outs.Add(w.matmul(v[0, h / 2]));
        }
        var expected = op.call(stack(outs, 1).reshape(1, s, heads * hd)); // [s, n_h, h_d] -> [1, s, n_h*h_d]
        Assert.True(actual.allclose(expected, rtol: 1e-4, atol: 1e-5));
    }
}

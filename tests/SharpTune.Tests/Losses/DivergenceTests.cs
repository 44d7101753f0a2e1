// Divergence values against hand-computed numbers and an independent double-precision implementation; gradients
// (autograd and closed form) against float64 central finite differences; the special cases of the issue.
using SharpTune.Losses;
using TorchSharp;
using static SharpTune.Tests.Losses.LossTestUtil;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

public sealed class DivergenceTests
{
    // Student logits (0, 0): q = (1/2, 1/2). Teacher logits (ln 3, 0): p = (3/4, 1/4).
    private static readonly float[] TwoS = [0f, 0f];
    private static readonly float[] TwoT = [(float)Math.Log(3), 0f];

    /// <summary>The fast all-finite check (max/min reductions) must still see every kind of non-finite entry, in
    /// either tensor and at any position, and the mask must mark exactly those entries.</summary>
    [Theory]
    [InlineData(float.NaN, false, 0)]
    [InlineData(float.PositiveInfinity, false, 7)]
    [InlineData(float.NegativeInfinity, true, 13)]
    [InlineData(float.NaN, true, 19)]
    public void NonFiniteMask_AnyNonFiniteEntry_IsMaskedExactly(float bad, bool inTeacher, int at)
    {
        using var scope = torch.NewDisposeScope();
        var s = torch.randn(4, 5);
        var t = torch.randn(4, 5);
        Assert.Null(DivergenceMath.NonFiniteMask(s, t));
        (inTeacher ? t : s).view(-1)[at] = torch.tensor(bad);
        var mask = DivergenceMath.NonFiniteMask(s, t);
        Assert.NotNull(mask);
        Assert.Equal(1, mask!.sum().item<long>());
        Assert.True(mask.view(-1)[at].item<bool>());
    }

    [Theory]
    [InlineData(DivergenceKind.ForwardKl, 0.75 * 0.4054651081081644 + 0.25 * -0.6931471805599453)]       // 3/4 ln(3/2) + 1/4 ln(1/2)
    [InlineData(DivergenceKind.ForwardKlCrossEntropy, 0.6931471805599453)]                                  // -(3/4 + 1/4) ln(1/2) = ln 2
    [InlineData(DivergenceKind.ReverseKl, 0.5 * -0.4054651081081644 + 0.5 * 0.6931471805599453)]           // 1/2 ln(2/3) + 1/2 ln 2
    [InlineData(DivergenceKind.TotalVariation, 0.25)]                                                        // 1/2 (1/4 + 1/4)
    public void PerToken_TwoWordVocabulary_MatchesHandValue(DivergenceKind kind, double expected)
    {
        var s = torch.tensor(TwoS).reshape(1, 2);
        var t = torch.tensor(TwoT).reshape(1, 2);
        var value = DivergenceMath.PerToken(s, t, new DivergenceOptions { Kind = kind });
        Close(expected, value, 1e-6, kind.ToString());
    }

    [Fact]
    public void PerToken_TwoWordVocabularyMixtures_MatchHandValues()
    {
        var s = torch.tensor(TwoS).reshape(1, 2);
        var t = torch.tensor(TwoT).reshape(1, 2);
        // JSD beta=1/2: m = (5/8, 3/8).
        var jsd = 0.5 * (0.75 * Math.Log(0.75 / 0.625) + 0.25 * Math.Log(0.25 / 0.375))
                  + 0.5 * (0.5 * Math.Log(0.5 / 0.625) + 0.5 * Math.Log(0.5 / 0.375));
        Close(jsd, DivergenceMath.PerToken(s, t, new DivergenceOptions { Kind = DivergenceKind.Jsd, Beta = 0.5 }), 1e-6, "jsd");
        // Skew forward, alpha=0.1: m = 0.1 p + 0.9 q = (0.525, 0.475).
        var skf = 0.75 * Math.Log(0.75 / 0.525) + 0.25 * Math.Log(0.25 / 0.475);
        Close(skf, DivergenceMath.PerToken(s, t, new DivergenceOptions { Kind = DivergenceKind.SkewForwardKl }), 1e-6, "skew fkl");
        // Skew reverse, alpha=0.1: m = 0.9 p + 0.1 q = (0.725, 0.275).
        var skr = 0.5 * Math.Log(0.5 / 0.725) + 0.5 * Math.Log(0.5 / 0.275);
        Close(skr, DivergenceMath.PerToken(s, t, new DivergenceOptions { Kind = DivergenceKind.SkewReverseKl }), 1e-6, "skew rkl");
    }

    [Fact]
    public void PerToken_Temperature2_IsFourTimesKlOfSoftenedDistributions()
    {
        // Teacher logits (2 ln 3, 0) at T=2 give p = (3/4, 1/4); student (0, 0) gives q = (1/2, 1/2).
        var s = torch.tensor(TwoS).reshape(1, 2);
        var t = torch.tensor(new[] { (float)(2 * Math.Log(3)), 0f }).reshape(1, 2);
        var value = DivergenceMath.PerToken(s, t, new DivergenceOptions { Temperature = 2 });
        Close(4 * (0.75 * Math.Log(1.5) + 0.25 * Math.Log(0.5)), value, 1e-6, "T=2");
    }

    [Fact]
    public void PerToken_RandomCasesEveryDivergence_MatchesDoubleReference()
    {
        var g = Seeded(1);
        var s = RandLogits(g, 5, 11);
        var t = RandLogits(g, 5, 11);
        foreach (var temp in new[] { 1.0, 2.5 })
            foreach (var o in AllDivergences(temp))
            {
                var value = DivergenceMath.PerToken(s, t, o);
                for (var i = 0; i < 5; i++)
                    Close(Reference(Row(s, i), Row(t, i), o), value[i], 2e-5, $"{o.Kind} T={temp} row {i}");
            }
    }

    [Fact]
    public void PerToken_NegativeInfinityEntries_EqualLossOverRemainingVocabularyWithoutNaN()
    {
        var g = Seeded(2);
        var s = RandLogits(g, 4, 7);
        var t = RandLogits(g, 4, 7);
        var sMasked = s.clone();
        var tMasked = t.clone();
        sMasked[.., 2] = torch.tensor(float.NegativeInfinity);
        tMasked[.., 2] = torch.tensor(float.NegativeInfinity);
        var keep = torch.tensor(new long[] { 0, 1, 3, 4, 5, 6 });
        foreach (var o in AllDivergences(1.5))
        {
            var expected = DivergenceMath.PerToken(s.index_select(1, keep), t.index_select(1, keep), o);
            var sg = sMasked.detach().requires_grad_(true);
            var value = DivergenceMath.PerToken(sg, tMasked, o);
            Close(expected, value, 1e-5, $"{o.Kind} masked value");
            value.sum().backward();
            Close(torch.zeros(4), sg.grad!.select(1, 2), 0, $"{o.Kind} grad at masked id");
            Assert.False(sg.grad!.isnan().any().item<bool>(), $"{o.Kind}: NaN gradient");
            var (closedValue, closedGrad) = DivergenceMath.PerTokenWithGrad(sMasked, tMasked, o);
            Close(expected, closedValue, 1e-5, $"{o.Kind} closed-form value");
            Close(sg.grad!, closedGrad, 1e-5, $"{o.Kind} closed-form grad with -inf");
        }
    }

    [Fact]
    public void Gradients_EveryDivergenceFloat64_MatchFiniteDifferences()
    {
        var g = Seeded(3);
        var s0 = RandLogits(g, 3, 6, dtype: ScalarType.Float64);
        var t = RandLogits(g, 3, 6, dtype: ScalarType.Float64);
        const double eps = 1e-6;
        foreach (var o in AllDivergences(1.7))
        {
            var s = s0.detach().requires_grad_(true);
            DivergenceMath.PerToken(s, t, o).sum().backward();
            var numeric = torch.zeros_like(s0);
            using (torch.no_grad())
                for (var i = 0; i < 3; i++)
                    for (var j = 0; j < 6; j++)
                    {
                        var plus = s0.clone(); plus[i, j] = plus[i, j] + eps;
                        var minus = s0.clone(); minus[i, j] = minus[i, j] - eps;
                        var diff = DivergenceMath.PerToken(plus, t, o).sum() - DivergenceMath.PerToken(minus, t, o).sum();
                        numeric[i, j] = diff / (2 * eps);
                    }
            Close(numeric, s.grad!, 1e-6, $"{o.Kind} autograd vs finite differences");
            var (_, closed) = DivergenceMath.PerTokenWithGrad(s0, t, o);
            Close(numeric, closed, 1e-6, $"{o.Kind} closed form vs finite differences");
        }
    }

    [Fact]
    public void ClosedFormGradient_RandomFloat32_MatchesAutograd()
    {
        var g = Seeded(4);
        var s0 = RandLogits(g, 6, 50, scale: 5);
        var t = RandLogits(g, 6, 50, scale: 5);
        foreach (var o in AllDivergences(0.7))
        {
            var s = s0.detach().requires_grad_(true);
            var value = DivergenceMath.PerToken(s, t, o);
            value.sum().backward();
            var (closedValue, closedGrad) = DivergenceMath.PerTokenWithGrad(s0, t, o);
            Close(value.detach(), closedValue, 1e-5, $"{o.Kind} value");
            Close(s.grad!, closedGrad, 1e-5, $"{o.Kind} grad");
        }
    }

    [Fact]
    public void SpecialCases_ReduceToTheirLimits()
    {
        var g = Seeded(5);
        var s = RandLogits(g, 4, 9);
        var t = RandLogits(g, 4, 9);
        Tensor V(DivergenceOptions o) => DivergenceMath.PerToken(s, t, o);
        var fkl = V(new() { Kind = DivergenceKind.ForwardKl });
        var rkl = V(new() { Kind = DivergenceKind.ReverseKl });
        Close(fkl, V(new() { Kind = DivergenceKind.Jsd, Beta = 0 }), 1e-6, "JSD(0) == FKL");
        Close(rkl, V(new() { Kind = DivergenceKind.Jsd, Beta = 1 }), 1e-6, "JSD(1) == RKL");
        Close(fkl, V(new() { Kind = DivergenceKind.SymmetricKl, SymKdRatio = 1 }), 1e-6, "Sym(1) == FKL");
        Close(rkl, V(new() { Kind = DivergenceKind.SymmetricKl, SymKdRatio = 0 }), 1e-6, "Sym(0) == RKL");
        Close(fkl, V(new() { Kind = DivergenceKind.SkewForwardKl, SkewAlpha = 0 }), 1e-6, "SKL(0) == FKL");
        Close(rkl, V(new() { Kind = DivergenceKind.SkewReverseKl, SkewAlpha = 0 }), 1e-6, "SRKL(0) == RKL");
        Close(fkl, V(new() { Kind = DivergenceKind.ForwardKl, Temperature = 1 }), 0, "T=1 == no temperature");
        // torchtune's value = KL + teacher entropy.
        var p = t.softmax(-1);
        var entropy = -(p * p.log()).sum(-1);
        Close(fkl + entropy, V(new() { Kind = DivergenceKind.ForwardKlCrossEntropy }), 1e-5, "H(p,q) == KL + H(p)");
    }

    [Fact]
    public void PerToken_IdenticalStudentAndTeacher_IsZeroForTrueDivergences()
    {
        var g = Seeded(6);
        var s = RandLogits(g, 3, 8);
        foreach (var o in AllDivergences(2.0).Where(o => o.Kind != DivergenceKind.ForwardKlCrossEntropy))
        {
            Close(torch.zeros(3), DivergenceMath.PerToken(s, s.clone(), o), 1e-6, o.Kind.ToString());
            var (_, grad) = DivergenceMath.PerTokenWithGrad(s, s.clone(), o);
            Close(torch.zeros(3, 8), grad, 1e-6, $"{o.Kind} gradient at the optimum");
        }
    }

    [Fact]
    public void Options_OutOfRange_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new DivergenceOptions { Temperature = 0 }.Validated());
        Assert.Throws<ArgumentOutOfRangeException>(() => new DivergenceOptions { Beta = 1.5 }.Validated());
        Assert.Throws<ArgumentOutOfRangeException>(() => new DivergenceOptions { SkewAlpha = 1 }.Validated());
        var e = Assert.Throws<ArgumentException>(() => DivergenceOptions.ParseKind("kl_div"));
        Assert.Contains("kl_div", e.Message);
    }
}

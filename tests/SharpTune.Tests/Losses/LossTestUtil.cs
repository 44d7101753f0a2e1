// Helpers for the loss tests: seeded random logits, an independent scalar (double, loop-based) implementation of
// every divergence written straight from the formulas, and tensor comparison with a clear message.
using SharpTune.Losses;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

internal static class LossTestUtil
{
    public static Generator Seeded(long seed)
    {
        TorchRuntime.EnsureLoaded();
        return new Generator((ulong)seed);
    }

    public static Tensor RandLogits(Generator g, long n, long v, double scale = 3.0, ScalarType dtype = ScalarType.Float32) =>
        (torch.randn(new[] { n, v }, dtype: ScalarType.Float64, generator: g) * scale).to(dtype);

    public static void Close(Tensor expected, Tensor actual, double tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        var e = expected.to(ScalarType.Float64).flatten().data<double>().ToArray();
        var a = actual.to(ScalarType.Float64).flatten().data<double>().ToArray();
        for (var i = 0; i < e.Length; i++)
        {
            Assert.False(double.IsNaN(a[i]), $"{what}: NaN at {i}");
            var diff = Math.Abs(e[i] - a[i]);
            Assert.True(diff <= tol * (1 + Math.Abs(e[i])), $"{what}: element {i} expected {e[i]:R} got {a[i]:R} (|diff| {diff:E2} > tol {tol:E1})");
        }
    }

    public static void Close(double expected, Tensor actual, double tol, string what) =>
        Close(torch.tensor(expected), actual.to(ScalarType.Float64).reshape(Array.Empty<long>()), tol, what);

    // Central differences in float64 (eps 1e-6: truncation ~1e-12, rounding ~1e-10) against autograd.
    public static void CheckGradient(Tensor s0, Func<Tensor, Tensor> loss)
    {
        var s = s0.detach().requires_grad_(true);
        loss(s).backward();
        const double eps = 1e-6;
        var numeric = torch.zeros_like(s0);
        using (torch.no_grad())
            for (var i = 0; i < s0.shape[0]; i++)
                for (var j = 0; j < s0.shape[1]; j++)
                {
                    var plus = s0.clone(); plus[i, j] = plus[i, j] + eps;
                    var minus = s0.clone(); minus[i, j] = minus[i, j] - eps;
                    numeric[i, j] = (loss(plus) - loss(minus)) / (2 * eps);
                }
        Assert.True(numeric.abs().max().item<double>() > 1e-3, "the gradient must not be trivially zero");
        Close(numeric, s.grad!, 1e-6, "autograd vs finite differences");
    }

    public static IEnumerable<DivergenceOptions> AllDivergences(double temperature = 1.0)
    {
        foreach (var kind in Enum.GetValues<DivergenceKind>())
            yield return new DivergenceOptions { Kind = kind, Temperature = temperature, Beta = 0.3, SkewAlpha = 0.2, SymKdRatio = 0.7 };
    }

    /// <summary>The divergence of one token straight from its definition, in double precision, over the entries where
    /// both logits are finite (the masking rule of the losses).</summary>
    public static double Reference(double[] s, double[] t, DivergenceOptions o)
    {
        var temp = o.Temperature;
        var q = Softmax(s, temp);
        var p = Softmax(t, temp);
        var use = s.Select((x, i) => double.IsFinite(x) && double.IsFinite(t[i])).ToArray();
        double Kl(double[] a, double[] b) => Enumerable.Range(0, a.Length).Where(i => use[i] && a[i] > 0).Sum(i => a[i] * Math.Log(a[i] / b[i]));
        double[] Mix(double[] a, double wa, double[] b) => a.Select((x, i) => wa * x + (1 - wa) * b[i]).ToArray();
        var value = o.Kind switch
        {
            DivergenceKind.ForwardKl => Kl(p, q),
            DivergenceKind.ForwardKlCrossEntropy => -Enumerable.Range(0, p.Length).Where(i => use[i]).Sum(i => p[i] * Math.Log(q[i])),
            DivergenceKind.ReverseKl => Kl(q, p),
            DivergenceKind.SymmetricKl => o.SymKdRatio * Kl(p, q) + (1 - o.SymKdRatio) * Kl(q, p),
            DivergenceKind.Jsd when o.Beta == 0 => Kl(p, q),
            DivergenceKind.Jsd when o.Beta == 1 => Kl(q, p),
            DivergenceKind.Jsd => o.Beta * Kl(p, Mix(p, o.Beta, q)) + (1 - o.Beta) * Kl(q, Mix(p, o.Beta, q)),
            DivergenceKind.SkewForwardKl => Kl(p, Mix(p, o.SkewAlpha, q)),
            DivergenceKind.SkewReverseKl => Kl(q, Mix(q, o.SkewAlpha, p)),
            DivergenceKind.TotalVariation => 0.5 * Enumerable.Range(0, p.Length).Where(i => use[i]).Sum(i => Math.Abs(p[i] - q[i])),
            _ => throw new ArgumentOutOfRangeException(nameof(o)),
        };
        return value * temp * temp;
    }

    public static double[] Softmax(double[] x, double temp)
    {
        var max = x.Where(double.IsFinite).Max() / temp;
        var e = x.Select(v => double.IsNegativeInfinity(v) ? 0 : Math.Exp(v / temp - max)).ToArray();
        var z = e.Sum();
        return e.Select(v => v / z).ToArray();
    }

    public static double[] Row(Tensor x, long i) => x[i].to(ScalarType.Float64).data<double>().ToArray();
}

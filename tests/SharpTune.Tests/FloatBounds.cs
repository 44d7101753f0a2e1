// Tolerances for comparing two float32 computations that are mathematically equal but round differently: the same
// sums in another order (another rank split, another micro-batch split, another CPU's vector width or kernel), a norm
// computed by another reduction. Each bound follows from the arithmetic and names its terms; none is what one CPU
// happened to produce. Where a computation promises bit-exactness (resume on one machine, the same process twice) the
// tests compare bytes instead and do not use these.
//
// The standard results used (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., ch. 3 and 4):
// - u = 2^-24 is float32's unit roundoff; a sum of n terms in ANY order has |computed - exact| <= gamma(n-1) * sum|x_i|
//   with gamma(k) = k u / (1 - k u). Two orders therefore differ by at most 2 gamma(n-1) sum|x_i|.
// - Rounding a value to float32 moves it by at most u |x|; two values that differ by e round to results that differ
//   by at most e + 2 u |x| (each is rounded on its own).
namespace SharpTune.Tests;

/// <summary>Float32 error bounds derived from the operations a comparison performs.</summary>
public static class FloatBounds
{
    /// <summary>Float32 unit roundoff, 2^-24.</summary>
    public const double U = 5.9604644775390625e-8;

    /// <summary>gamma(k) = k u / (1 - k u): the relative error bound of k chained float32 roundings.</summary>
    public static double Gamma(long k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        var ku = k * U;
        if (ku >= 1) throw new ArgumentOutOfRangeException(nameof(k), k, "k u must be below 1 for the bound to hold");
        return ku / (1 - ku);
    }

    /// <summary>
    /// Largest difference between two float32 evaluations, in different orders, of a sum of <paramref name="terms"/>
    /// terms whose absolute values add up to <paramref name="absSum"/>: 2 gamma(n-1) sum|x_i|.
    /// </summary>
    public static double ReorderedSum(long terms, double absSum) => 2 * Gamma(Math.Max(0, terms - 1)) * absSum;

    /// <summary>
    /// Largest element-wise difference between the weights of two float32 training runs after their steps, when the
    /// runs differ only in how each step's gradient sum is ordered (ranks, micro-batches, kernels).
    /// </summary>
    /// <remarks>
    /// Per step t and element: the gradient sums over at most <paramref name="termsPerGradient"/> per-token terms, so
    /// the two runs' gradients differ by at most gamma(n + 2) sum|terms| (the reordered sum, the 1/tokens scale and the
    /// clip coefficient, each one rounding more). This bound takes that as a relative delta &lt;= gamma(n + 2) of the
    /// gradient, i.e. it ASSUMES well-conditioned sums (sum|terms| within a small factor of |sum|). Where an element's
    /// terms nearly cancel, its reordering error is large relative to its value, and AdamW (scale-free) can turn it into
    /// an update difference of order lr: no float32 bound below a real bug's size exists there, so a test using this
    /// bound must keep its model in the well-conditioned regime (tests say how, e.g. the initial weight scale they draw).
    /// Under that assumption an optimizer update that is a ratio of such sums (AdamW's
    /// m / sqrt(v)) or linear in them (SGD's momentum buffer) then differs by at most 2 delta |update_t|. Storing the
    /// new weight rounds once more, and two nearly equal weights round apart by at most 2 u |w|. The weight difference
    /// also feeds back into the next gradients; for the short runs the tests use (lr * curvature * steps well below 1)
    /// that feedback is first-order small, and a factor 2 on the sum covers it. Summed over steps:
    /// 2 * sum_t (2 u W + 2 delta U_t), with W the largest weight magnitude and U_t the largest update of step t.
    /// A real data-parallel bug (a rank's gradient missing or counted twice, a wrong token normalisation under
    /// clipping) changes updates by a relative O(1), i.e. weights by ~ U_t per step: orders of magnitude above this.
    /// </remarks>
    /// <param name="maxUpdates">The largest per-element update |w_t - w_(t-1)| of each step (for AdamW with learning
    /// rate lr, at most lr (1 - beta1) / sqrt(1 - beta2) by Kingma and Ba's bound: see <see cref="AdamUpdateBound"/>).</param>
    /// <param name="maxAbsWeight">The largest |w| over the run.</param>
    /// <param name="termsPerGradient">Per-token terms in one gradient element's sum (valid tokens of a global batch).</param>
    public static double Trajectory(IEnumerable<double> maxUpdates, double maxAbsWeight, long termsPerGradient)
    {
        var delta = Gamma(termsPerGradient + 2);
        return 2 * maxUpdates.Sum(update => 2 * U * maxAbsWeight + 2 * delta * update);
    }

    /// <summary>Kingma and Ba (2015, section 2.1): |AdamW's Adam step| &lt;= lr (1 - beta1) / sqrt(1 - beta2) when
    /// 1 - beta1 &gt; sqrt(1 - beta2), else lr; plus the decoupled decay lr * weight_decay * |w|.</summary>
    public static double AdamUpdateBound(double lr, double maxAbsWeight, double weightDecay = 0.01, double beta1 = 0.9, double beta2 = 0.999)
    {
        var ratio = 1 - beta1 > Math.Sqrt(1 - beta2) ? (1 - beta1) / Math.Sqrt(1 - beta2) : 1.0;
        return lr * ratio + lr * weightDecay * maxAbsWeight;
    }
}

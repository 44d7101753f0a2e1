// A teacher given as its top-k token ids and log-probabilities per position (the format of offline teacher caches),
// and forward KL from such a teacher to a full-vocabulary student. The mass the teacher puts outside its top-k is
// either dropped (`Zero`) or compared, as one "tail" bucket, with the student's mass outside the same ids (`Tail`).
// References: Hinton et al. 2015 (T^2); offline top-k distillation as discussed in torchtune issue #2007.
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>How forward KL treats the teacher probability outside its top-k ids.</summary>
public enum MissingMass
{
    /// <summary>Ignored: KL is summed over the top-k ids only, with the teacher's probabilities as given (not renormalised).</summary>
    Zero,

    /// <summary>
    /// One extra bucket: p_tail = 1 - sum(top-k p_T) is compared with the student's mass outside those ids,
    /// adding p_tail (log p_tail - log q_tail) to the sum.
    /// </summary>
    Tail,
}

/// <summary>
/// A sparse teacher distribution: for each position the ids <paramref name="Indices"/> [..., k] (int64, distinct per
/// position) and their log-probabilities <paramref name="LogProbs"/> [..., k] (already at the distillation temperature;
/// <c>-inf</c> marks an unused slot).
/// </summary>
public sealed record SparseTeacher(Tensor Indices, Tensor LogProbs)
{
    /// <summary>Checks shapes and dtypes against student logits of <paramref name="tokens"/> rows and vocabulary
    /// <paramref name="vocab"/>; returns the pair flattened to [tokens, k].</summary>
    internal (Tensor Indices, Tensor LogProbs) Flatten(long tokens, long vocab)
    {
        if (!Indices.shape.SequenceEqual(LogProbs.shape))
            throw new ArgumentException(
                $"sparse teacher: indices shape [{string.Join(", ", Indices.shape)}] differs from log-probs shape " +
                $"[{string.Join(", ", LogProbs.shape)}]");
        if (Indices.dtype != ScalarType.Int64)
            throw new ArgumentException($"sparse teacher: indices must be int64, got {Indices.dtype}");
        var k = Indices.shape[^1];
        if (Indices.numel() != tokens * k)
            throw new ArgumentException(
                $"sparse teacher: {Indices.numel() / Math.Max(k, 1)} positions of top-{k} but the student has {tokens} tokens");
        var idx = Indices.reshape(tokens, k);
        if (idx.numel() > 0 && (idx.min().item<long>() < 0 || idx.max().item<long>() >= vocab))
            throw new ArgumentException(
                $"sparse teacher: ids must lie in [0, {vocab}) (student vocabulary); got [{idx.min().item<long>()}, {idx.max().item<long>()}]");
        return (idx, LogProbs.reshape(tokens, k).to(ScalarType.Float32));
    }
}

/// <summary>Forward KL from a sparse teacher: per-token values, differentiable and with closed-form gradients.</summary>
/// <remarks>Shapes: <c>n</c> tokens, <c>v</c> vocabulary, <c>k</c> teacher ids per token.</remarks>
internal static class SparseKlMath
{
    /// <summary>Per-token KL [n] (times T^2) of student logits <paramref name="s"/> [n, v] from a sparse teacher
    /// (<paramref name="idx"/>, <paramref name="lp"/>) [n, k]; differentiable in <paramref name="s"/>.</summary>
    public static Tensor PerToken(Tensor s, Tensor idx, Tensor lp, double temperature, MissingMass mode)
    {
        var logq = (temperature == 1 ? s : s / temperature).log_softmax(-1);   // [n, v]
        var lqK = logq.gather(-1, idx);                                        // [n, k]
        var use = lp.isfinite().logical_and(lqK.isfinite());                   // [n, k]
        var lpSafe = lp.masked_fill(use.logical_not(), 0);
        var pK = lpSafe.exp().masked_fill(use.logical_not(), 0);
        var value = (pK * (lpSafe - lqK.masked_fill(use.logical_not(), 0))).sum(-1);   // [n]
        if (mode == MissingMass.Tail)
        {
            var (pTail, logPTail, logQTail, active, _) = Tail(logq, idx, lp);
            value = value + (pTail * (logPTail - logQTail)).masked_fill(active.logical_not(), 0);
        }
        return temperature == 1 ? value : value * (temperature * temperature);
    }

    /// <summary>Per-token value [n] and gradient [n, v] with respect to the student logits, no graph.</summary>
    public static (Tensor Value, Tensor GradS) PerTokenWithGrad(Tensor s, Tensor idx, Tensor lp, double temperature, MissingMass mode)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var value = PerToken(s, idx, lp, temperature, mode);
        var logq = (temperature == 1 ? s : s / temperature).log_softmax(-1);   // [n, v]
        var lqK = logq.gather(-1, idx);                                        // [n, k]
        var use = lp.isfinite().logical_and(lqK.isfinite());
        var pK = lp.masked_fill(use.logical_not(), 0).exp().masked_fill(use.logical_not(), 0);
        // h = q * dKL/dq: -p_i on the teacher's ids ...
        var h = torch.zeros_like(logq).scatter_add_(-1, idx, -pK);            // [n, v]
        if (mode == MissingMass.Tail)
        {
            // ... and -p_tail * q_i / q_tail on every other id.
            var (pTail, _, logQTail, active, onTopK) = Tail(logq, idx, lp);
            var tailH = (logq - logQTail.unsqueeze(-1)).exp().mul_((-pTail).masked_fill(active.logical_not(), 0).unsqueeze(-1));
            tailH.masked_fill_(onTopK, 0);
            h.add_(tailH);
        }
        var q = logq.exp();
        var grad = h - q * h.sum(-1, keepdim: true);
        return DivergenceMath.Out(value, temperature == 1 ? grad : grad.mul_(temperature));
    }

    // p_tail = 1 - sum_k p_k (clamped at 0), log q_tail = log sum of the student's probability off the top-k ids.
    private static (Tensor PTail, Tensor LogPTail, Tensor LogQTail, Tensor Active, Tensor OnTopK) Tail(Tensor logq, Tensor idx, Tensor lp)
    {
        // The teacher side carries no gradient; only log q_tail depends on the student.
        var mass = lp.exp().masked_fill(lp.isfinite().logical_not(), 0).sum(-1);          // [n]
        var pTail = (1 - mass).clamp_min(0);                                               // [n]
        var onTopK = torch.zeros_like(logq, dtype: ScalarType.Bool).scatter_(-1, idx, torch.ones_like(idx, dtype: ScalarType.Bool));
        var logQTail = logq.masked_fill(onTopK, double.NegativeInfinity).logsumexp(-1);   // [n]
        var active = pTail.gt(0).logical_and(logQTail.isfinite());
        var logPTail = pTail.masked_fill(active.logical_not(), 1).log();
        return (pTail, logPTail, logQTail.masked_fill(active.logical_not(), 0), active, onTopK);
    }
}

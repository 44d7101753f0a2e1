// Gradient accumulation with one normalisation per optimizer step. Each micro-batch contributes the SUM of its
// per-token losses (reduction "sum" over the valid, non-ignored tokens) and its valid-token count; backward runs on
// that sum; when the step is complete the accumulated gradients are divided ONCE by the total valid tokens of all
// micro-batches. The result equals the gradient of the mean per-token loss over the whole step, so k micro-batches
// give the same update as one batch holding the same tokens, whatever the padding in each micro-batch.
// torchtune's KD recipe instead backprops per-micro-batch MEANS and then divides by the token count again (double
// normalisation, see torchtune recipes/knowledge_distillation_single_device.py); we do not reproduce that.
// References: torch.nn.utils.clip_grad_norm_ documentation (total 2-norm over all gradients, clip coefficient
// max_norm / (norm + 1e-6)).
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Training;

/// <summary>The figures of one finished optimizer step.</summary>
/// <param name="Loss">Mean per-token loss over every micro-batch of the step.</param>
/// <param name="Tokens">Valid (non-ignored) tokens in the step.</param>
/// <param name="GradNorm">Total 2-norm of the gradients before clipping (NaN when not computed).</param>
public sealed record AccumulatedStep(double Loss, long Tokens, double GradNorm);

/// <summary>
/// Accumulates summed micro-batch losses and normalises gradients once by the step's total valid tokens.
/// </summary>
/// <remarks>
/// Use: for each micro-batch call <see cref="Backward"/> with the summed loss and its token count; then
/// <see cref="Finish"/> (scales, optionally clips, and reports), then optimizer.step() and zero_grad().
/// </remarks>
public sealed class GradientAccumulator
{
    private readonly IReadOnlyList<Parameter> _parameters;
    private double _lossSum;
    private long _tokens;
    private int _microBatches;

    /// <param name="parameters">The trained parameters (deduplicated here).</param>
    /// <param name="maxGradNorm">Clip the total gradient 2-norm to this value; null disables clipping.</param>
    public GradientAccumulator(IEnumerable<Parameter> parameters, double? maxGradNorm = null)
    {
        _parameters = Optimizers.Deduplicate(parameters);
        if (maxGradNorm is <= 0) throw new ArgumentOutOfRangeException(nameof(maxGradNorm), maxGradNorm, "clip_grad_norm must be > 0");
        MaxGradNorm = maxGradNorm;
    }

    /// <summary>The clipping threshold, or null.</summary>
    public double? MaxGradNorm { get; }

    /// <summary>Micro-batches accumulated since the last <see cref="Finish"/>.</summary>
    public int MicroBatches => _microBatches;

    /// <summary>Valid tokens accumulated since the last <see cref="Finish"/>.</summary>
    public long Tokens => _tokens;

    /// <summary>Backpropagates one micro-batch's summed loss and counts its tokens.</summary>
    /// <param name="summedLoss">Scalar: the sum of per-token losses over the micro-batch's valid tokens.</param>
    /// <param name="validTokens">How many tokens that sum covers.</param>
    public void Backward(Tensor summedLoss, long validTokens)
    {
        ArgumentNullException.ThrowIfNull(summedLoss);
        if (summedLoss.numel() != 1)
            throw new ArgumentException($"the summed loss must be a scalar, got shape [{string.Join(", ", summedLoss.shape)}]", nameof(summedLoss));
        if (validTokens < 0) throw new ArgumentOutOfRangeException(nameof(validTokens), validTokens, "token count must be >= 0");
        summedLoss.backward();
        _lossSum += summedLoss.detach().to_type(ScalarType.Float64).item<double>();
        _tokens += validTokens;
        _microBatches++;
    }

    /// <summary>
    /// Divides every gradient by the step's total valid tokens, clips when configured, and resets the counters.
    /// </summary>
    /// <param name="computeNorm">Compute the gradient norm even when not clipping (for logging).</param>
    public AccumulatedStep Finish(bool computeNorm = true)
    {
        if (_microBatches == 0) throw new InvalidOperationException("Finish() called before any Backward()");
        if (_tokens == 0)
            throw new InvalidOperationException($"the step's {_microBatches} micro-batch(es) hold no valid tokens (all labels ignored)");
        ScaleGradients(_parameters, 1.0 / _tokens);
        var norm = double.NaN;
        if (MaxGradNorm is { } max) norm = ClipGradNorm(_parameters, max);
        else if (computeNorm) norm = GradNorm(_parameters);
        var result = new AccumulatedStep(_lossSum / _tokens, _tokens, norm);
        _lossSum = 0;
        _tokens = 0;
        _microBatches = 0;
        return result;
    }

    /// <summary>Multiplies every existing gradient in place by <paramref name="factor"/>.</summary>
    public static void ScaleGradients(IEnumerable<Parameter> parameters, double factor)
    {
        using var guard = no_grad();
        foreach (var p in Optimizers.Deduplicate(parameters))
        {
            var g = p.grad;
            if (g is not null) g.mul_(factor);
        }
    }

    /// <summary>Clips the total gradient 2-norm to <paramref name="maxNorm"/>; returns the norm before clipping.</summary>
    public static double ClipGradNorm(IEnumerable<Parameter> parameters, double maxNorm)
    {
        var withGrad = Optimizers.Deduplicate(parameters).Where(p => p.grad is not null).ToList();
        if (withGrad.Count == 0) return 0.0;
        return nn.utils.clip_grad_norm_(withGrad, maxNorm);
    }

    /// <summary>The total 2-norm of all gradients (square root of the sum of squares), computed in float64.</summary>
    public static double GradNorm(IEnumerable<Parameter> parameters)
    {
        using var scope = NewDisposeScope();
        var total = 0.0;
        foreach (var p in Optimizers.Deduplicate(parameters))
        {
            var g = p.grad;
            if (g is null) continue;
            total += g.to_type(ScalarType.Float64).square().sum().item<double>();
        }
        return Math.Sqrt(total);
    }
}

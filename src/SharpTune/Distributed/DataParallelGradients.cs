// Gradient accumulation for data-parallel training: the mpirun plug-in behind Training/IGradientSync, with the same
// contract as LocalGradientSync (backward on SUMMED micro-batch losses, one normalisation per optimizer step). At the end of a step
// the gradients of the trainable parameters are copied into ONE flat float32 host buffer, summed over ranks in place
// with a single all-reduce, divided by the GLOBAL number of valid tokens (itself all-reduced), clipped on the global
// 2-norm, and copied back. The result is the gradient of the mean per-token loss over the whole global batch, so N
// ranks reproduce one process's update on the same global batch. Logged losses are global token-weighted means, not
// one rank's last micro-batch (torchtune's distributed KD recipe logs rank 0's micro-batch and has no clipping).
// Each parameter also gets one "has a gradient" slot in the buffer: a parameter that got no gradient on any rank stays
// without one, exactly as in a one-process run (AdamW skips such parameters).
// GPU gradients are staged through the host buffer (Debian's Open MPI is built without CUDA support).
// References: torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), clamped to 1);
// torch DistributedDataParallel (gradient buckets all-reduced, then averaged).
using SharpTune.Modules;
using SharpTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Distributed;

/// <summary>
/// Accumulates summed micro-batch losses on each rank and, once per optimizer step, all-reduces the gradients through
/// one flat buffer and normalises them by the global valid-token count.
/// </summary>
/// <remarks>
/// Use: for each micro-batch of this rank's shard call <see cref="Backward"/>; then <see cref="Finish"/> on every rank
/// (collective), then optimizer.step() and zero_grad(). With one process it behaves as <see cref="LocalGradientSync"/>
/// (which recipes use then: it needs no host copy).
/// </remarks>
public sealed class DataParallelGradients : IGradientSync
{
    private readonly DistributedContext _context;
    private readonly IReadOnlyList<Parameter> _parameters;
    private readonly Tensor _buffer;  // [total + P]: gradients, then one flag per parameter
    private readonly Tensor[] _views; // per parameter: a 1-D view of its slice
    private readonly Tensor _flags;   // [P]
    private readonly long _total;
    private readonly StepTotals _totals = new();

    /// <param name="context">The process group (a one-process context works too).</param>
    /// <param name="parameters">The trained parameters, in the same order on every rank (deduplicated here).</param>
    /// <param name="maxGradNorm">Clip the global gradient 2-norm to this value; null disables clipping.</param>
    public DataParallelGradients(DistributedContext context, IEnumerable<Parameter> parameters, double? maxGradNorm = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
        _parameters = ModuleParameters.Deduplicate(parameters);
        if (_parameters.Count == 0) throw new ArgumentException("no parameters to synchronise (is every parameter frozen?)", nameof(parameters));
        if (maxGradNorm is <= 0) throw new ArgumentOutOfRangeException(nameof(maxGradNorm), maxGradNorm, "clip_grad_norm must be > 0");
        MaxGradNorm = maxGradNorm;
        _total = _parameters.Sum(p => p.numel());
        _buffer = zeros(_total + _parameters.Count, dtype: ScalarType.Float32);
        _views = new Tensor[_parameters.Count];
        long offset = 0;
        for (var i = 0; i < _parameters.Count; i++)
        {
            var n = _parameters[i].numel();
            _views[i] = _buffer.narrow(0, offset, n); // [n]
            offset += n;
        }
        _flags = _buffer.narrow(0, _total, _parameters.Count); // [P]
    }

    /// <summary>The clipping threshold, or null.</summary>
    public double? MaxGradNorm { get; }

    /// <summary>Elements in the flat buffer (all trainable parameters plus one flag each).</summary>
    public long BufferElements => _buffer.numel();

    /// <summary>Micro-batches accumulated on this rank since the last <see cref="Finish"/>.</summary>
    public int MicroBatches => _totals.MicroBatches;

    /// <summary>Valid tokens accumulated on this rank since the last <see cref="Finish"/>.</summary>
    public long LocalTokens => _totals.Tokens;

    /// <summary>Backpropagates one micro-batch's summed loss on this rank and counts its tokens.</summary>
    /// <param name="summedLoss">Scalar: the sum of per-token losses over the micro-batch's valid tokens.</param>
    /// <param name="validTokens">How many tokens that sum covers.</param>
    public void Backward(Tensor summedLoss, long validTokens) => _totals.Backward(summedLoss, validTokens);

    /// <summary>
    /// Collective: sums gradients, losses and token counts over all ranks, divides the gradients by the global token
    /// count, clips on the global norm when configured, and resets the counters. Every rank gets the same result.
    /// </summary>
    /// <param name="computeNorm">Compute the norm even when not clipping (for logging).</param>
    public AccumulatedStep Finish(bool computeNorm = true)
    {
        // Every rank must enter the collectives, even one with nothing accumulated; the check is on global figures.
        var local = _totals.Take();
        var sums = _context.AllReduceSum(local.LossSum, local.Tokens, local.MicroBatches);
        var (lossSum, tokens, microBatches) = (sums[0], (long)Math.Round(sums[1]), (long)Math.Round(sums[2]));
        StepTotals.Check(microBatches, tokens, $" over {_context.WorldSize} rank(s)");

        using var scope = NewDisposeScope();
        using var guard = no_grad();
        for (var i = 0; i < _parameters.Count; i++)
        {
            var g = _parameters[i].grad;
            if (g is null) _views[i].zero_();
            else _views[i].copy_(g.reshape(-1));
        }
        _flags.copy_(tensor(_parameters.Select(p => p.grad is null ? 0f : 1f).ToArray()));
        _context.AllReduceSum(_buffer);

        var grads = _buffer.narrow(0, 0, _total); // [total]
        using (var scale = (1.0 / tokens).ToScalar()) grads.mul_(scale); // disposed now, not left to the GC (Native/Scalars.cs)
        var norm = double.NaN;
        if (MaxGradNorm is not null || computeNorm) norm = GradientNorm.Of([grads]);
        if (MaxGradNorm is { } max)
        {
            using var clip = Math.Min(1.0, max / (norm + 1e-6)).ToScalar();
            grads.mul_(clip);
        }

        var present = _flags.data<float>().ToArray();
        for (var i = 0; i < _parameters.Count; i++)
        {
            if (present[i] == 0) continue; // no rank produced a gradient for it
            var p = _parameters[i];
            if (p.grad is null) p.grad = zeros_like(p); // the parameter keeps its own reference to the native tensor
            p.grad!.copy_(_views[i].view(p.shape));
        }
        return new AccumulatedStep(lossSum / tokens, tokens, norm);
    }

    /// <summary>Frees the flat buffer.</summary>
    public void Dispose()
    {
        foreach (var v in _views) v.Dispose();
        _flags.Dispose();
        _buffer.Dispose();
    }
}

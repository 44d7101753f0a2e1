// The engine behind the fused-linear losses: a TorchSharp custom autograd function whose forward walks the tokens in
// chunks, projects each chunk to logits, evaluates CE and the divergence with their closed-form logit gradients
// (DivergenceMath / SparseKlMath), and accumulates dL/dh = G W and dL/dW = G^T h. Backward only rescales the stored
// gradients by the incoming scalar gradient. Non-tensor settings travel in the FusedPlan object, not in static state:
// TorchSharp keeps one instance of each Function type.
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>Settings and detached results of one fused-linear loss call.</summary>
/// <remarks>Shapes: <c>n</c> tokens, <c>d</c> student hidden size, <c>v</c> vocabulary, <c>c</c> chunk tokens.</remarks>
internal sealed class FusedPlan(
    double ceWeight, double kdWeight, DivergenceOptions options, MissingMass missingMass, int chunkSize,
    long ignoreIndex, TeacherOutput? teacher)
{
    // 64M fp32 logits (~520 tokens at a 128k vocabulary): measured on CPU, smaller chunks re-read the output weights
    // so often that time grows (1,024 tokens: 130-token chunks 1.27x plain CPU time and 0.4 GB; 512-token chunks
    // 1.10x and 1.1 GB). The peak is independent of the token count; pass chunk_size to trade time for memory.
    private const long LogitsPerChunk = 1L << 26;

    public double CeWeight { get; } = ceWeight;
    public double KdWeight { get; } = kdWeight;
    public DivergenceOptions Options { get; } = options;
    public MissingMass MissingMass { get; } = missingMass;
    public long IgnoreIndex { get; } = ignoreIndex;
    public TeacherOutput? Teacher { get; } = teacher;
    /// <summary>False under no_grad (evaluation): the forward then skips the gradient work.</summary>
    public bool GradEnabled { get; set; } = true;
    public Tensor? ClassSum { get; set; }
    public Tensor? KdSum { get; set; }

    public long Rows(long vocab) => chunkSize > 0 ? chunkSize : Math.Max(1, LogitsPerChunk / Math.Max(vocab, 1));

    /// <summary>Checks inputs, runs the function, and packages the result.</summary>
    public static DistillationLoss Run(FusedPlan plan, Tensor hidden, Tensor weight, Tensor labels, bool normalize, string what)
    {
        if (weight.dim() != 2 || hidden.shape[^1] != weight.shape[1])
            throw new ArgumentException(
                $"{what}: hidden [{LossInputs.Shape(hidden)}] and output weight [{LossInputs.Shape(weight)}] do not match " +
                "(expected hidden [..., d] and weight [v, d])");
        var h = hidden.reshape(-1, hidden.shape[^1]);                      // [n, d]
        if (h.shape[0] != labels.numel())
            throw new ArgumentException($"{what}: {h.shape[0]} hidden rows but labels [{LossInputs.Shape(labels)}]");
        var flatLabels = labels.reshape(-1).to(ScalarType.Int64);          // [n]
        var vocab = weight.shape[0];
        if (plan.KdWeight > 0 && plan.Teacher is null) throw new ArgumentException($"{what}: kd_ratio > 0 needs a teacher");
        if (plan.Teacher is { } teacher)
        {
            if (teacher.Vocab is { } tv) LossInputs.SameVocab(vocab, tv, what);
            if (teacher.Tokens is { } tn && tn != h.shape[0])
                throw new ArgumentException($"{what}: teacher has {tn} token rows, student has {h.shape[0]}");
        }
        plan.GradEnabled = torch.is_grad_enabled();
        var sum = FusedLinearFunction.apply(h, weight, flatLabels, plan);
        var count = flatLabels.ne(Scalars.Of(plan.IgnoreIndex)).sum();
        var denominator = normalize ? count.clamp_min(Scalars.One).to(ScalarType.Float32) : torch.ones(1, ScalarType.Float32).squeeze();
        return new DistillationLoss(sum / denominator, plan.ClassSum! / denominator, plan.KdSum! / denominator, count);
    }
}

/// <summary>Custom autograd function: inputs (hidden [n, d], weight [v, d], labels [n], plan); output the weighted
/// loss sum (scalar).</summary>
internal sealed class FusedLinearFunction : autograd.SingleTensorFunction<FusedLinearFunction>
{
    public override string Name => nameof(FusedLinearFunction);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var labels = (Tensor)vars[2];
        var plan = (FusedPlan)vars[3];
        var n = hidden.shape[0];
        var d = hidden.shape[1];
        var v = weight.shape[0];
        var wantH = plan.GradEnabled && hidden.requires_grad;
        var wantW = plan.GradEnabled && weight.requires_grad;
        var gradH = wantH ? torch.zeros(n, d, ScalarType.Float32, hidden.device) : null;   // [n, d]
        var gradW = wantW ? torch.zeros(v, d, ScalarType.Float32, weight.device) : null;   // [v, d]
        var ceSum = torch.zeros(1, ScalarType.Float32, hidden.device).squeeze();
        var kdSum = torch.zeros(1, ScalarType.Float32, hidden.device).squeeze();
        Tensor? idx = null, lp = null;
        if (plan.Teacher?.Sparse is { } sparse) (idx, lp) = sparse.Flatten(n, v);
        var rows = plan.Rows(v);
        for (long start = 0; start < n; start += rows)
        {
            using var scope = torch.NewDisposeScope();
            var len = Math.Min(rows, n - start);
            var h = hidden.narrow(0, start, len);                                         // [c, d]
            var lab = labels.narrow(0, start, len);                                       // [c]
            var invalid = lab.eq(Scalars.Of(plan.IgnoreIndex));                          // [c]
            var s = h.matmul(weight.t()).to(ScalarType.Float32);                          // [c, v]
            var t = idx is null ? plan.Teacher?.ChunkLogits(start, len) : null;          // [c, v] dense teacher
            Tensor? grad;                                                                 // [c, v]
            if (t is not null && plan.Options.Temperature == 1 &&
                plan.Options.Kind is DivergenceKind.ForwardKl or DivergenceKind.ForwardKlCrossEntropy &&
                DivergenceMath.NonFiniteMask(s, t) is null)
            {
                grad = DivergenceMath.ForwardKlAndCrossEntropy(s, t, lab, invalid, plan.CeWeight, plan.KdWeight, plan.Options.Kind, ceSum, kdSum);
            }
            else
            {
                // Both parts are evaluated whenever they can be, so a recipe logs class and KD loss at any kd_ratio.
                var (ce, gCe) = DivergenceMath.CrossEntropyWithGrad(s, lab, plan.IgnoreIndex);
                ceSum.add_(ce.sum(), Scalars.One);
                grad = plan.CeWeight > 0 ? gCe.mul_(Scalars.Of(plan.CeWeight)) : null;
                if (plan.Teacher is not null)
                {
                    var (kd, g) = idx is not null
                        ? SparseKlMath.PerTokenWithGrad(s, idx.narrow(0, start, len), lp!.narrow(0, start, len),
                            plan.Options.Temperature, plan.MissingMass)
                        : DivergenceMath.PerTokenWithGrad(s, t!, plan.Options);
                    kdSum.add_(kd.masked_fill(invalid, Scalars.Of(0L)).sum(), Scalars.One);
                    if (plan.KdWeight > 0)
                    {
                        g.masked_fill_(invalid.unsqueeze(-1), Scalars.Of(0L)).mul_(Scalars.Of(plan.KdWeight));
                        grad = grad is null ? g : grad.add_(g, Scalars.One);
                    }
                }
            }
            if (grad is null || (plan.CeWeight == 0 && plan.KdWeight == 0)) continue;
            if (gradH is not null)
            {
                var gw = weight.dtype == ScalarType.Float32 ? grad : grad.to(weight.dtype);
                gradH.narrow(0, start, len).copy_(gw.matmul(weight));                     // [c, v] @ [v, d] -> [c, d]
            }
            gradW?.addmm_(grad.t(), h.to(ScalarType.Float32));                            // += [v, c] @ [c, d]
        }
        plan.ClassSum = ceSum;
        plan.KdSum = kdSum;
        ctx.save_for_backward([
            gradH is null ? null! : gradH.to(hidden.dtype),
            gradW is null ? null! : gradW.to(weight.dtype),
        ]);
        return (ceSum * Scalars.Of(plan.CeWeight)).add_(kdSum * Scalars.Of(plan.KdWeight), Scalars.One);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var scale = gradOutput.item<float>();
        return [Scale(saved[0], scale), Scale(saved[1], scale), null!, null!];
    }

    // The stored gradient itself when the incoming gradient is 1 (the common case): no second [v, d] buffer.
    private static Tensor Scale(Tensor? g, float scale)
    {
        if (g is null) return null!;
        if (scale == 1f) return g;
        using var s = scale.ToScalar();
        return g.mul(s);
    }
}

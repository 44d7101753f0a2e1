// Fused-linear losses: cross-entropy and distillation computed from the final hidden states and the output weight,
// chunk by chunk over tokens, so that neither the forward nor the backward ever holds [tokens, vocab] logits.
// The gradients with respect to the hidden states and the weight are computed in the forward pass from closed-form
// logit gradients (Liger-Kernel's fused linear cross-entropy / distillation approach) and handed back, scaled by the
// incoming gradient, from a custom autograd function.
// References: Hsu et al. 2024 "Liger Kernel" (fused linear CE, chunked distillation base); torchtune issue #2689
// (fused linear loss rejected for KD); TorchSharp torch.autograd.SingleTensorFunction.
using SharpTune.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>The teacher side of a fused distillation loss: hidden states and output weight, full logits, or top-k.</summary>
/// <remarks>Shapes: <c>n</c> tokens, <c>d_t</c> teacher hidden size, <c>v</c> vocabulary, <c>k</c> top-k.</remarks>
public sealed class TeacherOutput
{
    private readonly Tensor? _hidden;
    private readonly Tensor? _weight;
    private readonly Tensor? _logits;

    private TeacherOutput(Tensor? hidden, Tensor? weight, Tensor? logits, SparseTeacher? sparse)
    {
        _hidden = hidden;
        _weight = weight;
        _logits = logits;
        Sparse = sparse;
    }

    /// <summary>Teacher final hidden states [..., d_t] and output weight [v, d_t]: logits are projected per chunk.</summary>
    public static TeacherOutput FromLinear(Tensor hidden, Tensor weight)
    {
        if (hidden.shape[^1] != weight.shape[1])
            throw new ArgumentException(
                $"teacher hidden size {hidden.shape[^1]} != teacher output weight [{LossInputs.Shape(weight)}] columns");
        return new(hidden.detach().reshape(-1, hidden.shape[^1]), weight.detach(), null, null);
    }

    /// <summary>Full teacher logits [..., v].</summary>
    public static TeacherOutput FromLogits(Tensor logits) =>
        new(null, null, logits.detach().reshape(-1, logits.shape[^1]), null);

    /// <summary>A sparse top-k teacher (forward KL only).</summary>
    public static TeacherOutput FromSparse(SparseTeacher sparse) => new(null, null, null, sparse);

    internal SparseTeacher? Sparse { get; }

    internal long? Vocab => _weight?.shape[0] ?? _logits?.shape[^1];

    internal long? Tokens => _hidden?.shape[0] ?? _logits?.shape[0];

    internal Tensor ChunkLogits(long start, long length) => _logits is not null
        ? _logits.narrow(0, start, length).to(ScalarType.Float32)                                   // [c, v]
        : _hidden!.narrow(0, start, length).matmul(_weight!.t()).to(ScalarType.Float32);              // [c, d_t] @ [d_t, v]
}

/// <summary>Result of a fused distillation loss.</summary>
/// <param name="Loss">(1 - kd_ratio) * class + kd_ratio * kd, differentiable; a mean over valid tokens, or a sum when
/// not normalised.</param>
/// <param name="ClassLoss">Detached cross-entropy, normalised like <paramref name="Loss"/>.</param>
/// <param name="KdLoss">Detached distillation loss, normalised like <paramref name="Loss"/>.</param>
/// <param name="ValidCount">Number of valid tokens (int64 scalar).</param>
public sealed record DistillationLoss(Tensor Loss, Tensor ClassLoss, Tensor KdLoss, Tensor ValidCount);

/// <summary>
/// Cross-entropy plus distillation from the student's final hidden states [b, s, d] (or [n, d]) and output weight
/// [v, d], never materialising [tokens, v] logits in forward or backward. Peak extra memory is a few [chunk, v]
/// fp32 buffers, plus a [v, d] fp32 gradient when the weight is trainable.
/// </summary>
public sealed class FusedLinearDistillationLoss
{
    /// <param name="options">Divergence and temperature of the distillation term.</param>
    /// <param name="kdRatio">Weight of the distillation term; the class (CE) term gets 1 - kd_ratio.</param>
    /// <param name="chunkSize">Tokens per chunk; 0 picks about 64M logits per chunk (~523 tokens at v = 128,256).</param>
    /// <param name="ignoreIndex">Label value that marks a position without a target.</param>
    /// <param name="missingMass">Missing-mass handling for a sparse teacher.</param>
    public FusedLinearDistillationLoss(DivergenceOptions options, double kdRatio = 0.5, int chunkSize = 0,
        long ignoreIndex = -100, MissingMass missingMass = MissingMass.Zero)
    {
        if (kdRatio is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(kdRatio), kdRatio, "kd_ratio must be in [0, 1]");
        if (chunkSize < 0) throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "must be >= 0");
        Options = options.Validated();
        KdRatio = kdRatio;
        ChunkSize = chunkSize;
        IgnoreIndex = ignoreIndex;
        MissingMass = missingMass;
    }

    /// <summary>The distillation divergence.</summary>
    public DivergenceOptions Options { get; }

    /// <summary>Weight of the distillation term.</summary>
    public double KdRatio { get; }

    /// <summary>Tokens per chunk (0 = automatic).</summary>
    public int ChunkSize { get; }

    /// <summary>Label value that is masked out.</summary>
    public long IgnoreIndex { get; }

    /// <summary>Missing-mass handling for a sparse teacher.</summary>
    public MissingMass MissingMass { get; }

    /// <summary>Fused (1 - kd_ratio) * CE + kd_ratio * KD; divergences as in <see cref="KdLoss.Create"/>.</summary>
    [Component("sharptune.losses.FusedLinearKdLoss")]
    public static FusedLinearDistillationLoss Create(
        string divergence = "forward_kl", double kdRatio = 0.5, double temperature = 1.0, double symKdRatio = 0.5,
        double beta = 0.5, double skewAlpha = 0.1, int chunkSize = 0, string missingMass = "zero", long ignoreIndex = -100) =>
        new(new DivergenceOptions
        {
            Kind = DivergenceOptions.ParseKind(divergence), Temperature = temperature, SymKdRatio = symKdRatio,
            Beta = beta, SkewAlpha = skewAlpha,
        }, kdRatio, chunkSize, ignoreIndex, KdLoss.ParseMissingMass(missingMass));

    /// <summary>Convenience form of <see cref="Forward(Tensor, Tensor, TeacherOutput, Tensor, bool)"/> for a teacher
    /// given as final hidden states [..., d_t] and output weight [v, d_t].</summary>
    public DistillationLoss Forward(Tensor studentHidden, Tensor studentWeight, Tensor teacherHidden, Tensor teacherWeight,
        Tensor labels, bool normalize = true) =>
        Forward(studentHidden, studentWeight, TeacherOutput.FromLinear(teacherHidden, teacherWeight), labels, normalize);

    /// <summary>Computes the combined loss; <paramref name="normalize"/> false returns sums (divide by the step's
    /// total <see cref="DistillationLoss.ValidCount"/> once).</summary>
    public DistillationLoss Forward(Tensor studentHidden, Tensor studentWeight, TeacherOutput teacher, Tensor labels, bool normalize = true)
    {
        if (teacher.Sparse is not null && Options.Kind != DivergenceKind.ForwardKl)
            throw new NotSupportedException(
                $"{nameof(FusedLinearDistillationLoss)}: a sparse (top-k) teacher supports divergence forward_kl only, got {Options.Kind}");
        var plan = new FusedPlan(1 - KdRatio, KdRatio, Options, MissingMass, ChunkSize, IgnoreIndex, teacher);
        return FusedPlan.Run(plan, studentHidden, studentWeight, labels, normalize, nameof(FusedLinearDistillationLoss));
    }
}

/// <summary>
/// Cross-entropy from final hidden states [b, s, d] (or [n, d]) and output weight [v, d], chunk by chunk, never
/// holding [tokens, v] logits (torchtune's <c>LinearCrossEntropyLoss</c> idea, with a fused backward).
/// </summary>
public sealed class FusedLinearCrossEntropyLoss
{
    /// <param name="chunkSize">Tokens per chunk; 0 picks about 64M logits per chunk (~523 tokens at v = 128,256).</param>
    /// <param name="ignoreIndex">Label value that marks a position without a target.</param>
    public FusedLinearCrossEntropyLoss(int chunkSize = 0, long ignoreIndex = -100)
    {
        if (chunkSize < 0) throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "must be >= 0");
        ChunkSize = chunkSize;
        IgnoreIndex = ignoreIndex;
    }

    /// <summary>Tokens per chunk (0 = automatic).</summary>
    public int ChunkSize { get; }

    /// <summary>Label value that is masked out.</summary>
    public long IgnoreIndex { get; }

    /// <summary>Registered under torchtune's <c>LinearCrossEntropyLoss</c> name; <paramref name="numOutputChunks"/>
    /// is accepted for config compatibility and ignored (chunking here is by tokens, see <paramref name="chunkSize"/>).</summary>
    [Component("sharptune.modules.loss.LinearCrossEntropyLoss")]
    [Component("sharptune.losses.FusedLinearCrossEntropyLoss")]
    public static FusedLinearCrossEntropyLoss Create(int numOutputChunks = 8, int chunkSize = 0, long ignoreIndex = -100)
    {
        if (numOutputChunks < 1) throw new ArgumentOutOfRangeException(nameof(numOutputChunks), numOutputChunks, "must be >= 1");
        return new(chunkSize, ignoreIndex);
    }

    /// <summary>Mean cross-entropy over valid tokens.</summary>
    public Tensor Forward(Tensor hidden, Tensor weight, Tensor labels) => Sum(hidden, weight, labels).Mean();

    /// <summary>Sum over valid tokens and their count.</summary>
    public LossSum Sum(Tensor hidden, Tensor weight, Tensor labels)
    {
        var plan = new FusedPlan(1, 0, new DivergenceOptions(), MissingMass.Zero, ChunkSize, IgnoreIndex, null);
        var r = FusedPlan.Run(plan, hidden, weight, labels, normalize: false, nameof(FusedLinearCrossEntropyLoss));
        return new LossSum(r.Loss, r.ValidCount);
    }
}

// Knowledge-distillation losses over student and teacher logits, whole or in sequence chunks, registered under
// torchtune's names where torchtune has the loss (torchtune/modules/loss/kd_losses.py) and under ours otherwise.
// Chunked forms split labels with tensor_split exactly like the logits (torchtune's reverse/symmetric chunked losses
// use chunk() for labels and mismatch when seq_len % chunks != 0; this does not).
using SharpTune.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>
/// A distillation loss: the per-token divergence of <see cref="Options"/> between teacher and student next-token
/// distributions, averaged over tokens whose label is not <see cref="IgnoreIndex"/>. The teacher never receives a
/// gradient; numerics are fp32 whatever the logits' dtype.
/// </summary>
/// <remarks>Shapes: student and teacher logits [b, s, v] or chunks [b, s_i, v] or [n, v]; labels [b, s] or [n];
/// a sparse teacher [b, s, k].</remarks>
public sealed class KdLoss
{
    /// <param name="options">Divergence, temperature and its parameters.</param>
    /// <param name="numOutputChunks">How many sequence chunks the models should emit (0 = whole tensors).</param>
    /// <param name="ignoreIndex">Label value that marks a position without a target.</param>
    /// <param name="missingMass">How a sparse (top-k) teacher's missing mass is treated.</param>
    public KdLoss(DivergenceOptions options, int numOutputChunks = 0, long ignoreIndex = -100, MissingMass missingMass = MissingMass.Zero)
    {
        if (numOutputChunks < 0)
            throw new ArgumentOutOfRangeException(nameof(numOutputChunks), numOutputChunks, "must be >= 0");
        Options = options.Validated();
        NumOutputChunks = numOutputChunks;
        IgnoreIndex = ignoreIndex;
        MissingMass = missingMass;
    }

    /// <summary>The divergence measured.</summary>
    public DivergenceOptions Options { get; }

    /// <summary>Chunks the recipe should ask both models for (torchtune's <c>num_output_chunks</c>); 0 = unchunked.</summary>
    public int NumOutputChunks { get; }

    /// <summary>Label value that is masked out.</summary>
    public long IgnoreIndex { get; }

    /// <summary>Treatment of a sparse teacher's mass outside its top-k ids.</summary>
    public MissingMass MissingMass { get; }

    // ---- torchtune's names (value convention of torchtune: ForwardKL = cross-entropy H(p_T, p_S)) ----

    /// <summary>torchtune <c>ForwardKLLoss</c>: value is H(p_T, p_S) = KL(p_T||p_S) + H(p_T) (torchtune's convention).</summary>
    [Component("sharptune.modules.loss.ForwardKLLoss")]
    public static KdLoss TorchtuneForwardKl(long ignoreIndex = -100) =>
        new(new DivergenceOptions { Kind = DivergenceKind.ForwardKlCrossEntropy }, 0, ignoreIndex);

    /// <summary>torchtune <c>ForwardKLWithChunkedOutputLoss</c> (value H(p_T, p_S), as torchtune).</summary>
    [Component("sharptune.modules.loss.ForwardKLWithChunkedOutputLoss")]
    public static KdLoss TorchtuneForwardKlChunked(int numOutputChunks = 8, long ignoreIndex = -100) =>
        new(new DivergenceOptions { Kind = DivergenceKind.ForwardKlCrossEntropy }, numOutputChunks, ignoreIndex);

    /// <summary>torchtune <c>ReverseKLLoss</c>: KL(p_S||p_T).</summary>
    [Component("sharptune.modules.loss.ReverseKLLoss")]
    public static KdLoss TorchtuneReverseKl(long ignoreIndex = -100) =>
        new(new DivergenceOptions { Kind = DivergenceKind.ReverseKl }, 0, ignoreIndex);

    /// <summary>torchtune <c>ReverseKLWithChunkedOutputLoss</c>: KL(p_S||p_T) over chunks.</summary>
    [Component("sharptune.modules.loss.ReverseKLWithChunkedOutputLoss")]
    public static KdLoss TorchtuneReverseKlChunked(int numOutputChunks = 8, long ignoreIndex = -100) =>
        new(new DivergenceOptions { Kind = DivergenceKind.ReverseKl }, numOutputChunks, ignoreIndex);

    /// <summary>torchtune <c>SymmetricKLLoss</c>: r * forward + (1 - r) * reverse. Unlike torchtune, the forward part
    /// is the true KL, so the value is 0 at a perfect student (gradients are the same).</summary>
    [Component("sharptune.modules.loss.SymmetricKLLoss")]
    public static KdLoss TorchtuneSymmetricKl(double symKdRatio = 0.5, long ignoreIndex = -100) =>
        new(new DivergenceOptions { Kind = DivergenceKind.SymmetricKl, SymKdRatio = symKdRatio }, 0, ignoreIndex);

    /// <summary>torchtune <c>SymmetricKLWithChunkedOutputLoss</c> (forward part is the true KL, see above).</summary>
    [Component("sharptune.modules.loss.SymmetricKLWithChunkedOutputLoss")]
    public static KdLoss TorchtuneSymmetricKlChunked(int numOutputChunks = 8, double symKdRatio = 0.5, long ignoreIndex = -100) =>
        new(new DivergenceOptions { Kind = DivergenceKind.SymmetricKl, SymKdRatio = symKdRatio }, numOutputChunks, ignoreIndex);

    // ---- ours ----

    /// <summary>Any divergence by name (<c>forward_kl</c> = true KL, <c>forward_kl_ce</c> = torchtune's value,
    /// <c>reverse_kl</c>, <c>symmetric_kl</c>, <c>jsd</c>, <c>skew_forward_kl</c>, <c>skew_reverse_kl</c>, <c>tvd</c>),
    /// with temperature; <c>missing_mass</c> (<c>zero</c>/<c>tail</c>) applies to a sparse teacher.</summary>
    [Component("sharptune.losses.KdLoss")]
    public static KdLoss Create(
        string divergence = "forward_kl", double temperature = 1.0, int numOutputChunks = 8, double symKdRatio = 0.5,
        double beta = 0.5, double skewAlpha = 0.1, string missingMass = "zero", long ignoreIndex = -100) =>
        new(new DivergenceOptions
        {
            Kind = DivergenceOptions.ParseKind(divergence), Temperature = temperature, SymKdRatio = symKdRatio,
            Beta = beta, SkewAlpha = skewAlpha,
        }, numOutputChunks, ignoreIndex, ParseMissingMass(missingMass));

    /// <summary>True forward KL(p_T||p_S) with temperature (0 at a perfect student).</summary>
    [Component("sharptune.losses.ForwardKLDivergenceLoss")]
    public static KdLoss ForwardKl(double temperature = 1.0, int numOutputChunks = 8, long ignoreIndex = -100) =>
        Create("forward_kl", temperature, numOutputChunks, ignoreIndex: ignoreIndex);

    /// <summary>Generalized JSD with teacher weight <paramref name="beta"/> (TRL/GKD).</summary>
    [Component("sharptune.losses.JSDLoss")]
    public static KdLoss Jsd(double beta = 0.5, double temperature = 1.0, int numOutputChunks = 8, long ignoreIndex = -100) =>
        Create("jsd", temperature, numOutputChunks, beta: beta, ignoreIndex: ignoreIndex);

    /// <summary>Skew forward KL (DistiLLM) with <paramref name="skewAlpha"/>.</summary>
    [Component("sharptune.losses.SkewKLLoss")]
    public static KdLoss SkewKl(double skewAlpha = 0.1, double temperature = 1.0, int numOutputChunks = 8, long ignoreIndex = -100) =>
        Create("skew_forward_kl", temperature, numOutputChunks, skewAlpha: skewAlpha, ignoreIndex: ignoreIndex);

    /// <summary>Skew reverse KL (DistiLLM) with <paramref name="skewAlpha"/>.</summary>
    [Component("sharptune.losses.SkewReverseKLLoss")]
    public static KdLoss SkewReverseKl(double skewAlpha = 0.1, double temperature = 1.0, int numOutputChunks = 8, long ignoreIndex = -100) =>
        Create("skew_reverse_kl", temperature, numOutputChunks, skewAlpha: skewAlpha, ignoreIndex: ignoreIndex);

    /// <summary>Total variation distance.</summary>
    [Component("sharptune.losses.TVDLoss")]
    public static KdLoss Tvd(double temperature = 1.0, int numOutputChunks = 8, long ignoreIndex = -100) =>
        Create("tvd", temperature, numOutputChunks, ignoreIndex: ignoreIndex);

    // ---- computation ----

    /// <summary>Mean divergence over valid tokens of whole logits.</summary>
    public Tensor Forward(Tensor studentLogits, Tensor teacherLogits, Tensor labels) =>
        Sum(studentLogits, teacherLogits, labels).Mean();

    /// <summary>Mean divergence over valid tokens of logits given as matching sequence chunks.</summary>
    public Tensor Forward(IReadOnlyList<Tensor> studentChunks, IReadOnlyList<Tensor> teacherChunks, Tensor labels) =>
        Sum(studentChunks, teacherChunks, labels).Mean();

    /// <summary>Mean forward KL over valid tokens from a sparse (top-k) teacher.</summary>
    public Tensor Forward(Tensor studentLogits, SparseTeacher teacher, Tensor labels) =>
        Sum(studentLogits, teacher, labels).Mean();

    /// <summary>Sum over valid tokens and their count, whole logits.</summary>
    public LossSum Sum(Tensor studentLogits, Tensor teacherLogits, Tensor labels)
    {
        var (s, flatLabels) = LossInputs.Flatten(studentLogits, labels, nameof(KdLoss));
        LossInputs.SameVocab(studentLogits.shape[^1], teacherLogits.shape[^1], nameof(KdLoss));
        if (!teacherLogits.shape.SequenceEqual(studentLogits.shape))
            throw new ArgumentException(
                $"{nameof(KdLoss)}: teacher logits [{LossInputs.Shape(teacherLogits)}] != student logits [{LossInputs.Shape(studentLogits)}]");
        // Intermediates are released as soon as the sum exists; autograd keeps only what backward needs.
        using var scope = torch.NewDisposeScope();
        var t = teacherLogits.detach().reshape(s.shape).to(ScalarType.Float32);
        var invalid = flatLabels.eq(IgnoreIndex);                                          // [n]
        var perToken = DivergenceMath.PerToken(s, t, Options).masked_fill(invalid, 0);    // [n]
        return new LossSum(perToken.sum().MoveToOuterDisposeScope(), invalid.logical_not().sum().MoveToOuterDisposeScope());
    }

    /// <summary>Sum over valid tokens and their count, from matching sequence chunks of both models.</summary>
    public LossSum Sum(IReadOnlyList<Tensor> studentChunks, IReadOnlyList<Tensor> teacherChunks, Tensor labels)
    {
        if (studentChunks.Count != teacherChunks.Count)
            throw new ArgumentException(
                $"{nameof(KdLoss)}: {studentChunks.Count} student chunks but {teacherChunks.Count} teacher chunks");
        var pieces = LossInputs.SplitLabels(labels, studentChunks, nameof(KdLoss));
        Tensor? total = null;
        for (var i = 0; i < pieces.Length; i++)
        {
            var part = Sum(studentChunks[i], teacherChunks[i], pieces[i]).Sum;
            total = total is null ? part : total + part;
        }
        return new LossSum(total!, labels.ne(IgnoreIndex).sum());
    }

    /// <summary>Sum over valid tokens and their count of forward KL from a sparse teacher (requires
    /// <see cref="DivergenceKind.ForwardKl"/>); the teacher's log-probs are used as given, the student is scaled by T.</summary>
    public LossSum Sum(Tensor studentLogits, SparseTeacher teacher, Tensor labels)
    {
        RequireSparseCompatible();
        using var scope = torch.NewDisposeScope();
        var (s, flatLabels) = LossInputs.Flatten(studentLogits, labels, nameof(KdLoss));
        var (idx, lp) = teacher.Flatten(s.shape[0], s.shape[1]);
        var invalid = flatLabels.eq(IgnoreIndex);
        var perToken = SparseKlMath.PerToken(s, idx, lp, Options.Temperature, MissingMass).masked_fill(invalid, 0);
        return new LossSum(perToken.sum().MoveToOuterDisposeScope(), invalid.logical_not().sum().MoveToOuterDisposeScope());
    }

    internal void RequireSparseCompatible()
    {
        if (Options.Kind != DivergenceKind.ForwardKl)
            throw new NotSupportedException(
                $"{nameof(KdLoss)}: a sparse (top-k) teacher supports divergence forward_kl only, got {Options.Kind}");
    }

    internal static MissingMass ParseMissingMass(string name) => name.Trim().ToLowerInvariant() switch
    {
        "zero" => MissingMass.Zero,
        "tail" => MissingMass.Tail,
        _ => throw new ArgumentException($"unknown missing_mass '{name}'; expected zero or tail", nameof(name)),
    };
}

// The class loss and the KD loss of a distillation step over the same student logits, in one pass where the math
// allows it. The recipe's weighted sum (1 - r) * CE + r * KD over chunked logits, written as two autograd losses,
// takes the student log_softmax twice forward and backward and keeps three [c, v] buffers per chunk for backward.
// For forward KL at temperature 1 (torchtune's configs) both terms and their combined logit gradient follow in
// closed form from one student softmax (DivergenceMath.ForwardKlAndCrossEntropy in Divergence.cs, which the
// fused-linear loss calls too), computed without a graph; the gradient G, one [c, v] buffer per chunk, is handed to
// autograd through the surrogate sum(s * G) - its detached copy, whose value is exactly 0 and whose gradient is G.
// (A TorchSharp custom autograd function did the same but kept G alive until a .NET GC finalised the tensor wrappers
// its backward creates: RSS grew 0.4-0.7 GiB per KD benchmark step between collections.) Any other divergence,
// temperature, or a chunk with non-finite logits takes the two plain losses, so results never depend on the path.
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>Weighted class + KD loss sums of one micro-batch, and each term on its own (for logging).</summary>
/// <param name="Weighted">(1 - kd_ratio) * class sum + kd_ratio * KD sum; carries the graph.</param>
/// <param name="Class">Cross-entropy sum over valid tokens and their count (the sum is for logging).</param>
/// <param name="Kd">KD sum over valid tokens and their count (the sum is for logging).</param>
public readonly record struct ClassAndKdSum(Tensor Weighted, LossSum Class, LossSum Kd)
{
    /// <summary>
    /// Sums <paramref name="classLoss"/> and <paramref name="kdLoss"/> over matching chunks of student and teacher
    /// logits (one chunk each for whole logits), weighted by <paramref name="kdRatio"/>. Values and gradients equal
    /// <c>(1 - r) * classLoss.Sum(...) + r * kdLoss.Sum(...)</c> to float rounding.
    /// </summary>
    /// <remarks>Shapes: chunks [b, s_i, v] (or [n_i, v]); labels [b, s] (or [n]), split like the chunks.</remarks>
    public static ClassAndKdSum Compute(
        CrossEntropyLoss classLoss, KdLoss kdLoss, double kdRatio,
        IReadOnlyList<Tensor> studentChunks, IReadOnlyList<Tensor> teacherChunks, Tensor labels)
    {
        if (studentChunks.Count != teacherChunks.Count)
            throw new ArgumentException(
                $"{nameof(ClassAndKdSum)}: {studentChunks.Count} student chunks but {teacherChunks.Count} teacher chunks");
        if (kdRatio is < 0 or > 1 || double.IsNaN(kdRatio))
            throw new ArgumentOutOfRangeException(nameof(kdRatio), kdRatio, "kd_ratio must be in [0, 1]");
        var pieces = studentChunks.Count == 1 ? [labels] : LossInputs.SplitLabels(labels, studentChunks, nameof(ClassAndKdSum));
        var closedForm = kdLoss.Options.Temperature == 1 && classLoss.IgnoreIndex == kdLoss.IgnoreIndex &&
                         kdLoss.Options.Kind is DivergenceKind.ForwardKl or DivergenceKind.ForwardKlCrossEntropy;
        Tensor? weighted = null, classSum = null, kdSum = null;
        for (var i = 0; i < pieces.Length; i++)
        {
            Tensor w, c, k;
            if (closedForm && OneChunk(studentChunks[i], teacherChunks[i], pieces[i], kdLoss, kdRatio) is { } fast)
            {
                (w, c, k) = fast;
            }
            else
            {
                var cls = classLoss.Sum(studentChunks[i], pieces[i]).Sum;
                var kd = kdLoss.Sum(studentChunks[i], teacherChunks[i], pieces[i]).Sum;
                (w, c, k) = ((1 - kdRatio) * cls + kdRatio * kd, cls.detach(), kd.detach());
            }
            weighted = weighted is null ? w : weighted.Plus(w);
            classSum = classSum is null ? c : classSum.Plus(c);
            kdSum = kdSum is null ? k : kdSum.Plus(k);
        }
        var count = labels.ne(Scalars.Of(classLoss.IgnoreIndex)).sum();
        return new ClassAndKdSum(weighted!, new LossSum(classSum!, count), new LossSum(kdSum!, count));
    }

    // One chunk through the closed-form function, or null when its logits are not all finite.
    private static (Tensor Weighted, Tensor Class, Tensor Kd)? OneChunk(Tensor s, Tensor t, Tensor labels, KdLoss kdLoss, double kdRatio)
    {
        LossInputs.SameVocab(s.shape[^1], t.shape[^1], nameof(ClassAndKdSum));
        if (!t.shape.SequenceEqual(s.shape))
            throw new ArgumentException(
                $"{nameof(ClassAndKdSum)}: teacher logits [{LossInputs.Shape(t)}] != student logits [{LossInputs.Shape(s)}]");
        if (DivergenceMath.NonFiniteMask(s.detach(), t.detach()) is { } mask)
        {
            mask.Dispose();
            return null;
        }
        var (ceWeight, kdWeight) = (1 - kdRatio, kdRatio);
        Tensor grad, value, classSum, kdSum;
        using (no_grad())
        using (var scope = NewDisposeScope()) // the softmax buffers die here, not at the end of the caller's step
        {
            var (flat, lab) = LossInputs.Flatten(s.detach(), labels, nameof(ClassAndKdSum));      // [n, v], [n]
            var teacher = t.detach().reshape(flat.shape).to(ScalarType.Float32);                   // [n, v]
            var invalid = lab.eq(Scalars.Of(kdLoss.IgnoreIndex));                                              // [n]
            classSum = zeros(1, ScalarType.Float32, flat.device).squeeze();
            kdSum = zeros(1, ScalarType.Float32, flat.device).squeeze();
            grad = DivergenceMath.ForwardKlAndCrossEntropy(flat, teacher, lab, invalid, ceWeight, kdWeight, kdLoss.Options.Kind, classSum, kdSum)
                .reshape(s.shape).to(s.dtype);                                                     // dLoss/ds, [..., v]
            value = (classSum * Scalars.Of(ceWeight)).Plus(kdSum * Scalars.Of(kdWeight));
            scope.MoveToOuter(grad, value, classSum, kdSum);
        }
        Tensor surrogate;
        using (var product = s * grad) surrogate = product.sum(); // gradient wrt s: grad (autograd saves grad, not s)
        var weighted = value.Plus(surrogate - surrogate.detach()); // value exactly; the graph carries grad
        return (weighted, classSum, kdSum);
    }
}

// The un-normalised form of every loss, so a recipe can add micro-batches up and divide once by the valid tokens of
// the whole optimizer step (torchtune's lora_finetune convention), plus the input checks the losses share.
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>A loss summed over valid tokens, and the number of valid tokens (labels != ignore_index).</summary>
/// <param name="Sum">Scalar fp32 sum over valid tokens; carries the graph.</param>
/// <param name="Count">Scalar int64 count of valid tokens.</param>
public readonly record struct LossSum(Tensor Sum, Tensor Count)
{
    /// <summary>Sum / Count, and 0 (not NaN) when there is no valid token.</summary>
    public Tensor Mean() => Sum / Count.clamp_min(1).to(ScalarType.Float32);
}

/// <summary>Shape checks and flattening shared by the losses.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>n</c> = b*s tokens, <c>v</c> vocabulary.</remarks>
internal static class LossInputs
{
    /// <summary>Logits [..., v] -> fp32 [n, v]; labels [...] -> int64 [n]; throws naming both shapes on mismatch.</summary>
    public static (Tensor Logits, Tensor Labels) Flatten(Tensor logits, Tensor labels, string what)
    {
        var v = logits.shape[^1];
        if (logits.numel() != labels.numel() * v)
            throw new ArgumentException(
                $"{what}: logits [{Shape(logits)}] do not match labels [{Shape(labels)}] (expected logits [{Shape(labels)}, v])");
        return (logits.reshape(-1, v).to(ScalarType.Float32), labels.reshape(-1).to(ScalarType.Int64));
    }

    /// <summary>Checks that teacher and student logits have the same vocabulary; the message names both sizes.</summary>
    public static void SameVocab(long studentVocab, long teacherVocab, string what)
    {
        if (studentVocab != teacherVocab)
            throw new ArgumentException(
                $"{what}: student vocabulary {studentVocab} != teacher vocabulary {teacherVocab}; align the teacher first " +
                $"with {nameof(VocabAlignment)}.{nameof(VocabAlignment.TruncateTeacher)} when its extra ids are padding");
    }

    /// <summary>Splits labels [b, s] (or [n]) along the sequence with tensor_split so that piece i matches
    /// <paramref name="chunks"/>[i] [b, s_i, v] (or [n_i, v]), as the model's chunked output does.</summary>
    public static Tensor[] SplitLabels(Tensor labels, IReadOnlyList<Tensor> chunks, string what)
    {
        if (chunks.Count == 0) throw new ArgumentException($"{what}: no logit chunks given");
        var dim = labels.dim() - 1;
        var pieces = labels.tensor_split(chunks.Count, dim);
        for (var i = 0; i < chunks.Count; i++)
        {
            var expected = pieces[i].shape;
            var got = chunks[i].shape[..^1];
            if (!expected.SequenceEqual(got))
                throw new ArgumentException(
                    $"{what}: chunk {i} of {chunks.Count} has logits [{Shape(chunks[i])}] but tensor_split of labels " +
                    $"[{Shape(labels)}] gives [{string.Join(", ", expected)}]; chunk the sequence with tensor_split");
        }
        return pieces;
    }

    public static string Shape(Tensor t) => string.Join(", ", t.shape);
}

// Teacher/student vocabulary alignment. Model families pad the output layer beyond the tokenizer for matmul
// efficiency (Qwen2.5 7B/14B: 152,064 rows; 3B/1.5B/0.5B: 151,936; the tokenizer emits 151,665 ids), so a teacher can
// have more logits than its student while sharing every real token. Those extra logits are dropped after checking
// that no real token lives there; anything else is a real mismatch and an error (torchtune issues #2119, #2416).
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>Checks and truncates a teacher vocabulary padded beyond the student's.</summary>
public static class VocabAlignment
{
    /// <summary>
    /// Verifies that a teacher of <paramref name="teacherVocab"/> logits can distil into a student of
    /// <paramref name="studentVocab"/>: equal sizes, or a larger teacher whose ids in [studentVocab, teacherVocab) are
    /// all padding (<paramref name="isRealToken"/> false). Returns the shared size (the student's).
    /// </summary>
    /// <exception cref="ArgumentException">The sizes differ in a way truncation cannot fix; names both sizes.</exception>
    public static long SharedVocab(long studentVocab, long teacherVocab, Func<long, bool> isRealToken)
    {
        if (teacherVocab == studentVocab) return studentVocab;
        if (teacherVocab < studentVocab)
            throw new ArgumentException(
                $"vocabulary mismatch: teacher has {teacherVocab} logits but student has {studentVocab}; the teacher must " +
                "cover every student id (same tokenizer, possibly padded)");
        for (var id = studentVocab; id < teacherVocab; id++)
            if (isRealToken(id))
                throw new ArgumentException(
                    $"vocabulary mismatch: teacher has {teacherVocab} logits, student has {studentVocab}, and teacher id " +
                    $"{id} (beyond the student's vocabulary) is a real token, so the extra ids are not padding");
        return studentVocab;
    }

    /// <summary>As <see cref="SharedVocab(long, long, Func{long, bool})"/>, where a real token is any id the shared
    /// tokenizer can emit (id &lt; <paramref name="tokenizerVocab"/>, the tokenizer's vocabulary size).</summary>
    public static long SharedVocab(long studentVocab, long teacherVocab, long tokenizerVocab)
    {
        if (tokenizerVocab > studentVocab)
            throw new ArgumentException(
                $"vocabulary mismatch: the tokenizer emits {tokenizerVocab} ids but the student has only " +
                $"{studentVocab} logits (teacher {teacherVocab})");
        return SharedVocab(studentVocab, teacherVocab, id => id < tokenizerVocab);
    }

    /// <summary>Teacher logits [..., v_t] (or an output weight [v_t, d_t]: pass <paramref name="dim"/> 0) cut to the
    /// student's <paramref name="studentVocab"/> after <see cref="SharedVocab(long, long, Func{long, bool})"/>
    /// succeeds. Returns a view; the input itself when the sizes already match.</summary>
    public static Tensor TruncateTeacher(Tensor teacher, long studentVocab, Func<long, bool> isRealToken, int dim = -1)
    {
        var size = teacher.shape[dim < 0 ? teacher.dim() + dim : dim];
        var shared = SharedVocab(studentVocab, size, isRealToken);
        return shared == size ? teacher : teacher.narrow(dim, 0, shared);
    }

    /// <summary><see cref="TruncateTeacher(Tensor, long, Func{long, bool}, int)"/> with the ids below the shared
    /// tokenizer's vocabulary size <paramref name="tokenizerVocab"/> as the real tokens.</summary>
    public static Tensor TruncateTeacher(Tensor teacher, long studentVocab, long tokenizerVocab, int dim = -1)
    {
        var size = teacher.shape[dim < 0 ? teacher.dim() + dim : dim];
        var shared = SharedVocab(studentVocab, size, tokenizerVocab);
        return shared == size ? teacher : teacher.narrow(dim, 0, shared);
    }
}

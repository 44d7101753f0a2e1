// Alignment of two tokenizations of one text: the text is cut wherever both tokenizations have a token boundary, and
// each piece (a span) is covered by a group of consecutive teacher tokens and a group of consecutive student tokens.
// The walk is TRL's (trl/experimental/gold/gold_trainer.py ULDLoss._align_by_byte_offsets): advance the side whose
// current token ends first; when both current tokens end at the same byte, close a span. Tokens left over on either
// side when the other runs out form one last span (one of its groups may then be empty; the losses skip such spans).
// A zero-width token (a special token) joins the span of the tokens after it, unless both sides end there.
namespace SharpTune.Distillation.CrossTokenizer;

/// <summary>A span of text and the teacher and student tokens that cover it.</summary>
/// <param name="ByteStart">First byte of the span.</param>
/// <param name="ByteEnd">One past its last byte.</param>
/// <param name="TeacherStart">Index of the first teacher token of the span.</param>
/// <param name="TeacherCount">Number of teacher tokens (0 only in a last, left-over span).</param>
/// <param name="StudentStart">Index of the first student token.</param>
/// <param name="StudentCount">Number of student tokens (0 only in a last, left-over span).</param>
public readonly record struct AlignedSpan(int ByteStart, int ByteEnd, int TeacherStart, int TeacherCount, int StudentStart, int StudentCount)
{
    /// <summary>True when both sides have tokens (the losses use only these spans).</summary>
    public bool IsPaired => TeacherCount > 0 && StudentCount > 0;
}

/// <summary>Aligns two tokenizations by their byte offsets.</summary>
public static class SpanAlignment
{
    /// <summary>The spans where <paramref name="teacher"/> and <paramref name="student"/> (offsets into the same
    /// text, <see cref="TokenOffsets.Compute"/>) both have a boundary, in text order.</summary>
    /// <exception cref="ArgumentException">Offsets that go backwards or have End &lt; Start; names the side and token.</exception>
    public static AlignedSpan[] Align(IReadOnlyList<TokenOffset> teacher, IReadOnlyList<TokenOffset> student)
    {
        CheckMonotone(teacher, nameof(teacher));
        CheckMonotone(student, nameof(student));
        var spans = new List<AlignedSpan>();
        int t = 0, s = 0, tStart = 0, sStart = 0, byteStart = 0;
        while (t < teacher.Count && s < student.Count)
        {
            var tEnd = teacher[t].End;
            var sEnd = student[s].End;
            if (tEnd < sEnd) { t++; continue; }
            if (sEnd < tEnd) { s++; continue; }
            t++;
            s++;
            spans.Add(new AlignedSpan(byteStart, tEnd, tStart, t - tStart, sStart, s - sStart));
            (tStart, sStart, byteStart) = (t, s, tEnd);
        }
        if (t < teacher.Count || s < student.Count)
        {
            var end = Math.Max(teacher.Count > 0 ? teacher[^1].End : 0, student.Count > 0 ? student[^1].End : 0);
            spans.Add(new AlignedSpan(byteStart, Math.Max(byteStart, end), tStart, teacher.Count - tStart, sStart, student.Count - sStart));
        }
        return [.. spans];
    }

    private static void CheckMonotone(IReadOnlyList<TokenOffset> offsets, string side)
    {
        ArgumentNullException.ThrowIfNull(offsets, side);
        for (var i = 0; i < offsets.Count; i++)
        {
            if (offsets[i].End < offsets[i].Start || offsets[i].Start < 0)
                throw new ArgumentException($"{side} token {i} has offsets [{offsets[i].Start}, {offsets[i].End}): end before start", side);
            if (i > 0 && (offsets[i].Start < offsets[i - 1].End))
                throw new ArgumentException(
                    $"{side} token {i} starts at byte {offsets[i].Start}, before token {i - 1} ends ({offsets[i - 1].End}); offsets must go forward", side);
        }
    }
}

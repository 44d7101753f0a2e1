// The teacher's own tokenization of a student sequence, and the spans that align the two. The training data is
// tokenized by the student's tokenizer (a text stream is cut into windows of student tokens), so the honest way to let
// the teacher read the same text is to turn the student's tokens back into text and let the teacher tokenize that:
// - the sequence is cut at special tokens into runs of text tokens; a student BOS/EOS becomes the teacher's BOS/EOS,
//   another special token (a sampled pad included) the teacher's special of the same string, and one the teacher
//   lacks is left out;
// - a window can start or end inside a multi-byte character (a byte-level student cut mid-character): the tokens
//   holding the cut character's bytes are left out, so the text is valid UTF-8 and spells only what the window holds;
// - a SentencePiece student's leading dummy-prefix space is dropped (its decoder does the same), and TokenOffsets
//   gives that space no width;
// - the teacher encodes each run without BOS/EOS; both tokenizations are placed in the run's text (TokenOffsets) and
//   aligned (SpanAlignment). A window cut mid-word gives the teacher the same partial word the student sees.
// - a run that is not valid UTF-8, or holds characters the teacher cannot spell (a sampled student sequence can hold
//   any bytes: on-policy distillation trains on them), is split: the tokens holding the offending bytes are left out
//   and the text around them is read by the teacher as separate runs, one after the other (so the teacher's context
//   lacks what was left out);
// Student tokens that end up in no span (cut characters, invalid bytes, characters the teacher cannot spell, unknown
// pieces, specials without a counterpart) get no distillation signal; they are counted so the recipe can report the
// coverage.
using System.Buffers;
using System.Text;
using SharpTune.Tokenizers;

namespace SharpTune.Distillation.CrossTokenizer;

/// <summary>A student sequence tokenized by the teacher, with the spans aligning the two.</summary>
/// <param name="TeacherIds">The teacher's ids for the same text.</param>
/// <param name="Spans">Spans with tokens on both sides, as indices into the student sequence and
/// <paramref name="TeacherIds"/>; byte offsets count the UTF-8 bytes of the runs' texts one after the other.</param>
/// <param name="UnalignedStudentTokens">Student tokens in no span.</param>
/// <param name="Problem">Why a run could not be aligned (the first such run), or null.</param>
public sealed record RetokenizedSequence(int[] TeacherIds, AlignedSpan[] Spans, int UnalignedStudentTokens, string? Problem);

/// <summary>Re-tokenizes student sequences with the teacher's tokenizer.</summary>
public sealed class TeacherRetokenizer
{
    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private readonly ITokenizer _teacher;
    private readonly ITokenPieces _studentPieces, _teacherPieces;
    private readonly Dictionary<int, int> _specials = [];
    private readonly Dictionary<Rune, bool> _spellable = []; // characters the teacher can encode and spell, as far as asked

    /// <param name="student">The student's tokenizer (it must implement <see cref="ITokenPieces"/>).</param>
    /// <param name="teacher">The teacher's tokenizer (likewise).</param>
    /// <exception cref="ArgumentException">A tokenizer that cannot say what its ids spell.</exception>
    public TeacherRetokenizer(ITokenizer student, ITokenizer teacher)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        _teacher = teacher;
        _studentPieces = Pieces(student, nameof(student));
        _teacherPieces = Pieces(teacher, nameof(teacher));
        var teacherSpecials = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var id = 0; id < _teacherPieces.VocabSize; id++)
            if (_teacherPieces.PieceOf(id) is { Kind: TokenPieceKind.Special } p) teacherSpecials.TryAdd(p.Name, id);
        for (var id = 0; id < _studentPieces.VocabSize; id++)
        {
            // A pad id inside a sequence is a token too (a student sampling on-policy can write it): it maps by name.
            if (_studentPieces.PieceOf(id) is not { Kind: TokenPieceKind.Special } p) continue;
            if (id == student.BosId) { if (teacher.BosId >= 0) _specials[id] = teacher.BosId; }
            else if (id == student.EosId) _specials[id] = teacher.EosId;
            else if (teacherSpecials.TryGetValue(p.Name, out var t)) _specials[id] = t;
        }
    }

    /// <summary>The teacher's tokenization of the text of <paramref name="studentIds"/> and the aligned spans.</summary>
    public RetokenizedSequence Retokenize(IReadOnlyList<int> studentIds)
    {
        ArgumentNullException.ThrowIfNull(studentIds);
        var teacherIds = new List<int>();
        var spans = new List<AlignedSpan>();
        var unaligned = 0;
        var bytesSoFar = 0;
        string? problem = null;
        for (var i = 0; i < studentIds.Count;)
        {
            if (IsText(studentIds[i]))
            {
                var j = i;
                while (j < studentIds.Count && IsText(studentIds[j])) j++;
                unaligned += Run(studentIds, i, j, teacherIds, spans, ref bytesSoFar, ref problem);
                i = j;
                continue;
            }
            if (_specials.TryGetValue(studentIds[i], out var t))
            {
                spans.Add(new AlignedSpan(bytesSoFar, bytesSoFar, teacherIds.Count, 1, i, 1));
                teacherIds.Add(t);
            }
            else unaligned++;
            i++;
        }
        return new RetokenizedSequence([.. teacherIds], [.. spans], unaligned, problem);
    }

    private bool IsText(int id) =>
        (uint)id < (uint)_studentPieces.VocabSize && _studentPieces.PieceOf(id).Kind is TokenPieceKind.Text or TokenPieceKind.ByteFallback;

    // Student tokens [from, to) hold text only. Appends the teacher's tokens and the paired spans; returns how many of
    // the run's student tokens are in no span. A run that fails as a whole is split at its offending tokens (once:
    // a part that fails again is left out). A SentencePiece student's leading space is its dummy prefix only at the
    // start of a run of the sequence, not at the start of a part after a split.
    private int Run(IReadOnlyList<int> ids, int from, int to, List<int> teacherIds, List<AlignedSpan> spans, ref int bytesSoFar,
        ref string? problem, bool split = true, bool dummyPrefix = true)
    {
        var bytes = new List<byte>();
        var ends = new int[to - from]; // ends[k]: bytes of tokens from..from+k
        for (var k = from; k < to; k++)
        {
            bytes.AddRange(_studentPieces.PieceOf(ids[k]).Bytes);
            ends[k - from] = bytes.Count;
        }
        int Start(int k) => k == from ? 0 : ends[k - 1 - from];
        // A window cut inside a character: leave out the tokens holding its bytes at either edge.
        var a = from;
        while (a < to && (ends[a - from] == Start(a) || IsContinuation(bytes[Start(a)]))) a++;
        var b = to;
        while (b > a && EndsInsideCharacter(bytes, ends[b - 1 - from])) b--;
        var left = (a - from) + (to - b);
        if (a == b) return left;

        var runBytes = bytes.GetRange(Start(a), ends[b - 1 - from] - Start(a)).ToArray();
        var runIds = new int[b - a];
        for (var k = a; k < b; k++) runIds[k - a] = ids[k];
        string? text = null, failure;
        try
        {
            text = s_strictUtf8.GetString(runBytes);
            if (dummyPrefix && _studentPieces.RewritesSpaces && text.StartsWith(' ')) text = text[1..]; // SentencePiece's dummy prefix
            var studentOffsets = TokenOffsets.Compute(_studentPieces, text, runIds);
            var teacherRun = _teacher.Encode(text, addBos: false, addEos: false);
            var teacherOffsets = TokenOffsets.Compute(_teacherPieces, text, teacherRun);
            var aligned = SpanAlignment.Align(teacherOffsets, studentOffsets);
            var inSpans = 0;
            foreach (var s in aligned)
            {
                if (!s.IsPaired) continue;
                spans.Add(new AlignedSpan(s.ByteStart + bytesSoFar, s.ByteEnd + bytesSoFar, s.TeacherStart + teacherIds.Count,
                    s.TeacherCount, s.StudentStart + a, s.StudentCount));
                inSpans += s.StudentCount;
            }
            teacherIds.AddRange(teacherRun);
            bytesSoFar += Encoding.UTF8.GetByteCount(text);
            return left + (b - a - inSpans);
        }
        catch (DecoderFallbackException e)
        {
            failure = $"student tokens {a}..{b - 1} are not valid UTF-8 ({e.Message})";
        }
        catch (ArgumentException e)
        {
            failure = $"student tokens {a}..{b - 1} ('{(text!.Length <= 40 ? text : text[..40] + "...")}'): {e.Message}";
        }
        problem ??= failure;
        if (!split) return to - from;

        // Split: mark the bytes that are not a character the teacher can spell, leave out the tokens holding any of them,
        // and align each stretch of tokens between them as a run of its own.
        var bad = new bool[runBytes.Length];
        for (var p = 0; p < runBytes.Length;)
        {
            var status = Rune.DecodeFromUtf8(runBytes.AsSpan(p), out var rune, out var n);
            if (status != OperationStatus.Done || !Spellable(rune)) Array.Fill(bad, true, p, n);
            p += n;
        }
        var unaligned = left;
        var offset = Start(a); // runBytes[0] is bytes[offset]
        for (var k = a; k < b;)
        {
            if (BadToken(k)) { unaligned++; k++; continue; }
            var end = k;
            while (end < b && !BadToken(end)) end++;
            unaligned += Run(ids, k, end, teacherIds, spans, ref bytesSoFar, ref problem, split: false, dummyPrefix: k == a); // a later part's space is text
            k = end;
        }
        return unaligned;

        bool BadToken(int k) => Array.IndexOf(bad, true, Start(k) - offset, ends[k - from] - Start(k)) >= 0;
    }

    // Whether the teacher encodes the character alone and its tokens spell it (asked once per character).
    private bool Spellable(Rune rune)
    {
        if (_spellable.TryGetValue(rune, out var ok)) return ok;
        var text = rune.ToString();
        try
        {
            TokenOffsets.Compute(_teacherPieces, text, _teacher.Encode(text, addBos: false, addEos: false));
            ok = true;
        }
        catch (ArgumentException)
        {
            ok = false;
        }
        _spellable[rune] = ok;
        return ok;
    }

    private static bool IsContinuation(byte b) => (b & 0xC0) == 0x80;

    // True when bytes[..end] stops inside a multi-byte character (its lead byte is there, not all of its continuation bytes).
    private static bool EndsInsideCharacter(List<byte> bytes, int end)
    {
        for (var back = 1; back <= Math.Min(4, end); back++)
        {
            var b = bytes[end - back];
            if (IsContinuation(b)) continue;
            var length = b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
            return length > back;
        }
        return false;
    }

    private static ITokenPieces Pieces(ITokenizer tokenizer, string side) => tokenizer as ITokenPieces ?? throw new ArgumentException(
        $"the {side} tokenizer {tokenizer.GetType().Name} cannot say what its ids spell (it does not implement {nameof(ITokenPieces)}), " +
        "which cross-tokenizer distillation needs to align the two tokenizations", side);
}

// The per-batch work of cross-tokenizer distillation, so a recipe needs three calls: Prepare (the teacher's tokens of
// each student sequence and the aligned spans), the teacher's forward on those tokens, and Sum (the KD loss summed over
// the spans). The loss is GOLD (GoldLoss with the two tokenizers' VocabularyMap) or ULD (the same span merge and
// sorted-probability L1 on every id: GoldLoss with VocabularyMap.None), or, for a student whose tokens are single bytes,
// the byte-marginal loss (ByteMarginalKdLoss: the teacher's next-byte distribution at every student position, from the
// piece of the teacher's own tokenization that the byte lies in).
// Rows: a sample's tokens t_0..t_{s-1} with pre-shifted labels; the student sequence is the tokens followed by the last
// label when it is a real token (a text-stream window, whose last label is the next window's first token). Student row
// r (its logits at position r) is the distribution of sequence token r + 1. The teacher reads its own tokens of the
// same text, all but the last when the student's last label was appended (so it reads exactly what the student reads),
// and its row r is the distribution of its token r + 1. A span is trained when all its student tokens have labels and
// neither side's first token (which no row predicts) is in it; the sum over spans is the KD term, normalised by the
// recipe like the same-vocabulary KD term (per student label). One tokenizer on both sides gives spans of one token
// each, the identity map, and so exactly the same-vocabulary divergence (tested through the recipe).
// Model vocabularies padded beyond their tokenizers are cut to the tokenizers' ids: padding ids are no tokens.
using SharpTune.Data;
using SharpTune.Losses;
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Distillation.CrossTokenizer;

/// <summary>The teacher's side of one micro-batch.</summary>
/// <remarks>Shapes: <c>b</c> sequences, <c>n_t</c> the longest teacher input.</remarks>
public sealed class CrossTokenizerBatch
{
    internal CrossTokenizerBatch(Tensor teacherTokens, SequenceRows[] rows, long alignedTokens, long trainedTokens)
    {
        TeacherTokens = teacherTokens;
        Rows = rows;
        AlignedTokens = alignedTokens;
        TrainedTokens = trainedTokens;
    }

    /// <summary>The teacher's input [b, n_t], right-padded with the teacher's pad id.</summary>
    public Tensor TeacherTokens { get; }

    /// <summary>Trained student tokens (labels) inside a trained span.</summary>
    public long AlignedTokens { get; }

    /// <summary>Trained student tokens (labels) in all.</summary>
    public long TrainedTokens { get; }

    internal SequenceRows[] Rows { get; }
}

// One sequence in row coordinates: the ids each row predicts and the spans over rows.
// With the byte-marginal loss, ByteTargets are the byte positions (rows of this sequence) it trains.
internal sealed record SequenceRows(int[] StudentIds, int[] TeacherIds, AlignedSpan[] Spans, ByteTarget[]? ByteTargets = null);

/// <summary>Aligns micro-batches and sums the cross-tokenizer KD loss over them.</summary>
public sealed class CrossTokenizerKd
{
    private readonly ITokenizer _student, _teacher;
    private readonly TeacherRetokenizer _retokenizer;
    private readonly int _teacherMaxSeqLen;
    private readonly int[]? _studentByte; // byte-marginal: the byte each student id spells, -1 for a special id

    /// <param name="student">The student's tokenizer (the data's).</param>
    /// <param name="teacher">The teacher's tokenizer.</param>
    /// <param name="loss">A <see cref="UldLoss"/>, <see cref="GoldLossOptions"/> or <see cref="ByteMarginalKdLossOptions"/>
    /// (the <c>kd_loss</c> components).</param>
    /// <param name="mapCacheDir">Where the GOLD vocabulary map is cached (null: built, not cached).</param>
    /// <param name="teacherMaxSeqLen">The teacher model's context: longer teacher inputs are cut there.</param>
    /// <exception cref="ArgumentException">A tokenizer that cannot say what its ids spell, or the byte-marginal loss
    /// with a student whose tokens are not single bytes.</exception>
    public CrossTokenizerKd(ITokenizer student, ITokenizer teacher, object loss, string? mapCacheDir, int teacherMaxSeqLen)
    {
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentOutOfRangeException.ThrowIfLessThan(teacherMaxSeqLen, 1);
        _retokenizer = new TeacherRetokenizer(student, teacher); // checks both spell their ids
        (_student, _teacher, _teacherMaxSeqLen) = (student, teacher, teacherMaxSeqLen);
        var (tp, sp) = ((ITokenPieces)teacher, (ITokenPieces)student);
        if (loss is ByteMarginalKdLossOptions byteMarginal)
        {
            var byteIds = ByteMarginalKdLoss.StudentByteIds(sp);
            _studentByte = new int[sp.VocabSize];
            Array.Fill(_studentByte, -1);
            for (var b = 0; b < byteIds.Length; b++) _studentByte[byteIds[b]] = b;
            ByteMarginal = new ByteMarginalKdLoss(BytePrefixTable.For(tp), byteIds, byteMarginal);
            return;
        }
        Loss = loss switch
        {
            UldLoss uld => new GoldLoss(VocabularyMap.None(tp, sp), new GoldLossOptions
            {
                Divergence = new DivergenceOptions { Temperature = uld.Temperature }, MatchedWeight = 0, UnmatchedWeight = 1,
                UldTopK = uld.TopK, ChunkSize = uld.ChunkSize,
            }),
            GoldLossOptions gold => new GoldLoss(
                mapCacheDir is null ? VocabularyMap.Build(tp, sp) : VocabularyMap.LoadOrBuild(tp, sp, mapCacheDir), gold),
            _ => throw new ArgumentException(
                $"expected {nameof(UldLoss)}, {nameof(GoldLossOptions)} or {nameof(ByteMarginalKdLossOptions)}, got {loss.GetType().Name}", nameof(loss)),
        };
        IsUld = loss is UldLoss;
    }

    /// <summary>The loss over aligned spans (ULD is a GOLD loss with no shared ids); null with the byte-marginal loss.</summary>
    public GoldLoss? Loss { get; }

    /// <summary>The byte-marginal loss, or null with ULD or GOLD.</summary>
    public ByteMarginalKdLoss? ByteMarginal { get; }

    /// <summary>True for ULD, false for the GOLD hybrid.</summary>
    public bool IsUld { get; }

    /// <summary>First reason a run of text could not be aligned in any batch so far (null: none).</summary>
    public string? FirstProblem { get; private set; }

    /// <summary>One line for the setup log.</summary>
    public string Description => ByteMarginal is { } bm
        ? $"byte-marginal {bm.Options.Divergence.Kind} (temperature {bm.Options.Divergence.Temperature}): the teacher's next-byte " +
          $"distribution from its {bm.Table.VocabSize} pieces ({bm.Table.NodeCount} byte prefixes) against the student's 256 bytes"
        : IsUld
        ? $"ULD on span-merged probabilities (temperature {Loss!.Options.Divergence.Temperature}, top_k {Loss.Options.UldTopK}), " +
          $"teacher vocabulary {Loss.Map.TeacherVocab}, student {Loss.Map.StudentVocab}"
        : $"GOLD: {Loss!.Options.Divergence.Kind} on {Loss.Map.Count} shared ids (weight {Loss.MatchedWeight:G4}), ULD on the " +
          $"{Loss.Map.TeacherVocab - Loss.Map.Count} teacher / {Loss.Map.StudentVocab - Loss.Map.Count} student ids left " +
          $"(weight {Loss.UnmatchedWeight:G4})";

    /// <summary>The teacher's tokens of each sample and the spans that align them with the student's.</summary>
    /// <exception cref="ArgumentException">A packed sample (its documents would need aligning one by one).</exception>
    public CrossTokenizerBatch Prepare(IReadOnlyList<Sample> samples, Device device)
    {
        ArgumentNullException.ThrowIfNull(samples);
        var rows = new SequenceRows[samples.Count];
        var inputs = new int[samples.Count][];
        long aligned = 0, trained = 0;
        for (var i = 0; i < samples.Count; i++)
        {
            var sample = samples[i];
            if (sample.SeqLens is not null)
                throw new ArgumentException("cross-tokenizer distillation does not take packed samples: set packed: false on the dataset", nameof(samples));
            var labels = sample.Labels;
            var appended = labels.Length > 0 && labels[^1] != Sample.IgnoreIndex;
            int[] full = appended ? [.. sample.Tokens, labels[^1]] : sample.Tokens;
            var re = _retokenizer.Retokenize(full);
            FirstProblem ??= re.Problem;
            var t = re.TeacherIds;
            var inputLength = Math.Min(appended ? t.Length - 1 : t.Length, _teacherMaxSeqLen);
            inputs[i] = t[..Math.Max(0, inputLength)];
            var teacherRows = Math.Max(0, Math.Min(inputLength, t.Length - 1)); // row r predicts teacher token r + 1
            var spans = new List<AlignedSpan>();
            foreach (var s in re.Spans)
            {
                if (s.StudentStart < 1 || s.TeacherStart < 1 || s.TeacherStart + s.TeacherCount - 1 > teacherRows) continue;
                var trainedSpan = true;
                for (var k = s.StudentStart; k < s.StudentStart + s.StudentCount && trainedSpan; k++)
                    trainedSpan = labels[k - 1] != Sample.IgnoreIndex;
                if (!trainedSpan) continue;
                spans.Add(s with { StudentStart = s.StudentStart - 1, TeacherStart = s.TeacherStart - 1 });
                aligned += s.StudentCount;
            }
            trained += labels.Count(l => l != Sample.IgnoreIndex);
            rows[i] = new SequenceRows(full[1..], teacherRows == 0 ? [] : t[1..(teacherRows + 1)], [.. spans]);
            if (ByteMarginal is not null)
            {
                aligned -= spans.Sum(s => s.StudentCount);
                rows[i] = rows[i] with { ByteTargets = ByteTargets(rows[i]) };
                aligned += rows[i].ByteTargets!.Length;
            }
        }
        var width = Math.Max(1, inputs.Max(x => x.Length));
        var padded = new long[samples.Count * width];
        Array.Fill(padded, _teacher.PadId);
        for (var i = 0; i < inputs.Length; i++)
            for (var k = 0; k < inputs[i].Length; k++) padded[i * width + k] = inputs[i][k];
        var tokens = torch.tensor(padded, [samples.Count, width], dtype: ScalarType.Int64, device: device);
        return new CrossTokenizerBatch(tokens, rows, aligned, trained);
    }

    /// <summary>The KD loss summed over the batch's trained spans, differentiable in the student logits.</summary>
    /// <param name="studentLogits">[b, s, v_s'] with v_s' at least the student tokenizer's ids.</param>
    /// <param name="teacherLogits">[b, n_t, v_t'] from <see cref="CrossTokenizerBatch.TeacherTokens"/>.</param>
    /// <param name="batch">What <see cref="Prepare"/> returned for these samples.</param>
    public Tensor Sum(Tensor studentLogits, Tensor teacherLogits, CrossTokenizerBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (ByteMarginal is { } bm) return ByteMarginalSum(bm, studentLogits, teacherLogits, batch);
        var gold = Loss!;
        var (vs, vt) = (gold.Map.StudentVocab, gold.Map.TeacherVocab);
        if (studentLogits.dim() != 3 || studentLogits.shape[0] != batch.Rows.Length || studentLogits.shape[2] < vs)
            throw new ArgumentException($"student logits [{string.Join(", ", studentLogits.shape)}], expected [{batch.Rows.Length}, s, >= {vs}] (the student tokenizer's ids)");
        if (teacherLogits.dim() != 3 || teacherLogits.shape[0] != batch.Rows.Length || teacherLogits.shape[2] < vt)
            throw new ArgumentException($"teacher logits [{string.Join(", ", teacherLogits.shape)}], expected [{batch.Rows.Length}, n_t, >= {vt}] (the teacher tokenizer's ids)");
        Tensor? total = null;
        for (var i = 0; i < batch.Rows.Length; i++)
        {
            var r = batch.Rows[i];
            if (r.Spans.Length == 0) continue;
            var s = studentLogits[i].narrow(0, 0, r.StudentIds.Length).narrow(1, 0, vs); // [rows_s, v_s]
            var t = teacherLogits[i].narrow(0, 0, r.TeacherIds.Length).narrow(1, 0, vt); // [rows_t, v_t]
            var (matched, unmatched) = gold.PerSpan(s, t, r.StudentIds, r.TeacherIds, r.Spans);
            var part = (gold.MatchedWeight * matched + gold.UnmatchedWeight * unmatched).sum();
            total = total is null ? part : total + part;
        }
        return total ?? studentLogits.narrow(1, 0, 0).sum(); // 0, in the graph
    }

    // The byte-marginal targets of one sequence (row coordinates): each student row inside a span of ONE teacher piece
    // that spells exactly the span's bytes (after a SentencePiece dummy-prefix space the text lacks), with the teacher
    // row that predicts the piece and the prefix of the piece before the byte. Rows that predict a special token, and
    // spans where the piece does not spell the text (the unknown piece, spaces SentencePiece dropped), are left out.
    private ByteTarget[] ByteTargets(SequenceRows rows)
    {
        var table = ByteMarginal!.Table;
        var targets = new List<ByteTarget>();
        foreach (var s in rows.Spans)
        {
            if (s.TeacherCount != 1) continue;
            var piece = rows.TeacherIds[s.TeacherStart];
            var bytes = table.BytesOf(piece);
            var shift = bytes.Length - s.StudentCount;
            if (bytes.Length == 0 || shift is < 0 or > 1 || (shift == 1 && !(bytes[0] == (byte)' ' && ((ITokenPieces)_teacher).RewritesSpaces)))
                continue;
            var spells = true;
            for (var k = 0; k < s.StudentCount && spells; k++)
                spells = _studentByte![rows.StudentIds[s.StudentStart + k]] == bytes[shift + k];
            if (!spells) continue;
            for (var k = 0; k < s.StudentCount; k++)
                targets.Add(new ByteTarget(s.StudentStart + k, s.TeacherStart, table.NodeOf(piece, shift + k)));
        }
        return [.. targets];
    }

    // The byte-marginal loss summed over the batch's targets: both models' logits flattened to rows ([b * s, v] views),
    // so one call of the loss covers the batch.
    private static Tensor ByteMarginalSum(ByteMarginalKdLoss loss, Tensor studentLogits, Tensor teacherLogits, CrossTokenizerBatch batch)
    {
        if (studentLogits.dim() != 3 || studentLogits.shape[0] != batch.Rows.Length)
            throw new ArgumentException($"student logits [{string.Join(", ", studentLogits.shape)}], expected [{batch.Rows.Length}, s, v_s]");
        if (teacherLogits.dim() != 3 || teacherLogits.shape[0] != batch.Rows.Length)
            throw new ArgumentException($"teacher logits [{string.Join(", ", teacherLogits.shape)}], expected [{batch.Rows.Length}, n_t, v_t]");
        var (s, nt) = ((int)studentLogits.shape[1], (int)teacherLogits.shape[1]);
        var targets = new List<ByteTarget>();
        for (var i = 0; i < batch.Rows.Length; i++)
            foreach (var t in batch.Rows[i].ByteTargets!)
                targets.Add(new ByteTarget(i * s + t.StudentRow, i * nt + t.TeacherRow, t.Node));
        if (targets.Count == 0) return studentLogits.narrow(1, 0, 0).sum(); // 0, in the graph
        var (values, _) = loss.PerTarget(studentLogits.reshape(-1, studentLogits.shape[2]), teacherLogits.reshape(-1, teacherLogits.shape[2]), targets);
        return values.sum();
    }
}

// Cross-tokenizer distillation into a student whose tokens are single bytes: the teacher's next-BYTE distribution,
// marginalised from its distribution over pieces, against the student's distribution over bytes, at every student
// position (the idea of byte-level probabilities from a tokenized LM: Phan et al. 2024, "Exact Byte-Level Probabilities
// from Tokenized Language Models for FIM-Tasks and Model Ensembles", https://arxiv.org/abs/2410.09303; this is the
// one-step approximation below, not their exact algorithm).
// Let the student's next byte lie inside teacher piece k, which spells bytes [a, e) of the text, at offset o
// (a <= o < e), and let s = bytes [a, o) be the part of k already read. With q the teacher's distribution over pieces at
// the row that predicts k:
//   p(b) = sum_{v: bytes(v) starts with s + b} q(v) / sum_{v: bytes(v) starts with s, |bytes(v)| > |s|} q(v).
// Approximations (what this is not): it assumes the teacher would tokenize the text as its tokenizer did (the
// canonical-tokenization assumption: the teacher's own split of the text is the only one it gives mass to), so only
// pieces that start where piece k starts are counted; and it leaves out the mass of pieces that end exactly at s
// (a path where the next byte starts a new piece, which the exact computation would get from the teacher's next row).
// Pieces that spell no bytes (special tokens) get no mass. At s = "" this is the teacher's distribution over first
// bytes of its next piece. GOLD instead matches the teacher's probability of the single-byte PIECE "t" with the student's
// probability of the next BYTE "t": different events when one vocabulary is much finer than the other.
// Computation: per chunk of targets, one softmax of the teacher rows, the rows at an empty prefix grouped by first byte
// in one index_add over the vocabulary, the others by one gather of (row, piece) probabilities and one index_add into
// [targets, 256] through the table's (prefix -> piece, next byte) entries (Distillation/CrossTokenizer/BytePrefixTable).
// The divergence is any of DivergenceMath's, between the student's logits over its 256 byte ids (renormalised there)
// and the marginal; bytes the teacher gives no mass after s are left out of the sums like a masked vocabulary (for
// forward KL that is exact; for reverse-type divergences it ignores the student's mass on them). A target whose prefix
// the teacher gives no mass at all (every continuation underflows) contributes 0, decided on the device (no host copy).
using SharpTune.Config;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>Options of <see cref="ByteMarginalKdLoss"/>.</summary>
public sealed record ByteMarginalKdLossOptions
{
    /// <summary>Divergence between the teacher's byte marginal and the student's byte distribution; the temperature
    /// divides both models' logits (the teacher's over pieces, before marginalising) and scales the loss by T^2.</summary>
    public DivergenceOptions Divergence { get; init; } = new();

    /// <summary>Targets per chunk: temporaries are [chunk, v_teacher].</summary>
    public int ChunkSize { get; init; } = 256;

    /// <summary>Config component (<c>kd_loss</c> of the KD recipe with a <c>teacher_tokenizer</c> and a byte-level
    /// student): the divergence by name (as <see cref="KdLoss.Create"/>) with its parameters, targets per chunk.</summary>
    [Component("sharptune.modules.loss.ByteMarginalKdLoss")]
    public static ByteMarginalKdLossOptions Create(string divergence = "forward_kl", double temperature = 1.0, double beta = 0.5,
        double symKdRatio = 0.5, double skewAlpha = 0.1, int chunkSize = 256)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        return new()
        {
            Divergence = new DivergenceOptions
            {
                Kind = DivergenceOptions.ParseKind(divergence), Temperature = temperature, Beta = beta, SymKdRatio = symKdRatio,
                SkewAlpha = skewAlpha,
            }.Validated(),
            ChunkSize = chunkSize,
        };
    }
}

/// <summary>One student position: the student row, the teacher row predicting the piece its byte lies in, and the
/// prefix node of the piece's bytes before it (<see cref="BytePrefixTable.NodeOf"/>).</summary>
public readonly record struct ByteTarget(int StudentRow, int TeacherRow, int Node);

/// <summary>The byte-marginal distillation loss.</summary>
/// <remarks>Shapes: <c>n</c> targets, student logits [n_s, v_s'] (v_s' at least the student's ids), teacher logits
/// [n_t, v_t'] (v_t' at least the teacher vocabulary of the table).</remarks>
public sealed class ByteMarginalKdLoss
{
    private const int Bytes = 256;
    private readonly long[] _studentByteIds;

    /// <param name="teacher">The teacher vocabulary's prefix table.</param>
    /// <param name="studentByteIds">The student id of each byte 0..255 (<see cref="StudentByteIds"/>).</param>
    /// <param name="options">Divergence and chunking.</param>
    public ByteMarginalKdLoss(BytePrefixTable teacher, long[] studentByteIds, ByteMarginalKdLossOptions options)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(studentByteIds);
        ArgumentNullException.ThrowIfNull(options);
        if (studentByteIds.Length != Bytes || studentByteIds.Any(i => i < 0))
            throw new ArgumentException($"expected a student id for each of the {Bytes} bytes, got {studentByteIds.Length} ids", nameof(studentByteIds));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ChunkSize, 1);
        Table = teacher;
        _studentByteIds = studentByteIds;
        Options = options with { Divergence = options.Divergence.Validated() };
    }

    /// <summary>The options.</summary>
    public ByteMarginalKdLossOptions Options { get; }

    /// <summary>The teacher vocabulary's prefix table.</summary>
    public BytePrefixTable Table { get; }

    /// <summary>The student id of each byte: every id that spells text must spell exactly one byte, and every byte must
    /// have exactly one id (special ids are left out).</summary>
    /// <exception cref="ArgumentException">A student that is not byte-level; names the id and what it spells.</exception>
    public static long[] StudentByteIds(ITokenPieces student)
    {
        ArgumentNullException.ThrowIfNull(student);
        var ids = new long[Bytes];
        Array.Fill(ids, -1);
        const string need = "the byte-marginal KD loss needs a student whose tokens are single bytes (e.g. sharptune.tokenizers.byte_tokenizer)";
        for (var id = 0; id < student.VocabSize; id++)
        {
            var p = student.PieceOf(id);
            if (p.Kind is TokenPieceKind.Special or TokenPieceKind.Unused) continue;
            if (p.Kind is not (TokenPieceKind.Text or TokenPieceKind.ByteFallback) || p.Bytes.Length != 1)
                throw new ArgumentException($"{need}; student id {id} is {(p.Kind == TokenPieceKind.Unknown ? "the unknown piece" : $"{p.Bytes.Length} bytes ({Convert.ToHexString(p.Bytes)})")}", nameof(student));
            var b = p.Bytes[0];
            if (ids[b] >= 0) throw new ArgumentException($"{need}; student ids {ids[b]} and {id} both spell byte 0x{b:X2}", nameof(student));
            ids[b] = id;
        }
        var missing = Array.IndexOf(ids, -1L);
        if (missing >= 0) throw new ArgumentException($"{need}; no student id spells byte 0x{missing:X2}", nameof(student));
        return ids;
    }

    /// <summary>The teacher's next-byte log-probabilities [n, 256] at each target (rows where the teacher gives the
    /// prefix's continuations no mass at all are NaN); no gradient.</summary>
    public Tensor TeacherByteLogProbs(Tensor teacherLogits, IReadOnlyList<ByteTarget> targets)
    {
        CheckTeacher(teacherLogits, targets);
        using var noGrad = torch.no_grad();
        var dtype = UldLoss.Wide(teacherLogits.dtype);
        var parts = new List<Tensor>();
        for (var c = 0; c < targets.Count; c += Options.ChunkSize)
            parts.Add(Marginal(teacherLogits, targets, c, Math.Min(Options.ChunkSize, targets.Count - c), dtype));
        return parts.Count == 0 ? torch.zeros(0, Bytes, dtype: dtype, device: teacherLogits.device) : torch.cat(parts, 0);
    }

    /// <summary>The divergence at each target [n] (T^2-scaled, differentiable in the student logits), and which targets
    /// were usable [n] (bool): a target whose prefix the teacher gives no mass at all has value 0. Nothing is copied to
    /// the host.</summary>
    public (Tensor Values, Tensor Usable) PerTarget(Tensor studentLogits, Tensor teacherLogits, IReadOnlyList<ByteTarget> targets)
    {
        CheckTeacher(teacherLogits, targets);
        var vs = _studentByteIds.Max() + 1;
        if (studentLogits.dim() != 2 || studentLogits.shape[1] < vs)
            throw new ArgumentException($"student logits [{string.Join(", ", studentLogits.shape)}], expected [n_s, >= {vs}] (the student's byte ids)");
        foreach (var t in targets)
            if ((uint)t.StudentRow >= (ulong)studentLogits.shape[0])
                throw new ArgumentException($"a target reads student row {t.StudentRow} of {studentLogits.shape[0]}", nameof(targets));
        var dtype = UldLoss.Wide(studentLogits.dtype);
        var temp = Options.Divergence.Temperature;
        var byteIds = torch.tensor(_studentByteIds, device: studentLogits.device);
        var values = new List<Tensor>();
        var usable = new List<Tensor>();
        for (var c = 0; c < targets.Count; c += Options.ChunkSize)
        {
            var len = Math.Min(Options.ChunkSize, targets.Count - c);
            Tensor logp, none;
            using (torch.no_grad())
            {
                logp = Marginal(teacherLogits, targets, c, len, dtype);                  // [c, 256]
                none = logp.isnan().any(-1);                                             // [c]: no mass on the prefix
                logp = logp.masked_fill(none.unsqueeze(1), 0);                           // any finite row; its value is dropped
            }
            var rows = new long[len];
            for (var i = 0; i < len; i++) rows[i] = targets[c + i].StudentRow;
            var s = studentLogits.index_select(0, torch.tensor(rows, device: studentLogits.device))
                .index_select(1, byteIds).to(dtype);                                   // [c, 256]
            // PerToken divides both sides by T: T * log p comes back as log p (already at temperature T).
            values.Add(DivergenceMath.PerToken(s, temp == 1 ? logp : logp * temp, Options.Divergence).masked_fill(none, 0));
            usable.Add(none.logical_not());
        }
        if (values.Count == 0)
            return (torch.zeros(0, dtype: dtype, device: studentLogits.device), torch.zeros(0, dtype: ScalarType.Bool, device: studentLogits.device));
        return values.Count == 1 ? (values[0], usable[0]) : (torch.cat(values, 0), torch.cat(usable, 0));
    }

    // Targets [from, from + len): log p [len, 256] at temperature T (NaN rows: no mass on the prefix's continuations).
    private Tensor Marginal(Tensor teacherLogits, IReadOnlyList<ByteTarget> targets, int from, int len, ScalarType dtype)
    {
        var v = Table.VocabSize;
        var device = teacherLogits.device;
        var rows = new long[len];
        var empty = new List<long>();
        var gather = new List<long>();  // flat index into q [len, v]
        var scatter = new List<long>(); // flat index into the mass [len, 257]
        for (var g = 0; g < len; g++)
        {
            var t = targets[from + g];
            rows[g] = t.TeacherRow;
            if (t.Node == BytePrefixTable.EmptyPrefix) { empty.Add(g); continue; }
            var (pieces, next) = Table.Continuations(t.Node);
            for (var k = 0; k < pieces.Length; k++)
            {
                gather.Add((long)g * v + pieces.Span[k]);
                scatter.Add((long)g * (Bytes + 1) + next.Span[k]);
            }
        }
        var logits = teacherLogits.index_select(0, torch.tensor(rows, device: device)).narrow(1, 0, v).to(dtype); // [len, v]
        var temp = Options.Divergence.Temperature;
        var q = (temp == 1 ? logits : logits / temp).softmax(-1);                     // [len, v]
        var mass = torch.zeros(len, Bytes + 1, dtype: dtype, device: device);          // column 256: pieces without bytes
        if (empty.Count > 0)
        {
            var index = torch.tensor(empty.ToArray(), device: device);
            var byFirst = torch.zeros(empty.Count, Bytes + 1, dtype: dtype, device: device)
                .index_add(1, torch.tensor(Table.FirstByte, device: device), q.index_select(0, index), 1); // [e, 257]
            mass = mass.index_copy(0, index, byFirst);
        }
        if (gather.Count > 0)
            mass = mass.reshape(-1).index_add(0, torch.tensor(scatter.ToArray(), device: device),
                q.reshape(-1).index_select(0, torch.tensor(gather.ToArray(), device: device)), 1).reshape(len, Bytes + 1);
        var bytes = mass.narrow(1, 0, Bytes);                                          // [len, 256]
        return bytes.log() - bytes.sum(-1, keepdim: true).log();
    }

    private void CheckTeacher(Tensor teacherLogits, IReadOnlyList<ByteTarget> targets)
    {
        ArgumentNullException.ThrowIfNull(teacherLogits);
        ArgumentNullException.ThrowIfNull(targets);
        if (teacherLogits.dim() != 2 || teacherLogits.shape[1] < Table.VocabSize)
            throw new ArgumentException(
                $"teacher logits [{string.Join(", ", teacherLogits.shape)}], expected [n_t, >= {Table.VocabSize}] (the teacher tokenizer's ids)");
        foreach (var t in targets)
            if ((uint)t.TeacherRow >= (ulong)teacherLogits.shape[0] || (uint)t.Node >= (uint)Table.NodeCount)
                throw new ArgumentException(
                    $"a target reads teacher row {t.TeacherRow} of {teacherLogits.shape[0]} and prefix node {t.Node} of {Table.NodeCount}", nameof(targets));
    }
}

// The GOLD hybrid cross-tokenizer distillation loss (TRL's GOLDTrainer, trl/experimental/gold/gold_trainer.py,
// ULDLoss with use_extended_uld and uld_use_hybrid_loss; Patiño et al. 2025, "Unlocking On-Policy Distillation for Any
// Model Family"). The two token sequences are aligned by the text they cover (Distillation/CrossTokenizer), and each
// aligned span is compared once:
// - Merge (TRL's convention): a span of tokens x_1..x_k becomes the distribution at its first token scaled by the
//   probability the model gives the rest of the span, P(y | ctx) * prod_{j>1} P(x_j | ctx, x_<j) (each factor clamped
//   to at least 1e-8, as TRL does). The result is unnormalised; for y = x_1 it is the probability of the whole span.
// - Matched ids (both vocabularies spell the same token, VocabularyMap): one of SharpTune's divergences
//   (DivergenceMath) between the two distributions restricted to the matched ids and renormalised there. The merge
//   factor is one number per span, so it cancels in the renormalisation: this part sees the first-token distribution.
//   TRL instead feeds the unnormalised matched probabilities to its JSD (clamped logs), which is no divergence of two
//   distributions; renormalising is what makes one tokenizer on both sides reduce exactly to ordinary distillation.
// - Unmatched ids: ULD (sorted-probability L1, zero-padded, optional top-k) between the merged, unnormalised
//   probabilities of the unmatched ids; this is where the mass each side leaves outside the shared vocabulary, and the
//   merge factor, count. TRL skips it when either side has no unmatched id; here the other side's mass still counts.
// - total = w_m * matched + w_u * unmatched, by default TRL's adaptive weights w_m = |matched| / v_teacher,
//   w_u = 1 - w_m. The loss is the mean over spans that have tokens on both sides.
// Spans are processed in chunks so temporaries stay [chunk, v].
using SharpTune.Config;
using SharpTune.Distillation.CrossTokenizer;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>Options of <see cref="GoldLoss"/>.</summary>
public sealed record GoldLossOptions
{
    /// <summary>Divergence on the matched ids (temperature applies to the whole loss).</summary>
    public DivergenceOptions Divergence { get; init; } = new();

    /// <summary>Weight of the matched part; null = |matched| / v_teacher (TRL's default), with
    /// <see cref="UnmatchedWeight"/> then 1 - that.</summary>
    public double? MatchedWeight { get; init; }

    /// <summary>Weight of the unmatched (ULD) part; set together with <see cref="MatchedWeight"/>.</summary>
    public double? UnmatchedWeight { get; init; }

    /// <summary>ULD top-k on the unmatched part (0 = all).</summary>
    public int UldTopK { get; init; }

    /// <summary>Spans per chunk.</summary>
    public int ChunkSize { get; init; } = 256;

    /// <summary>Smallest factor of the span merge (TRL's eps).</summary>
    public double MergeFloor { get; init; } = 1e-8;

    /// <summary>
    /// Config component (<c>kd_loss</c> of the distillation recipes with a <c>teacher_tokenizer</c>): the divergence on
    /// the shared ids by name (as <see cref="KdLoss.Create"/>) with its parameters, the two weights (both or neither:
    /// adaptive), ULD top-k on the unshared ids, spans per chunk. The map is built by the recipe from the two tokenizers.
    /// </summary>
    [Component("sharptune.modules.loss.GoldLoss")]
    public static GoldLossOptions Create(string divergence = "forward_kl", double temperature = 1.0, double beta = 0.5,
        double symKdRatio = 0.5, double skewAlpha = 0.1, double? matchedWeight = null, double? unmatchedWeight = null,
        int uldTopK = 0, int chunkSize = 256) => new()
    {
        Divergence = new DivergenceOptions
        {
            Kind = DivergenceOptions.ParseKind(divergence), Temperature = temperature, Beta = beta, SymKdRatio = symKdRatio,
            SkewAlpha = skewAlpha,
        }.Validated(),
        MatchedWeight = matchedWeight,
        UnmatchedWeight = unmatchedWeight,
        UldTopK = uldTopK,
        ChunkSize = chunkSize,
    };
}

/// <summary>The GOLD hybrid loss over span-aligned teacher and student logits.</summary>
/// <remarks>
/// Shapes: student logits [n_s, v_s] where row i is the student's distribution for its token i (already shifted:
/// the logits that predicted token i), student ids [n_s] the tokens themselves; teacher likewise [n_t, v_t], [n_t].
/// </remarks>
public sealed class GoldLoss
{
    private readonly long[] _matchedT, _matchedS, _unmatchedT, _unmatchedS;
    private readonly bool _identity;

    /// <param name="map">The ids the two vocabularies share.</param>
    /// <param name="options">Divergence, weights, top-k, chunking.</param>
    public GoldLoss(VocabularyMap map, GoldLossOptions options)
    {
        ArgumentNullException.ThrowIfNull(map);
        Options = options with { Divergence = options.Divergence.Validated() };
        if ((options.MatchedWeight is null) != (options.UnmatchedWeight is null))
            throw new ArgumentException("set both matched_weight and unmatched_weight, or neither (adaptive weights)", nameof(options));
        if (options.MatchedWeight is < 0 || options.UnmatchedWeight is < 0)
            throw new ArgumentOutOfRangeException(nameof(options), "matched_weight and unmatched_weight must be >= 0");
        if (options.UldTopK < 0) throw new ArgumentOutOfRangeException(nameof(options), options.UldTopK, "uld_top_k must be >= 0");
        if (options.ChunkSize < 1) throw new ArgumentOutOfRangeException(nameof(options), options.ChunkSize, "chunk_size must be >= 1");
        if (!(options.MergeFloor is > 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(options), options.MergeFloor, "merge_floor must be in (0, 1)");
        Map = map;
        _matchedT = [.. map.TeacherIds.Select(i => (long)i)];
        _matchedS = [.. map.StudentIds.Select(i => (long)i)];
        _unmatchedT = Complement(map.TeacherIds, map.TeacherVocab);
        _unmatchedS = Complement(map.StudentIds, map.StudentVocab);
        _identity = map.IsIdentity;
        MatchedWeight = options.MatchedWeight ?? (double)map.Count / map.TeacherVocab;
        UnmatchedWeight = options.UnmatchedWeight ?? 1 - MatchedWeight;
    }

    /// <summary>The options.</summary>
    public GoldLossOptions Options { get; }

    /// <summary>The vocabulary map.</summary>
    public VocabularyMap Map { get; }

    /// <summary>Weight of the matched part in use.</summary>
    public double MatchedWeight { get; }

    /// <summary>Weight of the unmatched part in use.</summary>
    public double UnmatchedWeight { get; }

    /// <summary>Mean hybrid loss over the spans with tokens on both sides (0 when there are none).</summary>
    public Tensor Forward(Tensor studentLogits, Tensor teacherLogits, IReadOnlyList<int> studentIds, IReadOnlyList<int> teacherIds,
        IReadOnlyList<AlignedSpan> spans)
    {
        var (matched, unmatched) = PerSpan(studentLogits, teacherLogits, studentIds, teacherIds, spans);
        var total = MatchedWeight * matched + UnmatchedWeight * unmatched;
        return total.numel() == 0 ? total.sum() : total.mean();
    }

    /// <summary>The matched and unmatched parts per paired span [m] (unweighted), differentiable in the student logits.</summary>
    public (Tensor Matched, Tensor Unmatched) PerSpan(Tensor studentLogits, Tensor teacherLogits, IReadOnlyList<int> studentIds,
        IReadOnlyList<int> teacherIds, IReadOnlyList<AlignedSpan> spans)
    {
        Check(studentLogits, studentIds, Map.StudentVocab, "student");
        Check(teacherLogits, teacherIds, Map.TeacherVocab, "teacher");
        var paired = spans.Where(s => s.IsPaired).ToArray();
        foreach (var s in paired)
            if (s.StudentStart + s.StudentCount > studentIds.Count || s.TeacherStart + s.TeacherCount > teacherIds.Count)
                throw new ArgumentException(
                    $"span [{s.ByteStart}, {s.ByteEnd}) covers student tokens {s.StudentStart}+{s.StudentCount} and teacher tokens " +
                    $"{s.TeacherStart}+{s.TeacherCount}, beyond the {studentIds.Count} student and {teacherIds.Count} teacher tokens", nameof(spans));
        var matched = new List<Tensor>();
        var unmatched = new List<Tensor>();
        var dtype = UldLoss.Wide(studentLogits.dtype);
        for (var c = 0; c < paired.Length; c += Options.ChunkSize)
        {
            var chunk = paired.AsSpan(c, Math.Min(Options.ChunkSize, paired.Length - c));
            var sStarts = new long[chunk.Length];
            var tStarts = new long[chunk.Length];
            for (var i = 0; i < chunk.Length; i++) (sStarts[i], tStarts[i]) = (chunk[i].StudentStart, chunk[i].TeacherStart);
            var sFirst = studentLogits.index_select(0, Index(sStarts, studentLogits)).to(dtype);       // [c, v_s]
            Tensor tFirst;
            using (torch.no_grad()) tFirst = teacherLogits.detach().index_select(0, Index(tStarts, teacherLogits)).to(dtype); // [c, v_t]

            matched.Add(Map.Count == 0 ? torch.zeros(chunk.Length, dtype: dtype, device: sFirst.device)
                : _identity ? DivergenceMath.PerToken(sFirst, tFirst, Options.Divergence)
                : DivergenceMath.PerToken(sFirst.index_select(1, Index(_matchedS, sFirst)),
                    tFirst.index_select(1, Index(_matchedT, tFirst)), Options.Divergence));

            if (_unmatchedS.Length == 0 && _unmatchedT.Length == 0)
            {
                unmatched.Add(torch.zeros(chunk.Length, dtype: dtype, device: sFirst.device));
                continue;
            }
            var pS = Merged(sFirst, studentLogits, studentIds, chunk, s => (s.StudentStart, s.StudentCount))
                .index_select(1, Index(_unmatchedS, sFirst));                                        // [c, u_s]
            Tensor pT;
            using (torch.no_grad())
                pT = Merged(tFirst, teacherLogits.detach(), teacherIds, chunk, s => (s.TeacherStart, s.TeacherCount))
                    .index_select(1, Index(_unmatchedT, tFirst));                                    // [c, u_t]
            unmatched.Add(UldMath.SortedL1(pS, pT, Options.UldTopK));
        }
        return (Cat(matched, dtype, studentLogits.device), Cat(unmatched, dtype, studentLogits.device));
    }

    // Merged probabilities [c, v]: softmax of each span's first row times the clamped probabilities of its other tokens.
    private Tensor Merged(Tensor first, Tensor logits, IReadOnlyList<int> ids, ReadOnlySpan<AlignedSpan> chunk,
        Func<AlignedSpan, (int Start, int Count)> side)
    {
        var temp = Options.Divergence.Temperature;
        var logp = (temp == 1 ? first : first / temp).log_softmax(-1);                              // [c, v]
        var rows = new List<long>();
        var tokens = new List<long>();
        var owner = new List<long>();
        for (var g = 0; g < chunk.Length; g++)
        {
            var (start, count) = side(chunk[g]);
            for (var j = start + 1; j < start + count; j++) { rows.Add(j); tokens.Add(ids[j]); owner.Add(g); }
        }
        if (rows.Count > 0)
        {
            var rest = logits.index_select(0, Index([.. rows], logits)).to(first.dtype);             // [r, v]
            var lp = (temp == 1 ? rest : rest / temp).log_softmax(-1)
                .gather(1, Index([.. tokens], rest).unsqueeze(1)).squeeze(1)                        // [r]
                .clamp_min(Math.Log(Options.MergeFloor));
            var factor = torch.zeros(chunk.Length, dtype: first.dtype, device: first.device)
                .index_add(0, Index([.. owner], rest), lp, 1);                                         // [c]
            logp = logp + factor.unsqueeze(1);
        }
        return logp.exp();
    }

    private static Tensor Index(long[] values, Tensor like) => torch.tensor(values, dtype: ScalarType.Int64, device: like.device);

    private static Tensor Cat(List<Tensor> parts, ScalarType dtype, Device device) =>
        parts.Count == 0 ? torch.zeros(0, dtype: dtype, device: device) : parts.Count == 1 ? parts[0] : torch.cat(parts, 0);

    private static long[] Complement(IReadOnlyList<int> ids, int vocab)
    {
        var used = new bool[vocab];
        foreach (var id in ids) used[id] = true;
        return [.. Enumerable.Range(0, vocab).Where(i => !used[i]).Select(i => (long)i)];
    }

    private static void Check(Tensor logits, IReadOnlyList<int> ids, int vocab, string side)
    {
        if (logits.dim() != 2 || logits.shape[0] != ids.Count || logits.shape[1] != vocab)
            throw new ArgumentException(
                $"{side} logits are [{string.Join(", ", logits.shape)}], expected [{ids.Count}, {vocab}] ({side} tokens, {side} vocabulary of the map)");
        for (var i = 0; i < ids.Count; i++)
            if ((uint)ids[i] >= (uint)vocab)
                throw new ArgumentException($"{side} token {i} is id {ids[i]}, outside the {side} vocabulary (0..{vocab - 1})");
    }
}

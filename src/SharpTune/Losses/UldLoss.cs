// Universal Logit Distillation (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the Universal Logit
// Distillation Loss for LLMs", https://arxiv.org/abs/2402.12030): a teacher and a student with different vocabularies
// are compared through their *sorted* probability vectors. With unit ground cost between ranks, the Wasserstein-1
// distance between the two distributions reduces to the L1 distance between the descending-sorted probability vectors,
// the shorter padded with zeros; it needs no vocabulary mapping and is blind to which token carries which probability.
// Conventions follow TRL's ULDLoss (trl/experimental/gold/gold_trainer.py): summed over the vocabulary, averaged over
// aligned positions, no T^2 factor. The top-k option compares only the k largest probabilities of each side (the rest
// of the mass is then ignored, not padded).
using SharpTune.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Losses;

/// <summary>Sorted-probability L1 per row.</summary>
internal static class UldMath
{
    /// <summary>
    /// Per-row sum |sort_desc(pS) - sort_desc(pT)| [n] of probability rows <paramref name="pS"/> [n, v_s] and
    /// <paramref name="pT"/> [n, v_t] (rows need not sum to 1), the shorter zero-padded; with <paramref name="topK"/>
    /// &gt; 0, only the k largest of each row (zero-padded to k when a vocabulary is smaller).
    /// </summary>
    public static Tensor SortedL1(Tensor pS, Tensor pT, int topK)
    {
        var width = topK > 0 ? topK : Math.Max(pS.shape[1], pT.shape[1]);
        var a = Sorted(pS, topK, width);                                 // [n, width]
        var b = Sorted(pT, topK, width);                                 // [n, width]
        return (a - b).abs().sum(-1);
    }

    private static Tensor Sorted(Tensor p, int topK, long width)
    {
        var v = p.shape[1];
        var sorted = topK > 0 && topK < v ? p.topk(topK, dim: -1).values : p.sort(dim: -1, descending: true).Values;
        return sorted.shape[1] == width ? sorted : torch.nn.functional.pad(sorted, [0, width - sorted.shape[1]]);
    }
}

/// <summary>
/// ULD between student and teacher logits whose rows are already paired (position i of one with position i of the
/// other, as Boizard et al. pair response tokens; or span-merged rows, see <see cref="GoldLoss"/>).
/// </summary>
/// <remarks>Shapes: student logits [n, v_s], teacher logits [n, v_t], mask [n] (bool, true = use the row).</remarks>
public sealed class UldLoss
{
    /// <param name="temperature">Softmax temperature of both sides (1 = none); no T^2 factor.</param>
    /// <param name="topK">Compare only the k largest probabilities of each row (0 = all).</param>
    /// <param name="chunkSize">Rows per chunk; temporaries are [chunkSize, v].</param>
    public UldLoss(double temperature = 1.0, int topK = 0, int chunkSize = 1024)
    {
        if (!(temperature > 0) || double.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be a finite number > 0");
        if (topK < 0) throw new ArgumentOutOfRangeException(nameof(topK), topK, "top_k must be >= 0 (0 = all)");
        if (chunkSize < 1) throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "chunk size must be >= 1");
        Temperature = temperature;
        TopK = topK;
        ChunkSize = chunkSize;
    }

    /// <summary>Config component (<c>kd_loss</c> of the distillation recipes with a <c>teacher_tokenizer</c>): rows are
    /// paired by the spans of text both tokenizations cover, each span's probabilities merged as in GOLD.</summary>
    [Component("sharptune.modules.loss.UldLoss")]
    public static UldLoss Create(double temperature = 1.0, int topK = 0, int chunkSize = 1024) => new(temperature, topK, chunkSize);

    /// <summary>Softmax temperature.</summary>
    public double Temperature { get; }

    /// <summary>Top-k truncation (0 = none).</summary>
    public int TopK { get; }

    /// <summary>Rows per chunk.</summary>
    public int ChunkSize { get; }

    /// <summary>Per-row distance [n] (fp32 or the logits' wider dtype), differentiable in the student logits.</summary>
    public Tensor PerRow(Tensor studentLogits, Tensor teacherLogits)
    {
        if (studentLogits.dim() != 2 || teacherLogits.dim() != 2 || studentLogits.shape[0] != teacherLogits.shape[0])
            throw new ArgumentException(
                $"expected student [n, v_s] and teacher [n, v_t] logits with the same n, got [{string.Join(", ", studentLogits.shape)}] and [{string.Join(", ", teacherLogits.shape)}]");
        var n = studentLogits.shape[0];
        var parts = new List<Tensor>();
        for (long r = 0; r < n; r += ChunkSize)
        {
            var len = Math.Min(ChunkSize, n - r);
            var pS = Probabilities(studentLogits.narrow(0, r, len));
            Tensor pT;
            using (torch.no_grad()) pT = Probabilities(teacherLogits.narrow(0, r, len).detach());
            parts.Add(UldMath.SortedL1(pS, pT, TopK));
        }
        return parts.Count == 0 ? torch.zeros(0, dtype: Wide(studentLogits.dtype), device: studentLogits.device)
            : parts.Count == 1 ? parts[0] : torch.cat(parts, 0);
    }

    /// <summary>Mean per-row distance over the rows <paramref name="mask"/> selects (all when null); 0 when none.</summary>
    public Tensor Forward(Tensor studentLogits, Tensor teacherLogits, Tensor? mask = null)
    {
        var perRow = PerRow(studentLogits, teacherLogits);
        if (mask is null) return perRow.numel() == 0 ? perRow.sum() : perRow.mean();
        var m = mask.to(perRow.dtype);
        return (perRow * m).sum() / m.sum().clamp_min(1);
    }

    private Tensor Probabilities(Tensor logits)
    {
        var x = logits.to(Wide(logits.dtype));
        return (Temperature == 1 ? x : x / Temperature).softmax(-1);
    }

    internal static ScalarType Wide(ScalarType t) => t == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
}

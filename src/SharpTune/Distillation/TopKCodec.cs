// Encoding of one token position of a top-k teacher (format version 2). The stored entries are a *set* of ids with a
// log-probability each, so the ids are written in ascending order as Golomb-Rice coded gaps (about log2(vocab / k) + 1.5
// bits per id, near the log2 C(vocab, k) floor) instead of in rank order at ceil(log2 vocab) bits each; the rank order
// that this drops is carried by the log-probabilities themselves. Each log-probability is quantised in steps of
// `LogProbStep` nats above the lowest stored one (the base, kept as a float32): d_i = round((lp_i - base) / step), Rice
// coded in id order. Most of a top-k lies near its lowest entry, so most d_i are small.
// Nothing is folded into the tail unless the format asks: `MaxLogRatio` folds entries that far below the top-1, and
// `MaxBytesPerToken` folds the lowest-ranked entries that do not fit the per-position budget; either way the tail field
// (1 - the stored mass) then holds their probability.
// Error bound (see docs/offline-teacher.md): every stored probability p' satisfies |p' - p| <= p (e^(step/2 + 2e-5) - 1)
// for p the teacher's (the float32 log-prob given), a normal float32 (eps = 2e-5 covers float32 rounding of log-probs above -87); ids decode exactly.
// References: Golomb 1966, Rice 1979 (gap codes); Witten, Moffat & Bell, "Managing Gigabytes", ch. 3 (sorted id lists
// as gaps); Arcee DistillKit (top-k log-prob storage).
namespace SharpTune.Distillation;

/// <summary>The encoding parameters of a teacher cache (stored in its manifest).</summary>
/// <param name="K">Most ids stored per position.</param>
/// <param name="Vocab">Teacher vocabulary size.</param>
/// <param name="LogProbStep">Quantisation step of log-probabilities in nats (relative error bound e^(step/2) - 1).</param>
/// <param name="MaxLogRatio">When set, entries more than this many nats below the top-1 are folded into the tail.</param>
/// <param name="MaxBytesPerToken">When set, the budget of one position record: the lowest-ranked entries that do not fit
/// are folded into the tail. Unset (the default), every top-k entry is stored.</param>
public sealed record TopKFormat(int K = 128, int Vocab = 128_256, double LogProbStep = TopKFormat.DefaultLogProbStep,
    double? MaxLogRatio = null, int? MaxBytesPerToken = null)
{
    /// <summary>Default quantisation step: 1/32 nat, every probability within 1.6% (relative) of the teacher's.</summary>
    public const double DefaultLogProbStep = 1.0 / 32;

    /// <summary>Bits of the stored-count field.</summary>
    public int CountBits => Math.Max(1, (int)Math.Ceiling(Math.Log2(K + 1.0)));

    /// <summary>
    /// Bound on |p' / p - 1| for every stored probability p' of a given teacher probability p: half a quantisation step
    /// in log space plus 2e-5 for float32 rounding of log-probs (a probability that is a normal float32 has
    /// |log p| &lt; 87.4, which float32 rounds to within 5.2e-6; the base and the decoded value are each rounded once).
    /// </summary>
    public double RelativeErrorBound => Math.Exp(LogProbStep / 2 + 2e-5) - 1;

    /// <summary>Throws when a parameter is out of range.</summary>
    public void Validate()
    {
        if (Vocab < 2 || Vocab > 1 << 30) throw new ArgumentException($"teacher cache: vocab must be in [2, 2^30], got {Vocab}");
        if (K < 1 || K > Vocab || K > 65_535) throw new ArgumentException($"teacher cache: k must be in [1, min(vocab, 65535)], got {K} (vocab {Vocab})");
        if (!(LogProbStep > 0 && LogProbStep <= 1)) throw new ArgumentException($"teacher cache: log_prob_step must be in (0, 1] nats, got {LogProbStep}");
        if (MaxLogRatio is { } ratio && !(ratio > 0)) throw new ArgumentException($"teacher cache: max_log_ratio must be positive (or null: off), got {ratio}");
        if (MaxBytesPerToken is < 16) throw new ArgumentException($"teacher cache: max_bytes_per_token must be at least 16 (or null: no budget), got {MaxBytesPerToken}");
    }
}

/// <summary>What <see cref="TopKCodec.Encode"/> did with one position.</summary>
/// <param name="Stored">Entries written.</param>
/// <param name="Folded">Entries with a finite log-prob that were not written (budget or ratio); their mass is in the tail.</param>
internal readonly record struct EncodedPosition(int Stored, int Folded);

/// <summary>Encodes and decodes position records.</summary>
internal static class TopKCodec
{
    // count | tail mass uint16 | base log-prob float32 | Rice parameter of the id gaps | Rice parameter of the offsets
    private const int HeaderBits = 16 + 32 + 4 + 4;
    private const int MaxRice = 15;

    /// <summary>Buffers reused across positions (sized for k entries).</summary>
    internal sealed class Scratch(int k)
    {
        public readonly long[] SortedIds = new long[k];
        public readonly int[] Rank = new int[k];
        public readonly long[] PrefixIds = new long[k];
        public readonly uint[] Offsets = new uint[k];
    }

    /// <summary>
    /// Appends one position: <paramref name="ids"/> and <paramref name="logProbs"/> in descending log-prob order
    /// (length up to K; a non-finite log-prob ends the list). The tail mass is 1 - the sum of the stored exp(log-prob).
    /// </summary>
    public static EncodedPosition Encode(BitWriter writer, TopKFormat format, ReadOnlySpan<long> ids, ReadOnlySpan<float> logProbs, Scratch scratch)
    {
        var n = Math.Min(Math.Min(ids.Length, logProbs.Length), format.K);
        var finite = 0;
        while (finite < n && float.IsFinite(logProbs[finite])) finite++;
        if (finite == 0)
        {
            writer.Write(0, format.CountBits);
            return new EncodedPosition(0, 0);
        }
        var top = logProbs[0];
        var c = finite;
        for (var i = 0; i < finite; i++)
        {
            if (ids[i] < 0 || ids[i] >= format.Vocab)
                throw new ArgumentException($"teacher cache: id {ids[i]} outside the vocabulary [0, {format.Vocab})");
            if (logProbs[i] > top + 1e-4f) throw new ArgumentException($"teacher cache: log-probs must be in descending order; entry {i} ({logProbs[i]}) > top-1 ({top})");
            if (format.MaxLogRatio is { } ratio && top - logProbs[i] > ratio) { c = i; break; }
        }
        // Ids sorted once; a prefix of the ranking is then the sorted ids whose rank is below c.
        for (var i = 0; i < finite; i++) { scratch.SortedIds[i] = ids[i]; scratch.Rank[i] = i; }
        Array.Sort(scratch.SortedIds, scratch.Rank, 0, finite);
        for (var i = 1; i < finite; i++)
            if (scratch.SortedIds[i] == scratch.SortedIds[i - 1])
                throw new ArgumentException($"teacher cache: id {scratch.SortedIds[i]} appears twice in one position");
        // Largest prefix within the bit budget (cost grows with c, so binary search; cost(lo) fits throughout).
        // One byte per position is kept back for the file's per-sample index, byte alignment and shard header, so a
        // whole cache stays within MaxBytesPerToken per position for samples of 32 or more tokens.
        if (format.MaxBytesPerToken is { } maxBytes)
        {
            var budget = (maxBytes - 1) * 8L;
            if (Plan(format, logProbs, scratch, c).Bits > budget)
            {
                int lo = 1, hi = c;
                while (lo < hi)
                {
                    var mid = (lo + hi + 1) / 2;
                    if (Plan(format, logProbs, scratch, mid).Bits <= budget) lo = mid; else hi = mid - 1;
                }
                c = lo;
            }
        }
        var plan = Plan(format, logProbs, scratch, c);
        double mass = 0;
        for (var i = 0; i < c; i++) mass += Math.Exp(logProbs[i]);
        writer.Write((ulong)c, format.CountBits);
        writer.Write((ulong)Math.Round(Math.Clamp(1 - mass, 0, 1) * 65_535), 16);
        writer.Write(BitConverter.SingleToUInt32Bits(plan.Base), 32);
        writer.Write((ulong)plan.IdRice, 4);
        writer.Write((ulong)plan.OffsetRice, 4);
        long previous = -1;
        for (var i = 0; i < c; i++)
        {
            writer.WriteRice((uint)(scratch.PrefixIds[i] - previous - 1), plan.IdRice);
            previous = scratch.PrefixIds[i];
        }
        for (var i = 0; i < c; i++) writer.WriteRice(scratch.Offsets[i], plan.OffsetRice);
        return new EncodedPosition(c, finite - c);
    }

    /// <summary>
    /// Reads one position into <paramref name="ids"/> / <paramref name="logProbs"/> (length K; the stored entries come
    /// first, in descending decoded log-prob; unused slots get id 0 and -inf). Returns the stored count and the tail mass.
    /// </summary>
    public static (int Count, float Tail) Decode(ref BitReader reader, TopKFormat format, Span<long> ids, Span<float> logProbs)
    {
        var c = (int)reader.Read(format.CountBits);
        if (c > format.K) throw new InvalidDataException($"position record stores {c} entries but k is {format.K}");
        ids.Clear();
        logProbs.Fill(float.NegativeInfinity);
        if (c == 0) return (0, 1);
        var tail = reader.Read(16) / 65_535f;
        var baseLp = BitConverter.UInt32BitsToSingle((uint)reader.Read(32));
        var idRice = (int)reader.Read(4);
        var offsetRice = (int)reader.Read(4);
        if (!float.IsFinite(baseLp) || baseLp > 1e-3f) throw new InvalidDataException($"position record has an invalid base log-prob {baseLp}");
        long id = -1;
        for (var i = 0; i < c; i++)
        {
            id += (long)reader.ReadRice(idRice) + 1;
            if (id >= format.Vocab) throw new InvalidDataException($"position record has id {id} outside the vocabulary [0, {format.Vocab})");
            ids[i] = id;
        }
        for (var i = 0; i < c; i++)
        {
            var lp = baseLp + reader.ReadRice(offsetRice) * format.LogProbStep;
            if (lp > format.LogProbStep) throw new InvalidDataException($"position record decodes to log-prob {lp} > 0");
            // A log-prob is <= 0, so rounding a top-1 near 0 up is undone (which only brings it closer); negated: the
            // ascending sort below then puts the most probable first.
            logProbs[i] = -(float)Math.Min(lp, 0);
        }
        logProbs[..c].Sort(ids[..c]);
        for (var i = 0; i < c; i++) logProbs[i] = -logProbs[i];
        return (c, tail);
    }

    private readonly record struct RecordPlan(long Bits, float Base, int IdRice, int OffsetRice);

    // The record storing the c highest-ranked entries: fills scratch.PrefixIds (ascending) and scratch.Offsets (same
    // order) and returns its size with the best Rice parameters.
    private static RecordPlan Plan(TopKFormat format, ReadOnlySpan<float> logProbs, Scratch scratch, int c)
    {
        var baseLp = logProbs[0];
        for (var i = 1; i < c; i++) baseLp = Math.Min(baseLp, logProbs[i]);
        var span = (logProbs[0] - (double)baseLp) / format.LogProbStep;
        if (span > 1 << 30)
            throw new ArgumentException($"teacher cache: the stored log-probs span {logProbs[0] - (double)baseLp:G4} nats, more than 2^30 steps of " +
                $"{format.LogProbStep}; set max_log_ratio to fold the entries far below the top-1 into the tail");
        var m = 0;
        for (var i = 0; m < c; i++)
        {
            var rank = scratch.Rank[i];
            if (rank >= c) continue;
            scratch.PrefixIds[m] = scratch.SortedIds[i];
            scratch.Offsets[m] = (uint)Math.Round((logProbs[rank] - (double)baseLp) / format.LogProbStep);
            m++;
        }
        long idBits = long.MaxValue, offsetBits = long.MaxValue;
        int idRice = 0, offsetRice = 0;
        for (var r = 0; r <= MaxRice; r++)
        {
            long ib = 0, ob = 0;
            long previous = -1;
            for (var i = 0; i < c; i++)
            {
                ib += BitWriter.RiceBits((uint)(scratch.PrefixIds[i] - previous - 1), r);
                previous = scratch.PrefixIds[i];
                ob += BitWriter.RiceBits(scratch.Offsets[i], r);
            }
            if (ib < idBits) { idBits = ib; idRice = r; }
            if (ob < offsetBits) { offsetBits = ob; offsetRice = r; }
        }
        return new RecordPlan(format.CountBits + HeaderBits + idBits + offsetBits, baseLp, idRice, offsetRice);
    }
}

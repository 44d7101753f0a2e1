// Encoding of one token position of a top-k teacher: the ids in ceil(log2 vocab) bits each (in descending probability
// order), the top-1 log-probability as a float32, the teacher's exact tail mass (1 - sum of the stored probabilities)
// in 16 bits, and the other log-probabilities quantised relative to the top-1 in steps of `LogProbStep` nats. The
// quantised offsets q_i = round((lp_1 - lp_i) / step) never decrease with rank, so only their gaps are stored, as
// Golomb-Rice codes with a per-position parameter. Entries further than `MaxLogRatio` nats below the top-1, and the
// lowest-ranked entries that do not fit the `MaxBytesPerToken` budget, are not stored: their mass is in the tail.
// Error bound (see docs/offline-teacher.md): every stored probability p' satisfies |p' - p| <= p (e^(step/2 + eps) - 1),
// eps = 2e-5 covers float32 rounding of the log-probs; an id not stored has p <= min(stored p) (and p <= p_1 e^-MaxLogRatio when the
// ratio dropped it). References: Megatron-LM (packed vocab ids), Arcee DistillKit (top-k log-prob storage).
namespace SharpTune.Distillation;

/// <summary>The encoding parameters of a teacher cache (stored in its manifest).</summary>
/// <param name="K">Most ids stored per position.</param>
/// <param name="Vocab">Teacher vocabulary size; ids take ceil(log2 Vocab) bits.</param>
/// <param name="LogProbStep">Quantisation step of log-probabilities in nats (relative error bound e^(step/2) - 1).</param>
/// <param name="MaxLogRatio">Entries more than this many nats below the top-1 are folded into the tail.</param>
/// <param name="MaxBytesPerToken">Budget of one position record; lowest-ranked entries that do not fit are folded into the tail.</param>
public sealed record TopKFormat(int K = 128, int Vocab = 128_256, double LogProbStep = 1.0 / 64, double MaxLogRatio = 20,
    int MaxBytesPerToken = 200)
{
    /// <summary>Bits per stored id.</summary>
    public int IdBits => Math.Max(1, (int)Math.Ceiling(Math.Log2(Vocab)));

    /// <summary>Bits of the stored-count field.</summary>
    public int CountBits => Math.Max(1, (int)Math.Ceiling(Math.Log2(K + 1.0)));

    /// <summary>
    /// Bound on |p' / p - 1| for every stored probability: half a quantisation step in log space plus 2e-5 for float32
    /// rounding of log-probs (stored log-probs lie within MaxLogRatio of a top-1 that is at least -ln(vocab), so their
    /// magnitude stays below ~40 and float32 rounds them to within 5e-6 each way).
    /// </summary>
    public double RelativeErrorBound => Math.Exp(LogProbStep / 2 + 2e-5) - 1;

    /// <summary>Throws when a parameter is out of range.</summary>
    public void Validate()
    {
        if (Vocab < 2 || Vocab > 1 << 30) throw new ArgumentException($"teacher cache: vocab must be in [2, 2^30], got {Vocab}");
        if (K < 1 || K > Vocab || K > 65_535) throw new ArgumentException($"teacher cache: k must be in [1, min(vocab, 65535)], got {K} (vocab {Vocab})");
        if (!(LogProbStep > 0 && LogProbStep <= 1)) throw new ArgumentException($"teacher cache: log_prob_step must be in (0, 1] nats, got {LogProbStep}");
        if (!(MaxLogRatio > 0)) throw new ArgumentException($"teacher cache: max_log_ratio must be positive, got {MaxLogRatio}");
        if (MaxBytesPerToken < 16) throw new ArgumentException($"teacher cache: max_bytes_per_token must be at least 16, got {MaxBytesPerToken}");
    }
}

/// <summary>Encodes and decodes position records.</summary>
internal static class TopKCodec
{
    private const int HeaderBits = 32 + 16 + 4; // top-1 float32, tail mass uint16, Rice parameter

    /// <summary>
    /// Appends one position: <paramref name="ids"/> and <paramref name="logProbs"/> in descending log-prob order
    /// (length up to K), and the teacher's log-sum-exp-normalised distribution's mass on them is taken from the
    /// log-probs themselves. Returns the number of entries stored.
    /// </summary>
    public static int Encode(BitWriter writer, TopKFormat format, ReadOnlySpan<long> ids, ReadOnlySpan<float> logProbs, Span<uint> scratch)
    {
        var n = Math.Min(Math.Min(ids.Length, logProbs.Length), format.K);
        if (n == 0 || !float.IsFinite(logProbs[0]))
        {
            writer.Write(0, format.CountBits);
            return 0;
        }
        var top = logProbs[0];
        // Quantised offsets from the top-1; entries beyond the ratio (or -inf) are dropped.
        var c = 0;
        for (; c < n; c++)
        {
            var lp = logProbs[c];
            if (!float.IsFinite(lp) || top - lp > format.MaxLogRatio) break;
            if (lp > top + 1e-4f) throw new ArgumentException($"teacher cache: log-probs must be in descending order; entry {c} ({lp}) > top-1 ({top})");
            var q = (uint)Math.Max(0, Math.Round((top - (double)lp) / format.LogProbStep));
            scratch[c] = c == 0 ? 0 : Math.Max(q, scratch[c - 1]);
        }
        // Largest prefix within the bit budget (cost grows with c, so binary search).
        // One byte per position is kept back for the file's per-sample index, byte alignment and shard header, so a
        // whole cache stays within MaxBytesPerToken per position for samples of 16 or more tokens.
        var budget = (format.MaxBytesPerToken - 1) * 8L;
        if (Cost(format, scratch, c).Bits > budget)
        {
            int lo = 1, hi = c;
            while (lo < hi)
            {
                var mid = (lo + hi + 1) / 2;
                if (Cost(format, scratch, mid).Bits <= budget) lo = mid; else hi = mid - 1;
            }
            c = lo;
        }
        var (_, r) = Cost(format, scratch, c);
        double mass = 0;
        for (var i = 0; i < c; i++) mass += Math.Exp(logProbs[i]);
        var tail = Math.Clamp(1 - mass, 0, 1);
        writer.Write((ulong)c, format.CountBits);
        writer.Write(BitConverter.SingleToUInt32Bits(top), 32);
        writer.Write((ulong)Math.Round(tail * 65_535), 16);
        writer.Write((ulong)r, 4);
        for (var i = 0; i < c; i++)
        {
            if (ids[i] < 0 || ids[i] >= format.Vocab)
                throw new ArgumentException($"teacher cache: id {ids[i]} outside the vocabulary [0, {format.Vocab})");
            writer.Write((ulong)ids[i], format.IdBits);
        }
        for (var i = 1; i < c; i++) writer.WriteRice(scratch[i] - scratch[i - 1], r);
        return c;
    }

    /// <summary>
    /// Reads one position into <paramref name="ids"/> / <paramref name="logProbs"/> (length K; unused slots get id 0
    /// and -inf). Returns the stored count and the tail mass.
    /// </summary>
    public static (int Count, float Tail) Decode(ref BitReader reader, TopKFormat format, Span<long> ids, Span<float> logProbs)
    {
        var c = (int)reader.Read(format.CountBits);
        if (c > format.K) throw new InvalidDataException($"position record stores {c} entries but k is {format.K}");
        ids.Clear();
        logProbs.Fill(float.NegativeInfinity);
        if (c == 0) return (0, 1);
        var top = BitConverter.UInt32BitsToSingle((uint)reader.Read(32));
        var tail = reader.Read(16) / 65_535f;
        var r = (int)reader.Read(4);
        if (!float.IsFinite(top) || top > 1e-3f) throw new InvalidDataException($"position record has an invalid top-1 log-prob {top}");
        for (var i = 0; i < c; i++)
        {
            var id = (long)reader.Read(format.IdBits);
            if (id >= format.Vocab) throw new InvalidDataException($"position record has id {id} outside the vocabulary [0, {format.Vocab})");
            ids[i] = id;
        }
        logProbs[0] = top;
        long q = 0;
        for (var i = 1; i < c; i++)
        {
            q += reader.ReadRice(r);
            logProbs[i] = (float)(top - q * format.LogProbStep);
        }
        return (c, tail);
    }

    // Bits of a record storing the first c entries, with the best Rice parameter for their gaps.
    private static (long Bits, int R) Cost(TopKFormat format, ReadOnlySpan<uint> q, int c)
    {
        var fixedBits = format.CountBits + HeaderBits + (long)c * format.IdBits;
        long best = long.MaxValue;
        var bestR = 0;
        for (var r = 0; r < 16; r++)
        {
            long bits = 0;
            for (var i = 1; i < c; i++) bits += BitWriter.RiceBits(q[i] - q[i - 1], r);
            if (bits < best) { best = bits; bestR = r; }
        }
        return (fixedBits + best, bestR);
    }
}

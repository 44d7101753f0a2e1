// The position encoding of the teacher cache against libtorch's topk and the stated bounds: the decoded ids are exactly
// the teacher's top-k ids, every stored probability is within a relative e^(step/2 + 2e-5) - 1 of the teacher's
// (the float32 log-probs the cache is given), the tail field is 1 - (stored mass), and with a byte budget the folded
// entries are the lowest-ranked ones and their mass goes to the tail. The reference is the teacher's float32 output,
// not a float64 softmax: libtorch's float32 log_softmax over 128,256 ids is itself off by up to ~3e-5 in log space
// (a shift shared by the row, from summing the normaliser in float32), which is the teacher's rounding, not the codec's.
using SharpTune.Distillation;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distillation;

public sealed class TopKCodecTests
{
    public TopKCodecTests() => TorchRuntime.EnsureLoaded();

    // libtorch's top-k of log_softmax(logits) in float32 (what the writer is given and stores), row-major.
    private static (long[] Ids, float[] LogProbs) TopK(Tensor logits, int k)
    {
        var (lp, idx) = logits.log_softmax(-1).topk(k);                    // [n, k] each, descending
        return (idx.data<long>().ToArray(), lp.data<float>().ToArray());
    }

    private static (long[] Ids, float[] LogProbs, int Count, float Tail, long Bits) RoundTrip(TopKFormat format, ReadOnlySpan<long> ids, ReadOnlySpan<float> lps)
    {
        var writer = new BitWriter();
        TopKCodec.Encode(writer, format, ids, lps, new TopKCodec.Scratch(format.K));
        var reader = new BitReader(writer.ToArray());
        var outIds = new long[format.K];
        var outLp = new float[format.K];
        var (count, tail) = TopKCodec.Decode(ref reader, format, outIds, outLp);
        Assert.Equal((writer.BitLength + 7) / 8, (reader.Position + 7) / 8);
        return (outIds, outLp, count, tail, writer.BitLength);
    }

    // Checks one decoded position against the reference: the ids are the first `expectedCount` of libtorch's ranking
    // (as a set, since entries within one quantisation step may swap), each probability within the bound of the
    // teacher's (refLps, aligned with refIds), the tail equal to 1 - stored mass to 16-bit precision. Returns the
    // worst relative error.
    private static double AssertMatchesTopK(TopKFormat format, long[] refIds, float[] refLps, int expectedCount,
        (long[] Ids, float[] LogProbs, int Count, float Tail, long Bits) decoded, string where)
    {
        Assert.Equal(expectedCount, decoded.Count);
        Assert.Equal(refIds.Take(expectedCount).Order(), decoded.Ids.Take(decoded.Count).Order());
        var teacher = refIds.Zip(refLps).ToDictionary(x => x.First, x => (double)x.Second);
        var bound = format.RelativeErrorBound;
        double worst = 0, storedMass = 0;
        for (var i = 0; i < decoded.Count; i++)
        {
            var p = Math.Exp(teacher[decoded.Ids[i]]);
            var rel = Math.Abs(Math.Exp(decoded.LogProbs[i]) - p) / p;
            Assert.True(rel <= bound, $"{where} entry {i}: relative error {rel:G4} > bound {bound:G4}");
            worst = Math.Max(worst, rel);
            storedMass += p;
            if (i > 0) Assert.True(decoded.LogProbs[i] <= decoded.LogProbs[i - 1], $"{where}: entries not in descending order");
        }
        for (var i = decoded.Count; i < format.K; i++) Assert.Equal(float.NegativeInfinity, decoded.LogProbs[i]);
        // 1/131070 from the 16-bit field; 1e-6 for float64 sums of at most 128 terms in a different order and the
        // decoded tail's float32 (both below 1e-7)
        Assert.InRange(decoded.Tail - (1 - storedMass), -1.0 / 131_070 - 1e-6, 1.0 / 131_070 + 1e-6);
        return worst;
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(3.0)]
    [InlineData(8.0)]
    public void EncodeDecode_RandomDistributions_ProbabilityErrorWithinStatedBound(double scale)
    {
        // Given random teacher distributions from flat (scale 0.5) to very peaked (scale 8), default format (no folding)
        var format = new TopKFormat(K: 64, Vocab: 1000);
        using var logits = torch.randn(200, 1000, generator: new Generator(7)) * scale;
        var (ids, lps) = TopK(logits, format.K);
        double worst = 0;
        for (var row = 0; row < 200; row++)
        {
            // When one position is encoded and decoded
            var decoded = RoundTrip(format, ids.AsSpan(row * 64, 64), lps.AsSpan(row * 64, 64));
            // Then every top-k id is there, each probability within the bound of the teacher's
            worst = Math.Max(worst, AssertMatchesTopK(format, ids[(row * 64)..(row * 64 + 64)], lps[(row * 64)..(row * 64 + 64)], 64, decoded, $"row {row}"));
        }
        Assert.True(worst > format.RelativeErrorBound / 10, $"worst error {worst:G3} is suspiciously far below the bound: is quantisation active?");
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(4.0)]
    public void EncodeDecode_K128Vocab128256_IdsExactAndProbabilitiesWithinBoundOfLibtorchTopK(double scale)
    {
        // Given real-sized teacher rows: 4 positions of 128,256 random logits, and libtorch's top-128 of each
        var format = new TopKFormat(K: 128, Vocab: 128_256);
        using var logits = torch.randn(4, 128_256, generator: new Generator(11)) * scale;
        var (ids, lps) = TopK(logits, 128);
        for (var row = 0; row < 4; row++)
        {
            // When each is encoded with the default format and decoded
            var decoded = RoundTrip(format, ids.AsSpan(row * 128, 128), lps.AsSpan(row * 128, 128));
            // Then all 128 entries are kept: exactly libtorch's ids, probabilities within the stated bound
            AssertMatchesTopK(format, ids[(row * 128)..(row * 128 + 128)], lps[(row * 128)..(row * 128 + 128)], 128, decoded, $"row {row}");
        }
    }

    [Fact]
    public void Encode_ByteBudget_FoldsLowestRankedEntriesAndTheirMassIntoTheTail()
    {
        // Given 128,256-wide rows and a 150-byte budget (all 128 entries need ~250-300 bytes)
        var format = new TopKFormat(K: 128, Vocab: 128_256, MaxBytesPerToken: 150);
        using var logits = torch.randn(4, 128_256, generator: new Generator(3)) * 2;
        var (ids, lps) = TopK(logits, 128);
        for (var row = 0; row < 4; row++)
        {
            var refIds = ids[(row * 128)..(row * 128 + 128)];
            var refLps = lps[(row * 128)..(row * 128 + 128)];
            // When a position is encoded within the budget
            var writer = new BitWriter();
            var (stored, folded) = TopKCodec.Encode(writer, format, refIds, lps.AsSpan(row * 128, 128), new TopKCodec.Scratch(128));
            Assert.True(writer.BitLength <= 149 * 8, $"row {row}: {writer.BitLength / 8.0} bytes > 149");
            Assert.InRange(stored, 40, 127);
            Assert.Equal(128, stored + folded);
            var reader = new BitReader(writer.ToArray());
            var outIds = new long[128];
            var outLp = new float[128];
            var (count, tail) = TopKCodec.Decode(ref reader, format, outIds, outLp);
            // Then the kept entries are libtorch's highest-ranked ones, within the bound
            AssertMatchesTopK(format, refIds, refLps, stored, (outIds, outLp, count, tail, writer.BitLength), $"row {row}");
            // ... and the folded entries' probability is in the tail: tail = (mass outside the top-128) + (folded mass)
            var outside = 1 - refLps.Sum(lp => Math.Exp(lp));
            var foldedMass = refLps.Skip(stored).Sum(lp => Math.Exp(lp));
            Assert.True(foldedMass > 1e-4, $"row {row}: folded mass {foldedMass:G3} too small to test");
            Assert.InRange(tail - (outside + foldedMass), -1.0 / 131_070 - 1e-6, 1.0 / 131_070 + 1e-6);
            // ... so decoded mass + tail is 1 within the probability bound
            var decodedMass = outLp.Take(count).Sum(lp => Math.Exp(lp));
            Assert.InRange(decodedMass + tail - 1, -format.RelativeErrorBound - 1e-5, format.RelativeErrorBound + 1e-5);
        }
    }

    [Fact]
    public void Encode_MaxLogRatio_FoldsOnlyEntriesFurtherBelowTheTop1()
    {
        var format = new TopKFormat(K: 4, Vocab: 50, MaxLogRatio: 5);
        var writer = new BitWriter();
        var result = TopKCodec.Encode(writer, format, new long[] { 7, 3, 40, 11 }, new[] { -0.1f, -4.9f, -5.2f, -9f }, new TopKCodec.Scratch(4));
        Assert.Equal(new EncodedPosition(2, 2), result);
    }

    [Fact]
    public void Encode_NonFiniteLogProbs_AreNotStoredAndNotCountedAsFolded()
    {
        var format = new TopKFormat(K: 4, Vocab: 50);
        var writer = new BitWriter();
        var result = TopKCodec.Encode(writer, format, new long[] { 7, 3, 40, 11 }, new[] { -0.1f, -2.5f, float.NegativeInfinity, float.NegativeInfinity }, new TopKCodec.Scratch(4));
        Assert.Equal(new EncodedPosition(2, 0), result);
    }

    [Fact]
    public void Decode_TruncatedRecord_ThrowsInvalidData()
    {
        var format = new TopKFormat(K: 8, Vocab: 50);
        var writer = new BitWriter();
        TopKCodec.Encode(writer, format, new long[] { 3, 9, 1 }, new[] { -0.5f, -1.5f, -2f }, new TopKCodec.Scratch(8));
        var bytes = writer.ToArray();
        var ids = new long[8];
        var lps = new float[8];
        Assert.Throws<InvalidDataException>(() =>
        {
            var reader = new BitReader(bytes.AsSpan(0, bytes.Length - 3));
            TopKCodec.Decode(ref reader, format, ids, lps);
        });
    }

    [Fact]
    public void RiceCode_RoundTrips_ManyValues()
    {
        var writer = new BitWriter();
        var values = Enumerable.Range(0, 500).Select(i => (uint)(i * i % 977)).ToArray();
        foreach (var v in values) writer.WriteRice(v, 4);
        writer.WriteRice(100_000, 0); // a unary run longer than one 32-bit chunk
        var reader = new BitReader(writer.ToArray());
        foreach (var v in values) Assert.Equal(v, reader.ReadRice(4));
        Assert.Equal(100_000u, reader.ReadRice(0));
    }
}

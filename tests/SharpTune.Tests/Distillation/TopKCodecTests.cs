// The position encoding of the teacher cache against its stated bounds: every stored probability within a relative
// e^(step/2) - 1 of the exact softmax, every id left out no more probable than the stored ones, the tail field equal to
// 1 - (exact stored mass), and the byte budget (<= 200 bytes/token at k = 128 for a 128,256 vocabulary).
using SharpTune.Distillation;
using SharpTune.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distillation;

public sealed class TopKCodecTests
{
    public TopKCodecTests() => TorchRuntime.EnsureLoaded();

    [Theory]
    [InlineData(0.5)]
    [InlineData(3.0)]
    [InlineData(8.0)]
    public void EncodeDecode_RandomDistributions_ProbabilityErrorWithinStatedBound(double scale)
    {
        // Given random teacher distributions from flat (scale 0.5) to very peaked (scale 8)
        var format = new TopKFormat(K: 64, Vocab: 1000, MaxBytesPerToken: 4096);
        var g = new Generator(7);
        using var logits = torch.randn(200, 1000, generator: g) * scale;
        using var exact = logits.to(ScalarType.Float64).log_softmax(-1);   // [n, v], reference in float64
        var (lp, idx) = logits.log_softmax(-1).topk(format.K);            // [n, K] each
        var ids = idx.data<long>().ToArray();
        var lps = lp.data<float>().ToArray();
        var exactLp = exact.data<double>().ToArray();
        var bound = format.RelativeErrorBound;
        double worst = 0;
        for (var row = 0; row < 200; row++)
        {
            // When one position is encoded and decoded
            var writer = new BitWriter();
            TopKCodec.Encode(writer, format, ids.AsSpan(row * format.K, format.K), lps.AsSpan(row * format.K, format.K), new uint[format.K]);
            var reader = new BitReader(writer.ToArray());
            var outIds = new long[format.K];
            var outLp = new float[format.K];
            var (count, tail) = TopKCodec.Decode(ref reader, format, outIds, outLp);

            // Then each stored probability is within the bound of the exact one, and ids are the teacher's top ones
            Assert.True(count >= 1);
            var storedMass = 0.0;
            var minStored = double.MaxValue;
            for (var i = 0; i < count; i++)
            {
                Assert.Equal(ids[row * format.K + i], outIds[i]);
                var p = Math.Exp(exactLp[row * 1000 + outIds[i]]);
                var rel = Math.Abs(Math.Exp(outLp[i]) - p) / p;
                worst = Math.Max(worst, rel);
                Assert.True(rel <= bound, $"row {row} entry {i}: relative error {rel:G4} > bound {bound:G4}");
                storedMass += p;
                minStored = Math.Min(minStored, p);
            }
            for (var i = count; i < format.K; i++) Assert.Equal(float.NegativeInfinity, outLp[i]);
            // ... everything not stored is no more probable than the least stored id, or below the ratio floor
            var stored = outIds.Take(count).ToHashSet();
            var top = Math.Exp(exactLp[row * 1000 + outIds[0]]);
            for (var v = 0; v < 1000; v++)
                if (!stored.Contains(v))
                    Assert.True(Math.Exp(exactLp[row * 1000 + v]) <= minStored * (1 + 1e-5) || Math.Exp(exactLp[row * 1000 + v]) <= top * Math.Exp(-format.MaxLogRatio) * (1 + 1e-5));
            // ... and the tail field is 1 - exact stored mass to 16-bit precision
            Assert.InRange(tail - (1 - storedMass), -1e-5 - 1e-6, 1e-5 + 1e-6);
        }
        Assert.True(worst > bound / 10, $"worst error {worst:G3} is suspiciously far below the bound {bound:G3}: is quantisation active?");
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(4.0)]
    public void Encode_K128Vocab128256_AtMost200BytesPerPosition(double scale)
    {
        // Given 128,256-wide teacher distributions (flat scale 1: all 128 entries kept would need ~330 bytes)
        var format = new TopKFormat(K: 128, Vocab: 128_256);
        var g = new Generator(11);
        using var logits = torch.randn(16, 128_256, generator: g) * scale;
        var (lp, idx) = logits.log_softmax(-1).topk(128);
        var ids = idx.data<long>().ToArray();
        var lps = lp.data<float>().ToArray();
        var writer = new BitWriter();
        long stored = 0;
        // When the positions are encoded back to back
        for (var row = 0; row < 16; row++)
        {
            var before = writer.BitLength;
            stored += TopKCodec.Encode(writer, format, ids.AsSpan(row * 128, 128), lps.AsSpan(row * 128, 128), new uint[128]);
            // Then no position exceeds the 200-byte budget
            Assert.True(writer.BitLength - before <= 200 * 8, $"position {row}: {(writer.BitLength - before) / 8.0} bytes");
        }
        Assert.True(stored / 16.0 >= 40, $"only {stored / 16.0} ids per position survive the budget");
        Assert.Equal(17, format.IdBits);
    }

    /// <summary>
    /// At k = 64 a 128,256-vocabulary record always fits 200 bytes whole: 59 header bits + 7 count bits + 64 x 17 id
    /// bits leave ~500 bits for 63 Rice-coded gaps whose sum is at most MaxLogRatio / step = 1,280. Checked on the
    /// rows that cost most (gaps spread evenly over the whole ratio window; one gap holding all of it), a flat row and
    /// random rows.
    /// </summary>
    [Fact]
    public void Encode_K64Vocab128256_WorstCaseRowsKeepEveryEntryWithin200Bytes()
    {
        var format = new TopKFormat(K: 64, Vocab: 128_256);
        var rows = new List<float[]>
        {
            Enumerable.Range(0, 64).Select(i => -3f - i * (19.99f / 63)).ToArray(),           // evenly spread gaps
            Enumerable.Range(0, 64).Select(i => i < 63 ? -4f : -23.99f).ToArray(),            // one gap holds it all
            Enumerable.Repeat((float)-Math.Log(128_256), 64).ToArray(),                       // flat
        };
        var g = new Generator(5);
        foreach (var scale in new[] { 0.5, 2.0, 6.0 })
        {
            using var logits = torch.randn(1, 128_256, generator: g) * scale;
            rows.Add(logits.log_softmax(-1).topk(64).values.data<float>().ToArray());
        }
        var ids = Enumerable.Range(0, 64).Select(i => (long)(128_255 - i * 2003)).ToArray();
        foreach (var lps in rows)
        {
            var writer = new BitWriter();
            var stored = TopKCodec.Encode(writer, format, ids, lps, new uint[64]);
            Assert.Equal(64, stored);
            Assert.True(writer.BitLength <= 199 * 8, $"{writer.BitLength / 8.0} bytes");
        }
    }

    [Fact]
    public void Decode_TruncatedRecord_ThrowsInvalidData()
    {
        var format = new TopKFormat(K: 8, Vocab: 50);
        var writer = new BitWriter();
        TopKCodec.Encode(writer, format, new long[] { 3, 9, 1 }, new[] { -0.5f, -1.5f, -2f }, new uint[8]);
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
        var reader = new BitReader(writer.ToArray());
        foreach (var v in values) Assert.Equal(v, reader.ReadRice(4));
    }
}

// The byte-marginal cross-tokenizer loss (Losses/ByteMarginalKdLoss.cs): the teacher's next-byte marginal against a hand
// computation on a made-up 6-piece vocabulary (empty prefix, a mid-piece prefix with a piece that ends at the prefix,
// a byte-fallback piece, a special token that gets no mass), a teacher whose pieces are single bytes reducing it to the
// plain divergence over bytes (LossTestUtil.Reference, written from the definitions), float64 finite differences, and
// clear refusals of a student that is not byte-level.
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Losses;
using SharpTune.Tests.Distillation.CrossTokenizer;
using SharpTune.Tokenizers;
using static SharpTune.Tests.Losses.LossTestUtil;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

public sealed class ByteMarginalKdLossTests
{
    // ids: 0 special, 1 "a", 2 "ab", 3 "ac", 4 "acd", 5 the byte 0xC3
    private static readonly TablePieces s_teacher = new(["[s]", "a", "ab", "ac", "acd", "<0xC3>"]);
    private static readonly long[] s_byteIds = ByteMarginalKdLoss.StudentByteIds(new ByteTokenizer());

    [Fact]
    public void TeacherByteLogProbs_SixPieceVocabulary_EqualsHandComputation()
    {
        // Given teacher logits over the 6 pieces at three rows, and temperature 1.5
        var table = BytePrefixTable.Build(s_teacher);
        var loss = new ByteMarginalKdLoss(table, s_byteIds, ByteMarginalKdLossOptions.Create(temperature: 1.5, chunkSize: 2));
        var t = RandLogits(Seeded(3), 3, 6, dtype: ScalarType.Float64);
        var q = Enumerable.Range(0, 3).Select(r => Softmax(Row(t, r), 1.5)).ToArray();
        ByteTarget[] targets =
        [
            new(0, 0, table.NodeOf(4, 0)), // "acd" from its start: the empty prefix
            new(1, 1, table.NodeOf(4, 1)), // "acd" after "a"
            new(2, 2, table.NodeOf(4, 2)), // "acd" after "ac"
            new(3, 1, table.NodeOf(5, 0)), // the byte piece 0xC3: the empty prefix again
        ];
        Assert.Equal(BytePrefixTable.EmptyPrefix, targets[3].Node);

        var p = loss.TeacherByteLogProbs(t, targets).exp().data<double>().ToArray();

        // Then, by hand: empty prefix: every piece but the special, by first byte ('a' or 0xC3)
        var expected = new double[4, 256];
        var z0 = q[0][1] + q[0][2] + q[0][3] + q[0][4] + q[0][5];
        expected[0, 'a'] = (q[0][1] + q[0][2] + q[0][3] + q[0][4]) / z0;
        expected[0, 0xC3] = q[0][5] / z0;
        // after "a": "ab", "ac", "acd" continue it ("a" itself ends there and is left out)
        var z1 = q[1][2] + q[1][3] + q[1][4];
        expected[1, 'b'] = q[1][2] / z1;
        expected[1, 'c'] = (q[1][3] + q[1][4]) / z1;
        // after "ac": only "acd"
        expected[2, 'd'] = 1;
        var z3 = q[1][1] + q[1][2] + q[1][3] + q[1][4] + q[1][5];
        expected[3, 'a'] = (q[1][1] + q[1][2] + q[1][3] + q[1][4]) / z3;
        expected[3, 0xC3] = q[1][5] / z3;
        for (var i = 0; i < 4; i++)
            for (var b = 0; b < 256; b++)
                Assert.True(Math.Abs(expected[i, b] - p[i * 256 + b]) <= 1e-13, $"target {i} byte 0x{b:X2}: expected {expected[i, b]:R}, got {p[i * 256 + b]:R}");
    }

    [Fact]
    public void PerTarget_TeacherPiecesAreSingleBytes_EqualsTheDivergenceOverBytes()
    {
        // Given a teacher whose text pieces are exactly the 256 bytes (the byte tokenizer: 3 specials + bytes), every
        // target at the empty prefix
        var bytes = new ByteTokenizer();
        var table = BytePrefixTable.Build(bytes);
        var g = Seeded(5);
        var s = RandLogits(g, 5, 259, dtype: ScalarType.Float64);
        var t = RandLogits(g, 4, 259, dtype: ScalarType.Float64);
        ByteTarget[] targets = [new(0, 3, 0), new(2, 0, 0), new(4, 1, 0), new(1, 1, 0)];
        foreach (var o in AllDivergences(temperature: 2.0))
        {
            var loss = new ByteMarginalKdLoss(table, s_byteIds, new ByteMarginalKdLossOptions { Divergence = o, ChunkSize = 3 });
            var (values, usable) = loss.PerTarget(s, t, targets);

            // Then each value is the divergence between the two models' distributions over the byte ids (3..258),
            // each renormalised there: the marginal of a single-byte vocabulary is its distribution over bytes
            Assert.True(usable.all().item<bool>());
            var expected = targets.Select(x => Reference(Row(s, x.StudentRow)[3..], Row(t, x.TeacherRow)[3..], o)).ToArray();
            Close(tensor(expected), values, 1e-10, $"{o.Kind}");
        }
    }

    [Fact]
    public void PerTarget_Gradient_MatchesFiniteDifferences()
    {
        var table = BytePrefixTable.Build(s_teacher);
        var loss = new ByteMarginalKdLoss(table, s_byteIds, ByteMarginalKdLossOptions.Create(temperature: 1.3));
        var g = Seeded(9);
        var s0 = RandLogits(g, 3, 259, dtype: ScalarType.Float64);
        var t = RandLogits(g, 2, 6, dtype: ScalarType.Float64);
        ByteTarget[] targets = [new(0, 0, table.NodeOf(4, 0)), new(1, 1, table.NodeOf(4, 1)), new(2, 0, table.NodeOf(2, 1))];
        CheckGradient(s0, s => loss.PerTarget(s, t, targets).Values.sum());
    }

    [Fact]
    public void PerTarget_PrefixWithNoTeacherMass_ZeroAndMarkedUnusable()
    {
        // Given teacher logits that put all mass on the special token (the other pieces underflow to probability 0)
        var table = BytePrefixTable.Build(s_teacher);
        var loss = new ByteMarginalKdLoss(table, s_byteIds, new ByteMarginalKdLossOptions());
        var t = tensor(new double[] { 0, -1e4, -1e4, -1e4, -1e4, -1e4, 0, 0, 0, 0, 0, 0 }).reshape(2, 6);
        var s = RandLogits(Seeded(4), 2, 259, dtype: ScalarType.Float64).requires_grad_();
        var (values, usable) = loss.PerTarget(s, t, [new(0, 0, 0), new(1, 1, 0)]);
        Assert.Equal([false, true], usable.data<bool>().ToArray());
        Assert.Equal(0.0, values[0].item<double>());
        Assert.True(values[1].item<double>() > 0);
        values.sum().backward();
        Assert.Equal(0.0, s.grad![0].abs().sum().item<double>()); // and no gradient, no NaN
        Assert.False(s.grad!.isnan().any().item<bool>());
    }

    [Fact]
    public void StudentByteIds_StudentWithMultiByteOrMissingBytes_RefusedNamingTheId()
    {
        var multi = Assert.Throws<ArgumentException>(() => ByteMarginalKdLoss.StudentByteIds(new TablePieces(["[s]", "a", "ab"])));
        Assert.Contains("student id 2 is 2 bytes (6162)", multi.Message);
        var missing = Assert.Throws<ArgumentException>(() => ByteMarginalKdLoss.StudentByteIds(new TablePieces(["[s]", "a", "b"])));
        Assert.Contains("no student id spells byte 0x00", missing.Message);
        var twice = Assert.Throws<ArgumentException>(() => ByteMarginalKdLoss.StudentByteIds(new TablePieces(["a", "<0x61>"])));
        Assert.Contains("student ids 0 and 1 both spell byte 0x61", twice.Message);
    }

    [Fact]
    public void BytePrefixTable_PiecesWithoutBytes_InNoNodeAndNoFirstByte()
    {
        var table = BytePrefixTable.Build(new TablePieces(["[s]", "<unk>", "ab", "<0x41>"]));
        Assert.Equal([BytePrefixTable.NoByte, BytePrefixTable.NoByte, 'a', 0x41], table.FirstByte);
        var (pieces, next) = table.Continuations(BytePrefixTable.EmptyPrefix);
        Assert.Equal([2, 3], pieces.ToArray());
        Assert.Equal([(byte)'a', (byte)0x41], next.ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => table.NodeOf(2, 2));
        Assert.Same(BytePrefixTable.For(s_teacher), BytePrefixTable.For(s_teacher));
    }

}

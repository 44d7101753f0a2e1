// ULD and the GOLD hybrid against loop-based float64 implementations written from the definitions (Boizard et al.
// 2024; TRL's GOLDTrainer merge and hybrid split), float64 central finite differences, chunked vs whole, and the
// reduction to ordinary same-vocabulary distillation when both sides use one tokenizer.
using SharpTune.Data.Synthetic;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Losses;
using SharpTune.Tests.Distillation.CrossTokenizer;
using SharpTune.Tests.Tokenizers;
using TorchSharp;
using static SharpTune.Tests.Losses.LossTestUtil;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

public sealed class CrossTokenizerLossTests
{
    // Teacher vocabulary of 9 and student of 7 sharing a, b, d and the special [s]; the rest is unmatched.
    private static readonly TablePieces s_teacher = new(["a", "b", "c", "d", "e", "f", "g", "h", "[s]"]);
    private static readonly TablePieces s_student = new(["b", "a", "x", "y", "d", "z", "[s]"]);
    private static readonly VocabularyMap s_map = VocabularyMap.Build(s_teacher, s_student);
    private static readonly int[] s_tIds = [0, 4, 2, 3, 8];
    private static readonly int[] s_sIds = [1, 2, 3, 4, 5, 0];
    // Spans mixing 2:1, 1:2 and 1:1 groups, and a left-over span with no student token (skipped).
    private static readonly AlignedSpan[] s_spans =
    [
        new(0, 2, 0, 2, 0, 1), new(2, 3, 2, 1, 1, 2), new(3, 4, 3, 1, 3, 1), new(4, 6, 4, 1, 4, 2), new(6, 6, 5, 0, 6, 0),
    ];

    [Theory]
    [InlineData(1.0, 0)]
    [InlineData(1.5, 0)]
    [InlineData(1.0, 3)]
    [InlineData(0.8, 20)]
    public void Uld_RandomLogits_EqualsDirectFloat64Computation(double temperature, int topK)
    {
        var g = Seeded(5);
        var s = RandLogits(g, 6, 7, dtype: ScalarType.Float64);
        var t = RandLogits(g, 6, 11, dtype: ScalarType.Float64);

        var value = new UldLoss(temperature, topK, chunkSize: 4).Forward(s, t);

        var expected = Enumerable.Range(0, 6).Average(i => SortedL1(Softmax(Row(s, i), temperature), Softmax(Row(t, i), temperature), topK));
        // float64 softmax, sort and an 11-term sum: rounding ~1e-15.
        Close(expected, value, 1e-12, "ULD");
        Assert.True(expected > 0.05, "the reference must not be trivially zero");
    }

    [Fact]
    public void Uld_Float32_WithinFloat32Rounding()
    {
        var g = Seeded(6);
        var s = RandLogits(g, 5, 300);
        var t = RandLogits(g, 5, 1000);
        var value = new UldLoss().Forward(s, t);
        var expected = Enumerable.Range(0, 5).Average(i => SortedL1(Softmax(Row(s, i), 1), Softmax(Row(t, i), 1), 0));
        // 1000 terms of magnitude <= 1, each with a few float32 roundings (2^-24 ~ 6e-8): 1e-4 absolute covers it.
        Close(expected, value, 1e-4, "ULD float32");
    }

    [Fact]
    public void Uld_Gradient_MatchesFiniteDifferences()
    {
        var g = Seeded(7);
        var s0 = RandLogits(g, 3, 5, dtype: ScalarType.Float64);
        var t = RandLogits(g, 3, 8, dtype: ScalarType.Float64);
        var loss = new UldLoss(temperature: 1.3, topK: 4);
        CheckGradient(s0, s => loss.Forward(s, t));
    }

    [Fact]
    public void Uld_Mask_AveragesSelectedRowsOnly()
    {
        var g = Seeded(8);
        var s = RandLogits(g, 4, 5, dtype: ScalarType.Float64);
        var t = RandLogits(g, 4, 6, dtype: ScalarType.Float64);
        var loss = new UldLoss();
        var perRow = loss.PerRow(s, t);
        var masked = loss.Forward(s, t, torch.tensor(new[] { true, false, true, false }));
        Close((perRow[0].item<double>() + perRow[2].item<double>()) / 2, masked, 1e-15, "masked mean");
    }

    [Fact]
    public void Gold_IdenticalTokenizers_ReducesExactlyToTheSameVocabularyDivergence()
    {
        // One tokenizer on both sides: the alignment gives one span per token, every id is matched, and the hybrid
        // loss must be the plain divergence, bit for bit.
        var tok = new CharTokenizer();
        const string text = "hello,  world";
        var ids = tok.Encode(text, addBos: true, addEos: true);
        var offsets = TokenOffsets.Compute(tok, text, ids);
        var spans = SpanAlignment.Align(offsets, offsets);
        Assert.All(spans, sp => Assert.Equal((1, 1), (sp.TeacherCount, sp.StudentCount)));
        var map = VocabularyMap.Build(tok, tok);
        var g = Seeded(9);
        var s = RandLogits(g, ids.Count, tok.VocabSize);
        var t = RandLogits(g, ids.Count, tok.VocabSize);
        foreach (var o in AllDivergences(1.5).Append(new DivergenceOptions()))
        {
            var gold = new GoldLoss(map, new GoldLossOptions { Divergence = o });
            Assert.Equal((1.0, 0.0), (gold.MatchedWeight, gold.UnmatchedWeight));

            var value = gold.Forward(s, t, ids, ids, spans);

            var expected = DivergenceMath.PerToken(s, t, o).mean();
            Assert.Equal(expected.item<float>(), value.item<float>());
        }
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Gold_RealSentencePieceWithItself_MapIsIdentity()
    {
        Assert.True(VocabularyMap.Build(TokenizerFiles.Tok512, TokenizerFiles.Tok512).IsIdentity);
    }

    [Theory]
    [InlineData(DivergenceKind.ForwardKl, 1.0, 0, null)]
    [InlineData(DivergenceKind.Jsd, 1.4, 0, null)]
    [InlineData(DivergenceKind.ReverseKl, 1.0, 2, 0.6)]
    public void Gold_MergedSpansAndPartialMap_EqualsDirectFloat64Computation(DivergenceKind kind, double temperature, int topK, double? matchedWeight)
    {
        var g = Seeded(10);
        var s = RandLogits(g, s_sIds.Length, s_student.VocabSize, dtype: ScalarType.Float64);
        var t = RandLogits(g, s_tIds.Length, s_teacher.VocabSize, dtype: ScalarType.Float64);
        var o = new DivergenceOptions { Kind = kind, Temperature = temperature, Beta = 0.3 };
        var options = new GoldLossOptions
        {
            Divergence = o, UldTopK = topK, MatchedWeight = matchedWeight, UnmatchedWeight = matchedWeight is { } w ? 1.5 - w : null,
        };
        var gold = new GoldLoss(s_map, options);

        var value = gold.Forward(s, t, s_sIds, s_tIds, s_spans);

        var expected = ReferenceGold(s, t, o, topK, matchedWeight ?? 4.0 / 9, matchedWeight is { } m ? 1.5 - m : 5.0 / 9);
        Close(expected, value, 1e-12, "GOLD");
    }

    [Fact]
    public void Gold_Gradient_MatchesFiniteDifferences()
    {
        var g = Seeded(11);
        var s0 = RandLogits(g, s_sIds.Length, s_student.VocabSize, dtype: ScalarType.Float64);
        var t = RandLogits(g, s_tIds.Length, s_teacher.VocabSize, dtype: ScalarType.Float64);
        var gold = new GoldLoss(s_map, new GoldLossOptions { Divergence = new DivergenceOptions { Kind = DivergenceKind.Jsd, Temperature = 1.2 } });
        CheckGradient(s0, s => gold.Forward(s, t, s_sIds, s_tIds, s_spans));
    }

    [Fact]
    public void Gold_ChunkOfOneSpan_EqualsOneChunk()
    {
        var g = Seeded(12);
        var s = RandLogits(g, s_sIds.Length, s_student.VocabSize);
        var t = RandLogits(g, s_tIds.Length, s_teacher.VocabSize);
        var whole = new GoldLoss(s_map, new GoldLossOptions()).Forward(s, t, s_sIds, s_tIds, s_spans);
        var chunked = new GoldLoss(s_map, new GoldLossOptions { ChunkSize = 1 }).Forward(s, t, s_sIds, s_tIds, s_spans);
        // Same per-span arithmetic; only the mean's summation order may differ: a few float32 ulps.
        Close(whole, chunked, 1e-6, "chunked");
    }

    [Fact]
    public void Gold_LogitsOfTheWrongVocabulary_ClearError()
    {
        var s = torch.zeros(s_sIds.Length, 9);
        var t = torch.zeros(s_tIds.Length, s_teacher.VocabSize);
        var e = Assert.Throws<ArgumentException>(() => new GoldLoss(s_map, new GoldLossOptions()).Forward(s, t, s_sIds, s_tIds, s_spans));
        Assert.Contains("student logits are [6, 9], expected [6, 7]", e.Message);
    }

    private static double ReferenceGold(Tensor s, Tensor t, DivergenceOptions o, int topK, double wm, double wu)
    {
        var total = 0.0;
        var count = 0;
        foreach (var span in s_spans.Where(x => x.IsPaired))
        {
            var sFirst = Row(s, span.StudentStart);
            var tFirst = Row(t, span.TeacherStart);
            var matched = Reference(
                [.. s_map.StudentIds.Select(i => sFirst[i])], [.. s_map.TeacherIds.Select(i => tFirst[i])], o);
            var pS = Merge(s, s_sIds, span.StudentStart, span.StudentCount, o.Temperature);
            var pT = Merge(t, s_tIds, span.TeacherStart, span.TeacherCount, o.Temperature);
            var uS = Enumerable.Range(0, pS.Length).Where(i => !s_map.StudentIds.Contains(i)).Select(i => pS[i]).ToArray();
            var uT = Enumerable.Range(0, pT.Length).Where(i => !s_map.TeacherIds.Contains(i)).Select(i => pT[i]).ToArray();
            total += wm * matched + wu * SortedL1(uS, uT, topK);
            count++;
        }
        return total / count;
    }

    // TRL's merge: softmax of the first row times the (floored) probabilities of the span's other tokens.
    private static double[] Merge(Tensor logits, int[] ids, int start, int count, double temperature)
    {
        var factor = 1.0;
        for (var j = start + 1; j < start + count; j++) factor *= Math.Max(Softmax(Row(logits, j), temperature)[ids[j]], 1e-8);
        return [.. Softmax(Row(logits, start), temperature).Select(p => p * factor)];
    }

    private static double SortedL1(double[] a, double[] b, int topK)
    {
        var width = topK > 0 ? topK : Math.Max(a.Length, b.Length);
        double[] Prep(double[] x) => [.. x.OrderByDescending(v => v).Take(width).Concat(Enumerable.Repeat(0.0, width)).Take(width)];
        var (pa, pb) = (Prep(a), Prep(b));
        return Enumerable.Range(0, width).Sum(i => Math.Abs(pa[i] - pb[i]));
    }
}

// The per-batch side of cross-tokenizer distillation: re-tokenizing student windows with the teacher's tokenizer
// (windows cut inside a multi-byte character, special tokens and a sampled pad, bytes that are not UTF-8 and characters
// the teacher cannot spell inside a sequence, a SentencePiece student's dummy prefix, the real
// stories260K tok512 model against the byte tokenizer), the rows each span uses, and ULD through the batch path with one
// tokenizer on both sides against UldLoss on the same rows computed directly.
using System.Text;
using SharpTune.Data;
using SharpTune.Data.Synthetic;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Losses;
using SharpTune.Tests.Tokenizers;
using SharpTune.Tokenizers;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distillation.CrossTokenizer;

public sealed class CrossTokenizerKdTests
{

    // Two byte-tokenized SFT samples: BOS + prompt unlabelled, answer + EOS labelled.
    private static Sample[] SftSamples()
    {
        Sample Make(string prompt, string answer)
        {
            var p = Bytes.Encode(prompt, addBos: true, addEos: false);
            var a = Bytes.Encode(answer, addBos: false, addEos: true);
            int[] tokens = [.. p, .. a];
            return new Sample(tokens, Sample.ShiftedLabels(tokens, [.. tokens.Select((_, i) => i < p.Count)]));
        }
        return [Make("Q: 2+2?", " 4"), Make("Hi", " there, friend")];
    }
    private static readonly ByteTokenizer Bytes = new();

    [Fact]
    public void Retokenize_ByteWindowCutInsideCharacters_LeavesOutTheCutCharactersBytes()
    {
        // "日本a é" is E6 97 A5 | E6 9C AC | 61 | 20 | C3 A9; the window starts at the second byte of 日 and ends after
        // the first byte of é
        var all = Bytes.Encode("日本a é", addBos: false, addEos: false);
        var window = all.Skip(1).Take(all.Count - 2).ToList(); // 97 A5 E6 9C AC 61 20 C3
        var re = new TeacherRetokenizer(Bytes, Bytes).Retokenize(window);

        // then the teacher reads "本a " and the tokens of the cut 日 (2) and é (1) are in no span
        Assert.Equal("本a ", Bytes.Decode(re.TeacherIds));
        Assert.Equal(3, re.UnalignedStudentTokens);
        Assert.Null(re.Problem);
        Assert.Equal([(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)], re.Spans.Select(s => (s.StudentStart, s.StudentCount)));
        Assert.All(re.Spans, s => Assert.Equal(window[s.StudentStart], re.TeacherIds[s.TeacherStart]));
    }

    [Fact]
    public void Retokenize_BosAndEos_BecomeTheTeachersOwnAndAlignOneToOne()
    {
        var chars = new CharTokenizer();
        var student = Bytes.Encode("ab", addBos: true, addEos: true); // BOS 'a' 'b' EOS
        var re = new TeacherRetokenizer(Bytes, chars).Retokenize(student);
        Assert.Equal(chars.Encode("ab", addBos: true, addEos: true), re.TeacherIds);
        Assert.Equal(4, re.Spans.Length);
        Assert.All(re.Spans, s => Assert.Equal((s.StudentStart, 1, 1), (s.TeacherStart, s.TeacherCount, s.StudentCount)));
        Assert.Equal(0, re.UnalignedStudentTokens);
    }

    [Fact]
    public void Retokenize_PadInsideASampledSequence_BecomesTheTeachersPad()
    {
        // Given a sequence a student sampled with its pad id in the middle: BOS 'a' PAD 'b' EOS
        var chars = new CharTokenizer();
        int[] student = [Bytes.BosId, 'a' + 3, Bytes.PadId, 'b' + 3, Bytes.EosId];
        var re = new TeacherRetokenizer(Bytes, chars).Retokenize(student);

        // Then the teacher reads its own pad there (the special of the same name), and every token is paired one to one
        Assert.Equal([chars.BosId, chars.Encode("a", false, false)[0], chars.PadId, chars.Encode("b", false, false)[0], chars.EosId], re.TeacherIds);
        Assert.Equal(0, re.UnalignedStudentTokens);
        Assert.Equal([0, 1, 2, 3, 4], re.Spans.Select(s => s.StudentStart));
        Assert.Equal([0, 1, 2, 3, 4], re.Spans.Select(s => s.TeacherStart));
    }

    [Fact]
    public void Retokenize_CharactersTheTeacherCannotSpell_LeftOutAndTheTextAroundThemAligned()
    {
        // Given BOS 'a' C3 A9 'b' ' ' 'c': é (C3 A9) is not in the char tokenizer's alphabet
        var chars = new CharTokenizer();
        var student = Bytes.Encode("aéb c", addBos: true, addEos: false);
        var re = new TeacherRetokenizer(Bytes, chars).Retokenize(student);

        // Then the teacher reads "a" and "b c" one after the other (without the é), the two bytes of é are in no span,
        // and every other student token is paired with the teacher's token of its character
        Assert.Equal(chars.Encode("ab c", addBos: true, addEos: false), re.TeacherIds);
        Assert.Equal(2, re.UnalignedStudentTokens);
        Assert.Contains("not in the demo tokenizer's alphabet", re.Problem);
        Assert.Equal([0, 1, 4, 5, 6], re.Spans.Select(s => s.StudentStart));
        Assert.Equal([0, 1, 2, 3, 4], re.Spans.Select(s => s.TeacherStart));
        Assert.All(re.Spans, s => Assert.Equal((1, 1), (s.TeacherCount, s.StudentCount)));
    }

    [Fact]
    public void Retokenize_SampledBytesThatAreNotUtf8_LeftOutAndTheTextAroundThemAligned()
    {
        // Given what a byte-level student can sample: BOS 'h' 'i' FF (never UTF-8) ' ' E2 (a lead byte whose continuation
        // never comes) 'x' 80 (a stray continuation byte) 'y'
        byte[] text = [(byte)'h', (byte)'i', 0xFF, (byte)' ', 0xE2, (byte)'x', 0x80, (byte)'y'];
        int[] student = [Bytes.BosId, .. text.Select(b => b + 3)];
        var re = new TeacherRetokenizer(Bytes, Bytes).Retokenize(student);

        // Then the teacher reads the text around the three bad bytes ("hi", " ", "x", "y"), they are in no span, and
        // every other student token is paired with the teacher's same token
        Assert.Equal(new[] { Bytes.BosId }.Concat(Bytes.Encode("hi xy", addBos: false, addEos: false)), re.TeacherIds);
        Assert.Equal(3, re.UnalignedStudentTokens);
        Assert.Contains("not valid UTF-8", re.Problem);
        Assert.Equal([0, 1, 2, 4, 6, 8], re.Spans.Select(s => s.StudentStart));
        Assert.All(re.Spans, s => Assert.Equal(student[s.StudentStart], re.TeacherIds[s.TeacherStart]));
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Retokenize_Tok512TeacherByteStudent_SpansCoverTheWindowAndTeacherSpellsItsText()
    {
        var sp = TokenizerFiles.Tok512;
        const string text = "Once upon a time, a little bear named Tim went   to the café.\nHe was happy.";
        var student = Bytes.Encode(text, addBos: true, addEos: true);
        var re = new TeacherRetokenizer(Bytes, sp).Retokenize(student);

        // the teacher's tokens are its own encoding of the text, behind its BOS and before its EOS
        Assert.Equal([.. sp.Encode(text, addBos: true, addEos: true)], re.TeacherIds);
        Assert.Equal(0, re.UnalignedStudentTokens);
        // spans tile the student sequence, and each span's teacher tokens spell what its student bytes spell
        Assert.Equal(student.Count, re.Spans.Sum(s => s.StudentCount));
        foreach (var s in re.Spans.Where(s => s.ByteEnd > s.ByteStart))
            Assert.Equal(
                Bytes.Decode(student.Skip(s.StudentStart).Take(s.StudentCount)).TrimStart(' '),
                sp.Decode(re.TeacherIds.Skip(s.TeacherStart).Take(s.TeacherCount)).TrimStart(' '));
        Assert.Contains(re.Spans, s => s.TeacherCount == 1 && s.StudentCount > 3); // whole-word pieces against bytes
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Retokenize_SentencePieceStudent_DummyPrefixDroppedBeforeTheTeacherReads()
    {
        var sp = TokenizerFiles.Tok512;
        var student = sp.Encode("Once upon", addBos: true, addEos: false);
        var re = new TeacherRetokenizer(sp, Bytes).Retokenize(student);
        Assert.Equal("Once upon", Bytes.Decode(re.TeacherIds));
        Assert.Equal(0, re.UnalignedStudentTokens);
    }

    [Fact]
    public void Prepare_TextStreamWindow_TeacherReadsTheWindowAndSpansPredictTheNextToken()
    {
        // Given a text-stream window (its last label is the next window's first token) through one tokenizer
        var stream = new TextStreamDataset(Bytes, ["abcdefgh"], window: 4);
        var sample = stream[1]; // the stream is BOS a b c d e f g h EOS: window 1 is "defg", its labels "efgh"
        var kd = new CrossTokenizerKd(Bytes, Bytes, new UldLoss(), null, teacherMaxSeqLen: 64);
        var batch = kd.Prepare([sample], CPU);

        // then the teacher reads exactly the student's tokens, and rows 0..3 predict tokens 1..4 of tokens + next
        Assert.Equal(sample.Tokens.Select(t => (long)t), batch.TeacherTokens[0].data<long>().ToArray());
        Assert.Equal(4, batch.TrainedTokens);
        Assert.Equal(4, batch.AlignedTokens);
    }

    [Fact]
    public void Sum_UldWithOneTokenizerOnBothSides_EqualsUldLossOnTheTrainedRows()
    {
        // Given two SFT-style samples (prompt masked) and random logits over the byte vocabulary
        var samples = SftSamples();
        var uld = new UldLoss(temperature: 1.5, topK: 0, chunkSize: 3);
        var kd = new CrossTokenizerKd(Bytes, Bytes, uld, null, teacherMaxSeqLen: 64);
        var batch = kd.Prepare(samples, CPU);
        var s = samples.Max(x => x.Tokens.Length);
        manual_seed(7);
        var student = randn(2, s, 264, dtype: ScalarType.Float64).requires_grad_(); // padded beyond 259 ids: cut off
        var teacher = randn(2, batch.TeacherTokens.shape[1], 259, dtype: ScalarType.Float64);

        var sum = kd.Sum(student, teacher, batch);

        // Then it is UldLoss summed over the rows with labels (row r of both models predicts token r + 1)
        var expected = 0.0;
        var trained = 0;
        for (var i = 0; i < 2; i++)
            for (var r = 0; r < samples[i].Labels.Length; r++)
            {
                if (samples[i].Labels[r] == Sample.IgnoreIndex) continue;
                trained++;
                expected += uld.PerRow(student[i, r].narrow(0, 0, 259).unsqueeze(0), teacher[i, r].unsqueeze(0)).item<double>();
            }
        Assert.Equal(trained, batch.AlignedTokens);
        Assert.Equal(expected, sum.item<double>(), 1e-12);
        sum.backward();
        Assert.NotNull(student.grad);
    }

    [Fact]
    public void Sum_ByteMarginalWithOneByteTokenizerOnBothSides_EqualsForwardKlOverBytesOnTheTrainedByteRows()
    {
        // Given the SFT-style samples of the ULD case and the byte-marginal loss at T = 1.5, one byte tokenizer on both sides
        var samples = SftSamples();
        var options = ByteMarginalKdLossOptions.Create(temperature: 1.5, chunkSize: 4);
        var kd = new CrossTokenizerKd(Bytes, Bytes, options, null, teacherMaxSeqLen: 64);
        var batch = kd.Prepare(samples, CPU);
        var s = samples.Max(x => x.Tokens.Length);
        manual_seed(7);
        var student = randn(2, s, 264, dtype: ScalarType.Float64).requires_grad_(); // padded beyond 259 ids: cut off
        var teacher = randn(2, batch.TeacherTokens.shape[1], 261, dtype: ScalarType.Float64);

        var sum = kd.Sum(student, teacher, batch);

        // Then every trained row whose label is a byte (not the EOS) is a target, and the sum is forward KL between the
        // two distributions over the byte ids 3..258 (a single-byte teacher's marginal is its distribution over bytes)
        var expected = 0.0;
        var rows = 0;
        for (var i = 0; i < 2; i++)
            for (var r = 0; r < samples[i].Labels.Length; r++)
            {
                if (samples[i].Labels[r] is Sample.IgnoreIndex or 2) continue;
                rows++;
                expected += Tests.Losses.LossTestUtil.Reference(
                    student[i, r].narrow(0, 3, 256).detach().data<double>().ToArray(), teacher[i, r].narrow(0, 3, 256).data<double>().ToArray(),
                    options.Divergence);
            }
        Assert.Equal(rows, batch.AlignedTokens);
        Assert.Equal(rows + 2, batch.TrainedTokens); // the two EOS labels
        Assert.Equal(expected, sum.item<double>(), 1e-10);
        sum.backward();
        Assert.NotNull(student.grad);
    }

    [Fact]
    public void Constructor_ByteMarginalWithStudentThatIsNotByteLevel_Refused()
    {
        var e = Assert.Throws<ArgumentException>(() => new CrossTokenizerKd(new CharTokenizer(), Bytes, ByteMarginalKdLossOptions.Create(), null, 64));
        Assert.Contains("needs a student whose tokens are single bytes", e.Message);
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Prepare_ByteMarginalTok512Teacher_TargetsPointAtThePieceAndPrefixOfEachByte()
    {
        // Given a byte student and the real 512-piece SentencePiece teacher on a sentence with a BOS
        var sp = TokenizerFiles.Tok512;
        const string text = "Once upon a time, a little bear went to the café.";
        var student = Bytes.Encode(text, addBos: true, addEos: true);
        var sample = new Sample([.. student.SkipLast(1)], [.. student.Skip(1)]);
        var kd = new CrossTokenizerKd(Bytes, sp, ByteMarginalKdLossOptions.Create(), null, teacherMaxSeqLen: 256);
        var batch = kd.Prepare([sample], CPU);

        // Then every byte of the text is a target (the BOS row predicts the first piece, "▁Once", whose dummy-prefix
        // space the text lacks), EOS is not, and each target's prefix is the bytes of its piece before the byte
        var teacherIds = sp.Encode(text, addBos: true, addEos: true);
        var targets = batch.Rows[0].ByteTargets!;
        Assert.Equal(Encoding.UTF8.GetByteCount(text), targets.Length);
        Assert.Equal(targets.Length, batch.AlignedTokens);
        var table = kd.ByteMarginal!.Table;
        var pieceStart = 0;
        for (var k = 0; k < targets.Length; k++)
        {
            var piece = teacherIds[targets[k].TeacherRow + 1];
            var bytes = table.BytesOf(piece).ToArray();
            if (k == 0 || targets[k].TeacherRow != targets[k - 1].TeacherRow) pieceStart = k;
            var shift = k < bytes.Length && bytes[0] == (byte)' ' && targets[k].TeacherRow == 0 ? 1 : 0; // "▁Once"
            Assert.Equal(table.NodeOf(piece, k - pieceStart + shift), targets[k].Node);
            Assert.Equal((byte)(student[k + 1] - 3), bytes[k - pieceStart + shift]);
        }
    }
}

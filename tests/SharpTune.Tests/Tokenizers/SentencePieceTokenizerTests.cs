using System.Text;
using SharpTune.Tokenizers;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Tokenizers;

public sealed class SentencePieceTokenizerTests
{
    [SharedDataFact(Tok512Model, Tok512Bin)]
    public void Vocabulary_Tok512_MatchesLlama2cExport()
    {
        var bin = Llama2cVocab.Read(SharedData.PathOf(Tok512Bin), 512);
        var t = TokenizerFiles.Tok512;
        Assert.Equal(512, t.VocabSize);
        var byId = t.Vocabulary.ToDictionary(kv => kv.Value, kv => kv.Key);
        for (var id = 3; id < 512; id++) // llama2.c writes <unk>, "\n<s>\n", "\n</s>\n" for 0..2
            Assert.Equal(bin.Pieces[id], Encoding.UTF8.GetBytes(byId[id].Replace('\u2581', ' ')));
        Assert.Equal((1, 2), (t.BosId, t.EosId));
    }

    [SharedDataTheory(Tok512Model, Tok512Bin, Alpaca)]
    [InlineData(Tok512Model, Tok512Bin, 512)]
    [InlineData(Llama2Model, Llama2Bin, 32_000)]
    public void Encode_AlpacaAndUnicode_MatchesLlama2cEncoder(string model, string bin, int vocabSize)
    {
        var reference = Llama2cVocab.Read(SharedData.PathOf(bin), vocabSize);
        var t = model == Tok512Model ? TokenizerFiles.Tok512 : TokenizerFiles.Llama2;
        var texts = TestText.AlpacaStrings.Where((_, i) => i % (vocabSize > 1000 ? 400 : 40) == 0).Concat(TestText.UnicodeEdgeCases.Where(s => s.Trim().Length > 0));
        foreach (var raw in texts)
        {
            // run.c skips SentencePiece's normalizer; tok512.model sets remove_extra_whitespaces (strip, collapse
            // runs of spaces), which sentencepiece applies before BPE, so the reference gets the normalized text.
            var text = t.Model.RemoveExtraWhitespaces ? string.Join(' ', raw.Split(' ', StringSplitOptions.RemoveEmptyEntries)) : raw;
            var expected = reference.Encode(text);
            var actual = t.Encode(raw, addBos: true, addEos: false);
            var at = Enumerable.Range(0, Math.Min(expected.Count, actual.Count)).FirstOrDefault(i => expected[i] != actual[i], Math.Min(expected.Count, actual.Count));
            Assert.True(expected.SequenceEqual(actual),
                $"'{text}': first difference at {at}: llama2.c {string.Join(",", expected.Skip(Math.Max(0, at - 3)).Take(8))} vs {string.Join(",", actual.Skip(Math.Max(0, at - 3)).Take(8))}");
            Assert.Equal(text, t.Decode(actual));
        }
    }

    [SharedDataFact(Llama2Model)]
    public void TokenizeMessages_Llama2ChatTemplate_InstFormat()
    {
        var t = Llama2Tokenizer.FromModel(SharedData.PathOf(Llama2Model), promptTemplate: "llama2_chat");
        var r = t.TokenizeMessages(
        [
            new Message("system", "Be brief.", Masked: true), new Message("user", "Hi?", Masked: true), new Message("assistant", "Hello."),
            new Message("user", "Bye?", Masked: true), new Message("assistant", "Bye."),
        ]);
        Assert.Equal(1, r.Tokens[0]);
        Assert.Equal(2, r.Tokens[^1]);
        Assert.Equal(2, r.Tokens.Count(id => id == 1));
        Assert.Equal("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. [INST] Bye? [/INST] Bye.", t.Decode(r.Tokens));
        var secondBos = Array.LastIndexOf(r.Tokens, 1);
        Assert.False(r.Mask[secondBos - 1]); // EOS of the first answer is trained on
        Assert.True(r.Mask[secondBos + 1]);
    }

    [SharedDataFact(Llama2Model)]
    public void Loader_Llama2Folder_DetectsSentencePiece()
    {
        var t = TokenizerLoader.Load(SharedData.PathOf("tokenizers/llama2"));
        Assert.IsType<Llama2Tokenizer>(t);
        Assert.Equal(32_000, t.VocabSize);
        Assert.Equal([1, 15043, 3186], t.Encode("Hello world", addBos: true, addEos: false));
    }

    /// <summary>Loads <paramref name="bytes"/> as a tokenizer.model: null when it loads, else the error, which must name the file.</summary>
    private static Exception? LoadMutant(string dir, byte[] bytes)
    {
        var path = Path.Combine(dir, "tokenizer.model");
        File.WriteAllBytes(path, bytes);
        try
        {
            var t = TokenizerLoader.Load(path);
            t.Decode(t.Encode("Once upon a time, a tiny robot found 42 \u00e9clairs."));
            return null;
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException)
        {
            Assert.Contains(path, e.Message);
            Assert.DoesNotContain('\n', e.Message);
            return e;
        }
    }

    [Fact]
    public void Load_RandomBytes_ThrowsNamingFile()
    {
        var dir = Directory.CreateTempSubdirectory("sharptune-spm-").FullName;
        try
        {
            var random = new Random(512);
            foreach (var size in new[] { 0, 1, 2, 7, 64, 300, 4096, 65_536 }.Concat(Enumerable.Range(0, 40).Select(_ => random.Next(1, 8192))))
            {
                var garbage = new byte[size];
                random.NextBytes(garbage);
                Assert.NotNull(LoadMutant(dir, garbage));
            }
            // A piece whose length varint exceeds int.MaxValue (it used to escape as OverflowException).
            Assert.NotNull(LoadMutant(dir, [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]));
            // Text where a binary model was expected; a first line "token rank" makes it look like tiktoken.
            foreach (var text in new[] { "garbage\n", "<html>404 Not Found</html>\n", "hello 1\n", "IQ== 0\n", "IQ== 0\nIQ== 1\n", "IQ== 5\nIg== 2\n", "IQ== 99999999999\n" })
                Assert.NotNull(LoadMutant(dir, Encoding.UTF8.GetBytes(text)));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [SharedDataFact(Tok512Model)]
    public void Load_Tok512TruncatedOrFlipped_LoadsOrThrowsNamingFile()
    {
        // No checksum protects a tokenizer.model, so a flipped byte inside a piece may load as another piece; what must
        // not happen is an exception that does not name the file. Every truncation must fail: the specs come last.
        var dir = Directory.CreateTempSubdirectory("sharptune-spm-").FullName;
        try
        {
            var whole = File.ReadAllBytes(SharedData.PathOf(Tok512Model));
            var random = new Random(260);
            for (var i = 0; i < 60; i++)
            {
                var length = i < 10 ? whole.Length - 1 - i : random.Next(whole.Length);
                Assert.True(LoadMutant(dir, whole[..length]) is not null, $"truncated to {length} of {whole.Length} bytes, it loaded");
            }
            for (var i = 0; i < 200; i++)
            {
                var flipped = (byte[])whole.Clone();
                flipped[random.Next(flipped.Length)] = (byte)random.Next(256);
                LoadMutant(dir, flipped);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>llama2.c's tokenizer.bin and its encoder (run.c `encode`), as an independent reference.</summary>
internal sealed class Llama2cVocab
{
    public required byte[][] Pieces { get; init; }
    public required float[] Scores { get; init; }
    private Dictionary<string, int> Lookup { get; init; } = [];

    public static Llama2cVocab Read(string path, int vocabSize)
    {
        using var r = new BinaryReader(File.OpenRead(path));
        r.ReadInt32(); // max_token_length
        var pieces = new byte[vocabSize][];
        var scores = new float[vocabSize];
        for (var i = 0; i < vocabSize; i++)
        {
            scores[i] = r.ReadSingle();
            pieces[i] = r.ReadBytes(r.ReadInt32());
        }
        Assert.Equal(r.BaseStream.Length, r.BaseStream.Position);
        var lookup = new Dictionary<string, int>();
        for (var i = 0; i < vocabSize; i++) lookup.TryAdd(Encoding.Latin1.GetString(pieces[i]), i);
        return new Llama2cVocab { Pieces = pieces, Scores = scores, Lookup = lookup };
    }

    /// <summary>BOS, dummy " " prefix, one token per UTF-8 code point (byte fallback +3), then best-score pair merges.</summary>
    public List<int> Encode(string text)
    {
        var tokens = new List<int> { 1 };
        var bytes = Encoding.UTF8.GetBytes(text);
        if (bytes.Length > 0) tokens.Add(Lookup[" "]);
        for (var i = 0; i < bytes.Length;)
        {
            var len = 1;
            while (i + len < bytes.Length && (bytes[i + len] & 0xC0) == 0x80 && len < 4) len++;
            if (Lookup.TryGetValue(Encoding.Latin1.GetString(bytes, i, len), out var id)) tokens.Add(id);
            else for (var j = 0; j < len; j++) tokens.Add(bytes[i + j] + 3);
            i += len;
        }
        while (true)
        {
            var bestScore = float.NegativeInfinity; var bestId = -1; var bestIdx = -1;
            for (var i = 1; i + 1 < tokens.Count; i++)
            {
                var merged = Encoding.Latin1.GetString([.. Pieces[tokens[i]], .. Pieces[tokens[i + 1]]]);
                if (Lookup.TryGetValue(merged, out var id) && Scores[id] > bestScore) { bestScore = Scores[id]; bestId = id; bestIdx = i; }
            }
            if (bestIdx < 0) break;
            tokens[bestIdx] = bestId;
            tokens.RemoveAt(bestIdx + 1);
        }
        return tokens;
    }
}

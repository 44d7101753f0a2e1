using System.Diagnostics;
using System.Text;
using SharpTune.Tokenizers;
using Xunit.Abstractions;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Tokenizers;

public sealed class Llama3TokenizerTests(ITestOutputHelper output)
{
    [SharedDataFact(Llama3Json)]
    public void Encode_IssueSentence_GivesPublishedIds()
    {
        var ids = TokenizerFiles.Llama3.Encode("Hello world! Below is an instruction that describes a task.", addBos: false, addEos: false);
        Assert.Equal([9906, 1917, 0, 21883, 374, 459, 7754, 430, 16964, 264, 3465, 13], ids);
    }

    [SharedDataFact(Llama3Json)]
    public void Encode_DefaultFlags_AddsBosAndEos()
    {
        var ids = TokenizerFiles.Llama3.Encode("Hello");
        Assert.Equal([128_000, 9906, 128_001], ids);
    }

    [SharedDataFact(Llama3Json)]
    public void SpecialIds_Llama3_MatchModelCard()
    {
        var t = TokenizerFiles.Llama3;
        Assert.Equal((128_000, 128_001, 128_004, 128_256), (t.BosId, t.EosId, t.PadId, t.VocabSize));
        Assert.Equal(128_006, t.SpecialTokens["<|start_header_id|>"]);
        Assert.Equal(128_007, t.SpecialTokens["<|end_header_id|>"]);
        Assert.Equal(128_009, t.SpecialTokens["<|eot_id|>"]);
        Assert.Contains(128_009, t.StopTokens);
    }

    [SharedDataFact(Llama3Json)]
    public void Encode_SpecialTokenStringsInText_StayPlainText()
    {
        var t = TokenizerFiles.Llama3;
        const string text = "a <|eot_id|> b <|begin_of_text|>";
        var ids = t.Encode(text, addBos: false, addEos: false);
        Assert.DoesNotContain(ids, t.IsSpecial);
        Assert.Equal(text, t.Decode(ids, skipSpecialTokens: false));
    }

    [SharedDataFact(Llama3Json, Alpaca)]
    public void Decode_AlpacaStrings_RoundTrips()
    {
        // Every third field of every shard (Qwen2's test takes another third), to keep the suite fast on small machines.
        var t = TokenizerFiles.Llama3;
        var texts = TestText.AlpacaStrings.Where((_, i) => i % 3 == 0).ToList();
        var sw = Stopwatch.StartNew();
        long tokens = 0, chars = 0;
        var encoded = new IReadOnlyList<int>[texts.Count];
        for (var i = 0; i < texts.Count; i++)
        {
            encoded[i] = t.Encode(texts[i], addBos: false, addEos: false);
            tokens += encoded[i].Count;
            chars += texts[i].Length;
        }
        sw.Stop();
        output.WriteLine($"Llama 3: encoded {texts.Count} Alpaca strings ({chars} chars) into {tokens} tokens in {sw.Elapsed.TotalSeconds:F2} s ({tokens / sw.Elapsed.TotalSeconds:F0} tokens/s)");
        var failures = Enumerable.Range(0, texts.Count).Where(i => t.Decode(encoded[i]) != texts[i]).Take(3).ToList();
        Assert.True(failures.Count == 0, "round trip failed for: " + string.Join(" | ", failures.Select(i => texts[i])));
        Assert.True(texts.Count > 40_000, $"expected a third of the ~50k Alpaca records' fields, read {texts.Count}");
    }

    [SharedDataFact(Llama3Json)]
    public void Decode_UnicodeEdgeCases_RoundTrips()
    {
        var t = TokenizerFiles.Llama3;
        foreach (var text in TestText.UnicodeEdgeCases)
            Assert.Equal(text, t.Decode(t.Encode(text, addBos: false, addEos: false)));
    }

    [SharedDataFact(Llama3Json)]
    public void Encode_LongRuns_SplitAsPreTokenizerDefines()
    {
        var t = TokenizerFiles.Llama3;
        // Llama 3 groups digits in threes: "1234567" -> "123" "456" "7".
        var ids = t.Encode("1234567", addBos: false, addEos: false);
        Assert.Equal(["123", "456", "7"], ids.Select(id => t.Decode([id])));
        var spaces = t.Encode("a" + new string(' ', 100) + "b", addBos: false, addEos: false);
        Assert.Equal("a" + new string(' ', 100) + "b", t.Decode(spaces));
    }

    [SharedDataFact(Llama3Json)]
    public void TokenizeMessages_UserAssistant_MatchesPublishedHeaderFormat()
    {
        var t = TokenizerFiles.Llama3;
        var result = t.TokenizeMessages([new Message("user", "  Hi there \n", Masked: true), new Message("assistant", "Hello!")]);
        // <|start_header_id|>user<|end_header_id|>\n\n = [128006, 882, 128007, 271]; assistant = 78191.
        int[] expected =
        [
            128_000, 128_006, 882, 128_007, 271, .. t.Encode("Hi there", false, false), 128_009,
            128_006, 78_191, 128_007, 271, .. t.Encode("Hello!", false, false), 128_009, 128_001,
        ];
        Assert.Equal(expected, result.Tokens);
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|end_of_text|>",
            t.Decode(result.Tokens, skipSpecialTokens: false));
        var userLen = 4 + t.Encode("Hi there", false, false).Count + 1;
        bool[] mask = [true, .. Enumerable.Repeat(true, userLen), .. Enumerable.Repeat(false, result.Tokens.Length - userLen - 2), true];
        Assert.Equal(mask, result.Mask);
    }

    [SharedDataFact(Llama3Json)]
    public void TokenizeMessages_NoEos_LastTurnOpenForGeneration()
    {
        var t = TokenizerFiles.Llama3;
        var r = t.TokenizeMessages([new Message("user", "Hi"), new Message("assistant", "")], addEos: false);
        Assert.Equal([128_006, 78_191, 128_007, 271], r.Tokens[^4..]);
    }

    [SharedDataFact(Llama3Json)]
    public void TokenizeMessages_MaxSeqLenRight_KeepsEosAtEnd()
    {
        var t = TokenizerFiles.Llama3.WithMaxSeqLen(10);
        var full = TokenizerFiles.Llama3.TokenizeMessages([new Message("user", "one two three four five six seven"), new Message("assistant", "eight nine")]);
        var r = t.TokenizeMessages([new Message("user", "one two three four five six seven"), new Message("assistant", "eight nine")]);
        Assert.Equal(10, r.Tokens.Length);
        Assert.Equal([.. full.Tokens[..9], 128_001], r.Tokens);
        Assert.True(r.Mask[^1]);
    }

    [SharedDataFact(Llama3Json)]
    public void TokenizeMessages_MaxSeqLenLeft_KeepsTheEnd()
    {
        var t = TokenizerFiles.Llama3.WithMaxSeqLen(8, TruncationType.Left);
        Message[] msgs = [new Message("user", "one two three four five six seven"), new Message("assistant", "eight nine")];
        var full = TokenizerFiles.Llama3.TokenizeMessages(msgs);
        var r = t.TokenizeMessages(msgs);
        Assert.Equal(full.Tokens[^8..], r.Tokens);
    }

    [SharedDataFact(Llama3Json, Alpaca)]
    public void FromTiktoken_FileWrittenFromTokenizerJson_GivesIdenticalIds()
    {
        // Meta's original/tokenizer.model format: base64 of the token's bytes, space, rank. Built here from the
        // tokenizer.json vocabulary with an independent byte-level decoding.
        var path = Path.Combine(Path.GetTempPath(), $"llama3-tiktoken-{Guid.NewGuid():N}.model");
        try
        {
            var sb = new StringBuilder();
            foreach (var (token, rank) in ReadVocab(SharedData.PathOf(Llama3Json)).OrderBy(kv => kv.Value))
                sb.Append(Convert.ToBase64String(GptBytes(token))).Append(' ').Append(rank).Append('\n');
            File.WriteAllText(path, sb.ToString());
            var fromTiktoken = TokenizerLoader.Load(path);
            Assert.IsType<Llama3Tokenizer>(fromTiktoken);
            var fromJson = TokenizerFiles.Llama3;
            foreach (var text in TestText.AlpacaStrings.Take(3000).Concat(TestText.UnicodeEdgeCases))
                Assert.Equal(fromJson.Encode(text), fromTiktoken.Encode(text));
            Assert.Equal(fromJson.VocabSize, fromTiktoken.VocabSize);
            Assert.Equal("<|eot_id|>", fromTiktoken.Decode([128_009], skipSpecialTokens: false));
        }
        finally { File.Delete(path); }
    }

    [SharedDataFact(Llama31Json, Llama3Json)]
    public void FromTokenizerJson_Llama31_SameIdsAsLlama3()
    {
        var t31 = TokenizerLoader.Load(SharedData.PathOf("tokenizers/llama3_1"));
        foreach (var text in TestText.UnicodeEdgeCases)
            Assert.Equal(TokenizerFiles.Llama3.Encode(text), t31.Encode(text));
    }

    internal static Dictionary<string, int> ReadVocab(string tokenizerJson)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(tokenizerJson));
        return doc.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
    }

    /// <summary>GPT-2 bytes_to_unicode inverse, written out independently of the library.</summary>
    internal static byte[] GptBytes(string token)
    {
        var inverse = new Dictionary<char, byte>();
        var extra = 0;
        for (var b = 0; b < 256; b++)
        {
            var keeps = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            inverse[keeps ? (char)b : (char)(256 + extra++)] = (byte)b;
        }
        return token.Select(c => inverse[c]).ToArray();
    }
}

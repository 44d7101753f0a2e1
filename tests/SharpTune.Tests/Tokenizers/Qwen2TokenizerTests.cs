using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SharpTune.Tokenizers;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Tokenizers;

public sealed class Qwen2TokenizerTests
{
    [SharedDataFact(Qwen3Json)]
    public void TokenizeMessages_SystemTurn_MatchesPublishedChatMlIds()
    {
        // The default Qwen2 system turn "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n".
        var r = TokenizerFiles.Qwen.TokenizeMessages([new Message("system", "You are a helpful assistant."), new Message("user", "Hi")], addEos: false);
        Assert.Equal([151_644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151_645, 198], r.Tokens[..11]);
    }

    [SharedDataFact(Qwen3Json)]
    public void TokenizeMessages_UserAssistant_ChatMlStringAndMask()
    {
        var t = TokenizerFiles.Qwen;
        var r = t.TokenizeMessages([new Message("user", "What is 2+2?", Masked: true), new Message("assistant", "4")]);
        Assert.Equal("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>", t.Decode(r.Tokens, skipSpecialTokens: false));
        var userLen = Array.LastIndexOf(r.Tokens, 151_644);
        Assert.All(r.Mask[..userLen], Assert.True);
        Assert.All(r.Mask[userLen..], Assert.False);
        Assert.Equal((151_645, 151_643, -1), (t.EosId, t.PadId, t.BosId));
    }

    [SharedDataFact(Qwen3Json)]
    public void Encode_Hello_GivesVocabularyIdAndNoBos()
    {
        Assert.Equal([9707, 11, 1879], TokenizerFiles.Qwen.Encode("Hello, world", addBos: true, addEos: false));
        Assert.Equal([9707, 151_645], TokenizerFiles.Qwen.Encode("Hello"));
    }

    [SharedDataFact(Qwen3Json)]
    public void Encode_DecomposedAccent_NormalizedToNfcFirst()
    {
        var t = TokenizerFiles.Qwen;
        Assert.Equal(t.Encode("caf\u00e9", false, false), t.Encode("cafe\u0301", false, false));
        Assert.Equal("caf\u00e9", t.Decode(t.Encode("cafe\u0301", false, false)));
    }

    [Theory]
    [InlineData("e\u0301", "\u00e9")]              // canonical composition
    [InlineData("\u212b", "\u00c5")]               // ANGSTROM SIGN is a singleton decomposition
    [InlineData("\u1100\u1161\u11a8", "\uac01")]    // Hangul jamo compose to a syllable
    [InlineData("o\u0323\u0302", "\u1ed9")]        // reordering of combining marks, then composition
    [InlineData("plain ascii", "plain ascii")]
    public void UnicodeNfc_KnownPairs_ComposeAsUnicodeDefines(string input, string nfc) =>
        Assert.Equal(nfc, UnicodeNfc.Normalize(input));

    [SharedDataFact(Qwen3Json)]
    public void Encode_Digits_OneTokenPerDigit()
    {
        var t = TokenizerFiles.Qwen;
        Assert.Equal(["1", "2", "3", "4", "5"], t.Encode("12345", false, false).Select(id => t.Decode([id])));
    }

    [SharedDataFact(Qwen3Json, Alpaca)]
    public void Decode_AlpacaAndUnicode_RoundTripsToNfc()
    {
        var t = TokenizerFiles.Qwen;
        foreach (var text in TestText.AlpacaStrings.Where((_, i) => i % 3 == 1).Concat(TestText.UnicodeEdgeCases))
        {
            Assert.Equal(UnicodeNfc.Normalize(text), t.Decode(t.Encode(text, false, false)));
        }
    }

    [SharedDataFact(Qwen3Json, Alpaca)]
    public void FromVocabMerges_DerivedFromTokenizerJson_GivesIdenticalIds()
    {
        var dir = Directory.CreateTempSubdirectory("qwen-vocab-");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(SharedData.PathOf(Qwen3Json)));
            var model = doc.RootElement.GetProperty("model");
            File.WriteAllText(Path.Combine(dir.FullName, "vocab.json"), model.GetProperty("vocab").GetRawText());
            var merges = new StringBuilder("#version: 0.2\n");
            foreach (var m in model.GetProperty("merges").EnumerateArray()) merges.Append(m[0].GetString()).Append(' ').Append(m[1].GetString()).Append('\n');
            File.WriteAllText(Path.Combine(dir.FullName, "merges.txt"), merges.ToString());

            var fromFiles = TokenizerLoader.Qwen2(Path.Combine(dir.FullName, "vocab.json"), Path.Combine(dir.FullName, "merges.txt"));
            Assert.Equal(151_665, fromFiles.VocabSize); // Qwen2.5 specials without a tokenizer_config.json
            foreach (var text in TestText.AlpacaStrings.Take(3000).Concat(TestText.UnicodeEdgeCases))
                Assert.Equal(TokenizerFiles.Qwen.Encode(text), fromFiles.Encode(text));
        }
        finally { dir.Delete(recursive: true); }
    }

    [SharedDataFact(Qwen3Json, Alpaca)]
    public void Encode_AlpacaSample_EqualsMergeListBpeReference()
    {
        // Reference: Hugging Face's BPE algorithm (apply the lowest-index merge from merges.txt until none applies),
        // written here independently, on the same pre-tokenization. The library instead merges by token rank (tiktoken).
        using var doc = JsonDocument.Parse(File.ReadAllBytes(SharedData.PathOf(Qwen3Json)));
        var model = doc.RootElement.GetProperty("model");
        var vocab = model.GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
        var mergeRank = new Dictionary<(string, string), int>();
        var k = 0;
        foreach (var m in model.GetProperty("merges").EnumerateArray()) mergeRank.TryAdd((m[0].GetString()!, m[1].GetString()!), k++);
        var regex = new Regex(ByteLevelBpe.Qwen2Pattern);
        var t = TokenizerFiles.Qwen;
        foreach (var text in TestText.AlpacaStrings.Where((_, i) => i % 250 == 0).Concat(TestText.UnicodeEdgeCases))
        {
            var nfc = UnicodeNfc.Normalize(text);
            var expected = new List<int>();
            foreach (Match piece in regex.Matches(nfc))
            {
                var parts = Encoding.UTF8.GetBytes(piece.Value).Select(b => ByteLevelBpe.BytesToUnicode([b])).ToList();
                while (parts.Count > 1)
                {
                    var best = -1; var bestRank = int.MaxValue;
                    for (var i = 0; i + 1 < parts.Count; i++)
                        if (mergeRank.TryGetValue((parts[i], parts[i + 1]), out var r) && r < bestRank) { bestRank = r; best = i; }
                    if (best < 0) break;
                    parts[best] += parts[best + 1];
                    parts.RemoveAt(best + 1);
                }
                expected.AddRange(parts.Select(p => vocab[p]));
            }
            Assert.Equal(expected, t.Encode(text, false, false));
        }
    }
}

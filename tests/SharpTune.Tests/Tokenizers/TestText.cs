// Text used by several tokenizer tests: every string field of the Alpaca shards, and Unicode edge cases.
using System.Text.Json;

namespace SharpTune.Tests.Tokenizers;

internal static class TestText
{
    private static readonly Lazy<IReadOnlyList<string>> s_alpaca = new(LoadAlpaca);

    /// <summary>instruction, input and output of every record of every shard (non-empty ones).</summary>
    public static IReadOnlyList<string> AlpacaStrings => s_alpaca.Value;

    /// <summary>Strings that stress pre-tokenization and byte handling.</summary>
    public static readonly string[] UnicodeEdgeCases =
    [
        "Hello 👋 world 🌍! Family: 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tone 👍🏽",
        "日本語のテキストと中文文本，还有한국어 텍스트。",
        "Combining marks: e\u0301 a\u0308 o\u0302\u0323 Z\u0335\u0321",
        "Spaces:" + new string(' ', 37) + "end\t\t tabs \u00a0nbsp \u3000ideographic",
        "Digits 12345678901234567890 and 3.14159 and 1,000,000",
        "Newlines\n\n\nCRLF\r\n\r\nmixed \n \n",
        "Special-looking <|eot_id|> <|begin_of_text|> <|im_start|> <s> </s> [INST] text",
        "Math 𝔸𝕓𝕔 ∑∫√ and emoji in the astral plane 🀄🃏",
        "Arabic العربية Hebrew עברית Thai ภาษาไทย Devanagari हिन्दी",
        "'s 're 've 'll 'd I'M YOU'RE don't",
        "   leading spaces and trailing spaces   ",
        "x",
        " ",
        "\u200b zero width \u200d joiner \ufeff bom",
    ];

    private static IReadOnlyList<string> LoadAlpaca()
    {
        var result = new List<string>(150_000);
        foreach (var file in Directory.GetFiles(SharedData.PathOf(TokenizerFiles.Alpaca), "*.json"))
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            foreach (var row in doc.RootElement.EnumerateArray())
                foreach (var p in row.EnumerateObject())
                    if (p.Value.GetString() is { Length: > 0 } s) result.Add(s);
        }
        return result;
    }
}

// Whether two tokenizers are the same token space: what knowledge distillation needs before it compares a teacher's
// distribution with a student's id by id. Two tokenizers agree when they emit the same number of ids, give every id the
// same text (special tokens included, decoded without skipping them) and use the same BOS/EOS ids. Equal vocabulary
// sizes alone prove nothing: stories260K's 512-piece SentencePiece model and a 512-symbol character tokenizer share
// the size and nothing else; Llama 3 and Qwen2 share even their first 256 byte-level ids.
// A teacher whose MODEL is padded beyond the tokenizer (Qwen2.5 7B: 152,064 logits for 151,665 ids) still uses the same
// tokenizer; that padding is checked separately (Losses/VocabAlignment.cs).
namespace SharpTune.Tokenizers;

/// <summary>Compares two tokenizers id by id.</summary>
public static class TokenizerComparison
{
    /// <summary>
    /// Null when <paramref name="a"/> and <paramref name="b"/> are the same token space; otherwise what differs, in one
    /// line (sizes, special ids, and the first ids whose texts differ with both texts), naming them as
    /// <paramref name="nameA"/> and <paramref name="nameB"/>.
    /// </summary>
    /// <param name="a">One tokenizer.</param>
    /// <param name="b">The other.</param>
    /// <param name="nameA">How the message names <paramref name="a"/> (e.g. "teacher").</param>
    /// <param name="nameB">How the message names <paramref name="b"/>.</param>
    /// <param name="maxExamples">How many differing ids to quote.</param>
    public static string? Difference(ITokenizer a, ITokenizer b, string nameA = "first", string nameB = "second", int maxExamples = 3)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var parts = new List<string>();
        if (a.VocabSize != b.VocabSize) parts.Add($"{a.VocabSize} ids vs {b.VocabSize}");
        if (a.BosId != b.BosId) parts.Add($"BOS id {a.BosId} vs {b.BosId}");
        if (a.EosId != b.EosId) parts.Add($"EOS id {a.EosId} vs {b.EosId}");
        var shared = Math.Min(a.VocabSize, b.VocabSize);
        var examples = new List<string>();
        var differing = 0;
        for (var id = 0; id < shared; id++)
        {
            var ta = Piece(a, id);
            var tb = Piece(b, id);
            if (string.Equals(ta, tb, StringComparison.Ordinal)) continue;
            differing++;
            if (examples.Count < maxExamples) examples.Add($"id {id} is {Quote(ta)} vs {Quote(tb)}");
        }
        if (differing > 0) parts.Add($"{differing} of the {shared} shared ids differ ({string.Join(", ", examples)})");
        return parts.Count == 0 ? null : $"{nameA} vs {nameB}: {string.Join("; ", parts)}";
    }

    /// <summary>The text of one id, special tokens included (an id a tokenizer cannot decode reads as its error).</summary>
    public static string Piece(ITokenizer tokenizer, int id)
    {
        try { return tokenizer.Decode([id], skipSpecialTokens: false); }
        catch (ArgumentException e) { return $"<undecodable: {e.Message}>"; }
    }

    private static string Quote(string s)
    {
        var escaped = s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)
            .Replace("'", "\\'", StringComparison.Ordinal);
        return $"'{(escaped.Length <= 24 ? escaped : escaped[..24] + "...")}'";
    }
}

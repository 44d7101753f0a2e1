// The core of `sharptune tokenize`: text or a conversation in, JSON ids (with pieces and, for chats, the loss mask)
// out, so users can see exactly what a model is fed. Kept in the library so it is testable without a console.
using System.Text.Json;

namespace SharpTune.Tokenizers;

/// <summary>Tokenization as JSON for debugging prompts.</summary>
public static class TokenizeReport
{
    // Special-token strings such as <|eot_id|> stay readable instead of \u003C escapes.
    private static readonly JsonSerializerOptions s_options = new()
    {
        WriteIndented = false,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>
    /// Tokenizes <paramref name="text"/> and returns JSON <c>{"ids":[...],"count":n,"pieces":[...]}</c>. With
    /// <paramref name="chat"/>, the text is a JSON array of <c>{"role","content"}</c> messages (or plain text, taken as one
    /// user message) in the model's chat format, and the output adds <c>"mask"</c> (true = not trained on); the end token
    /// is added when the last message is the assistant's (a training sample) or <paramref name="addEos"/> is set.
    /// </summary>
    public static string ToJson(IChatTokenizer tokenizer, string text, bool chat, bool addBos = true, bool addEos = false)
    {
        int[] ids;
        bool[]? mask = null;
        if (chat)
        {
            var messages = ParseMessages(text);
            var result = tokenizer.TokenizeMessages(messages, addEos || (messages.Count > 0 && messages[^1].Role == "assistant"));
            ids = result.Tokens;
            mask = result.Mask;
        }
        else ids = [.. tokenizer.Encode(text, addBos, addEos)];
        var pieces = Pieces(tokenizer, ids);
        return mask is null
            ? JsonSerializer.Serialize(new { ids, count = ids.Length, pieces }, s_options)
            : JsonSerializer.Serialize(new { ids, count = ids.Length, pieces, mask }, s_options);
    }

    /// <summary>Reads messages from a JSON array of {"role", "content"[, "masked"]}; other text is one user message.</summary>
    public static IReadOnlyList<Message> ParseMessages(string text)
    {
        var trimmed = text.TrimStart();
        if (!trimmed.StartsWith('[')) return [new Message("user", text, Masked: true)];
        using var doc = JsonDocument.Parse(trimmed);
        var messages = new List<Message>();
        var i = 0;
        foreach (var m in doc.RootElement.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object || !m.TryGetProperty("role", out var role) || !m.TryGetProperty("content", out var content) ||
                role.ValueKind != JsonValueKind.String || content.ValueKind != JsonValueKind.String)
                throw new FormatException($"message {i}: expected {{\"role\": string, \"content\": string}}, got {m.GetRawText()}");
            var masked = m.TryGetProperty("masked", out var mk) ? mk.GetBoolean() : role.GetString() != "assistant";
            messages.Add(new Message(role.GetString()!, content.GetString()!, masked));
            i++;
        }
        return messages;
    }

    /// <summary>
    /// Each id's share of the decoded text: decode(ids[j..i+1]) minus decode(ids[j..i]) over a short window of context
    /// before id i (j = i - <see cref="PieceContext"/>), so the word-boundary spaces that decoding a lone SentencePiece id
    /// drops are kept. A character spelled by several byte ids comes out whole on the id that completes it (the ids
    /// before it get ""), because a decode that ends in an incomplete character is compared without its trailing
    /// U+FFFD; so the pieces concatenate to the decoded text. The window keeps the work linear in the number of ids
    /// (decoding every prefix was quadratic: minutes on a 1 MB file).
    /// </summary>
    public static string[] Pieces(ITokenizer tokenizer, IReadOnlyList<int> ids)
    {
        var pieces = new string[ids.Count];
        var window = new List<int>(PieceContext + 1);
        for (var i = 0; i < ids.Count; i++)
        {
            var j = Math.Max(0, i - PieceContext);
            window.Clear();
            for (var k = j; k < i; k++) window.Add(ids[k]);
            var before = Complete(tokenizer.Decode(window, skipSpecialTokens: false));
            window.Add(ids[i]);
            var text = tokenizer.Decode(window, skipSpecialTokens: false);
            if (i + 1 < ids.Count) text = Complete(text); // the last id flushes whatever is left
            pieces[i] = text.StartsWith(before, StringComparison.Ordinal) ? text[before.Length..] : tokenizer.Decode([ids[i]], false);
        }
        return pieces;
    }

    /// <summary>Ids of left context decoded with each piece: enough for a UTF-8 character split over byte tokens (at most 4).</summary>
    public const int PieceContext = 8;

    // A decode without the replacement characters an unfinished multi-byte character leaves at its end.
    private static string Complete(string decoded) => decoded.TrimEnd('\uFFFD');
}

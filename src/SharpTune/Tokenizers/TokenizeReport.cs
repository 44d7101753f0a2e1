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
    /// Each id's share of the decoded text: decode(ids[..i+1]) minus decode(ids[..i]), so the word-boundary spaces
    /// that decoding a lone SentencePiece id drops are kept and the pieces concatenate to the decoded text. Quadratic,
    /// which is fine at debugging sizes.
    /// </summary>
    public static string[] Pieces(ITokenizer tokenizer, IReadOnlyList<int> ids)
    {
        var pieces = new string[ids.Count];
        var previous = "";
        for (var i = 0; i < ids.Count; i++)
        {
            var text = tokenizer.Decode(ids.Take(i + 1), skipSpecialTokens: false);
            pieces[i] = text.StartsWith(previous, StringComparison.Ordinal) ? text[previous.Length..] : tokenizer.Decode([ids[i]], false);
            previous = text;
        }
        return pieces;
    }
}

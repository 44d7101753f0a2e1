// Chat messages and the chat-tokenizer contract, following torchtune's `Message` and `ModelTokenizer.tokenize_messages`
// (torchtune/data/_messages.py, torchtune/modules/transforms/tokenizers/_utils.py).
namespace SharpTune.Tokenizers;

/// <summary>One turn of a conversation.</summary>
/// <param name="Role">"system", "user", "assistant" or "ipython".</param>
/// <param name="Content">The text of the turn.</param>
/// <param name="Masked">True when the turn's tokens are excluded from the loss (labels -100).</param>
/// <param name="Eot">True when the turn ends the assistant's turn (Llama 3 <c>&lt;|eot_id|&gt;</c>; false gives <c>&lt;|eom_id|&gt;</c>).</param>
public sealed record Message(string Role, string Content, bool Masked = false, bool Eot = true)
{
    /// <summary>Role names the formats know.</summary>
    public static readonly IReadOnlyList<string> Roles = ["system", "user", "assistant", "ipython"];
}

/// <summary>Token ids of a conversation and, per id, whether it is masked out of the loss.</summary>
/// <param name="Tokens">Token ids.</param>
/// <param name="Mask">Same length as <paramref name="Tokens"/>; true = masked (not trained on).</param>
public sealed record TokenizedMessages(int[] Tokens, bool[] Mask);

/// <summary>Which end of a too-long sequence is cut.</summary>
public enum TruncationType
{
    /// <summary>Keep the first <c>max_seq_len</c> tokens (default).</summary>
    Right,

    /// <summary>Keep the last <c>max_seq_len</c> tokens.</summary>
    Left,
}

/// <summary>A tokenizer that also knows its model's chat format, as torchtune's model tokenizers do.</summary>
public interface IChatTokenizer : ITokenizer
{
    /// <summary>Sequences longer than this are truncated by <see cref="TokenizeMessages"/>; null = no limit.</summary>
    int? MaxSeqLen { get; }

    /// <summary>True when <paramref name="id"/> is a special (control) token.</summary>
    bool IsSpecial(int id);

    /// <summary>
    /// Tokenizes a conversation in the model's chat format. <paramref name="addEos"/> appends the end token (and is what
    /// truncation keeps at the end).
    /// </summary>
    TokenizedMessages TokenizeMessages(IReadOnlyList<Message> messages, bool addEos = true);

    /// <summary>The same tokenizer without a length limit (to measure what truncation cuts); null when it cannot say.</summary>
    IChatTokenizer? WithoutLimit() => MaxSeqLen is null ? this : null;
}

/// <summary>torchtune's <c>truncate</c>: cut to a length and, when given, force the last element.</summary>
public static class Truncation
{
    /// <summary>
    /// Cuts <paramref name="tokens"/> to <paramref name="maxSeqLen"/> from the right or the left; when
    /// <paramref name="eosId"/> is given and the kept last id differs, it is replaced so the end token survives.
    /// </summary>
    public static int[] Truncate(int[] tokens, int maxSeqLen, int? eosId, TruncationType type = TruncationType.Right) =>
        Cut(tokens, maxSeqLen, eosId ?? 0, eosId.HasValue, type);

    /// <summary>The mask counterpart of <see cref="Truncate(int[], int, int?, TruncationType)"/>.</summary>
    public static bool[] Truncate(bool[] mask, int maxSeqLen, bool? last, TruncationType type = TruncationType.Right) =>
        Cut(mask, maxSeqLen, last ?? false, last.HasValue, type);

    /// <summary>Parses a <c>truncation_type</c> config value ("right" or "left").</summary>
    public static TruncationType Parse(string? value) => value?.ToLowerInvariant() switch
    {
        null or "" or "right" => TruncationType.Right,
        "left" => TruncationType.Left,
        _ => throw new ArgumentException($"truncation_type must be 'right' or 'left', got '{value}'", nameof(value)),
    };

    private static T[] Cut<T>(T[] items, int maxSeqLen, T last, bool hasLast, TruncationType type)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSeqLen, 1);
        var kept = items.Length <= maxSeqLen ? (T[])items.Clone()
            : type == TruncationType.Right ? items[..maxSeqLen] : items[^maxSeqLen..];
        if (hasLast && kept.Length > 0) kept[^1] = last;
        return kept;
    }
}

// The tokenizer contract the rest of the library codes against (data, eval, generation).
namespace SharpTune.Tokenizers;

/// <summary>Text to token ids and back, with the model family's special ids.</summary>
public interface ITokenizer
{
    /// <summary>Number of ids the tokenizer can emit, special tokens included.</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, or -1 when the model has none (Qwen2); Encode then adds no BOS.</summary>
    int BosId { get; }

    /// <summary>End-of-sequence id.</summary>
    int EosId { get; }

    /// <summary>Padding id used by collate.</summary>
    int PadId { get; }

    /// <summary>Ids that end generation (EOS, end-of-turn, ...).</summary>
    IReadOnlyList<int> StopTokens { get; }

    /// <summary>Encodes plain text; special-token strings inside <paramref name="text"/> are treated as text.</summary>
    IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true);

    /// <summary>Decodes ids to text, optionally dropping special tokens.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true);
}

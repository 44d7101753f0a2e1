// Config components for datasets with torchtune's names and parameters (torchtune/datasets/_alpaca.py,
// _instruct.py, _chat.py, _text_completion.py). `source` is a local file or folder, a format name ("json", "csv",
// "parquet") with data_files, or a hub id resolved by DataSources.CurrentResolver (DataSources.UseResolver). `split` may slice rows the way
// Hugging Face datasets does ("train[:95%]", "train[100:200]").
using System.Globalization;
using System.Text.RegularExpressions;
using SharpTune.Config;
using SharpTune.Tokenizers;

namespace SharpTune.Data;

/// <summary>Dataset builders for configs.</summary>
public static partial class DatasetBuilders
{
    /// <summary>Stanford Alpaca (instruction, input, output); train_on_input defaults to true as in torchtune.</summary>
    [Component("sharptune.datasets.alpaca_dataset")]
    public static ISampleDataset AlpacaDataset(ITokenizer tokenizer, string source = "tatsu-lab/alpaca",
        Dictionary<string, string>? columnMap = null, bool trainOnInput = true, bool packed = false, bool splitAcrossPack = false,
        string split = "train", string? dataFiles = null, bool skipBadRows = false)
    {
        var rows = Load(source, dataFiles, split);
        var ds = new SftDataset(tokenizer, rows, new AlpacaToMessages(trainOnInput, columnMap), skipBadRows);
        return MaybePack(ds, tokenizer, packed, splitAcrossPack);
    }

    /// <summary>Alpaca-cleaned (yahma/alpaca-cleaned), the dataset of torchtune's KD configs.</summary>
    [Component("sharptune.datasets.alpaca_cleaned_dataset")]
    public static ISampleDataset AlpacaCleanedDataset(ITokenizer tokenizer, string source = "yahma/alpaca-cleaned",
        Dictionary<string, string>? columnMap = null, bool trainOnInput = true, bool packed = false, bool splitAcrossPack = false,
        string split = "train", string? dataFiles = null, bool skipBadRows = false) =>
        AlpacaDataset(tokenizer, source, columnMap, trainOnInput, packed, splitAcrossPack, split, dataFiles, skipBadRows);

    /// <summary>Single-turn instruct data: column_map names the "input" and "output" columns.</summary>
    [Component("sharptune.datasets.instruct_dataset")]
    public static ISampleDataset InstructDataset(ITokenizer tokenizer, string source, Dictionary<string, string>? columnMap = null,
        bool trainOnInput = false, string? newSystemPrompt = null, bool packed = false, bool splitAcrossPack = false,
        string split = "train", string? dataFiles = null, bool skipBadRows = false)
    {
        var rows = Load(source, dataFiles, split);
        var ds = new SftDataset(tokenizer, rows, new InputOutputToMessages(trainOnInput, columnMap, newSystemPrompt), skipBadRows);
        return MaybePack(ds, tokenizer, packed, splitAcrossPack);
    }

    /// <summary>Multi-turn chat data in ShareGPT ("sharegpt": conversations/from/value) or OpenAI ("openai": messages/role/content) shape.</summary>
    [Component("sharptune.datasets.chat_dataset")]
    public static ISampleDataset ChatDataset(ITokenizer tokenizer, string source, string conversationStyle,
        string? conversationColumn = null, bool trainOnInput = false, string? newSystemPrompt = null, bool packed = false,
        bool splitAcrossPack = false, string split = "train", string? dataFiles = null, bool skipBadRows = false)
    {
        IMessageTransform transform = conversationStyle switch
        {
            "sharegpt" => new ShareGptToMessages(trainOnInput, Map("conversations", conversationColumn), newSystemPrompt),
            "openai" => new OpenAiToMessages(trainOnInput, Map("messages", conversationColumn), newSystemPrompt),
            _ => throw new ArgumentException($"conversation_style must be 'sharegpt' or 'openai', got '{conversationStyle}'", nameof(conversationStyle)),
        };
        var ds = new SftDataset(tokenizer, Load(source, dataFiles, split), transform, skipBadRows);
        return MaybePack(ds, tokenizer, packed, splitAcrossPack);
    }

    /// <summary>
    /// Plain text for continued pre-training: .txt files (one document each), or a text column of .jsonl/.json/.csv/
    /// .parquet rows (one document per row). With a window length (<paramref name="maxSeqLen"/>, else the tokenizer's
    /// max_seq_len) the documents become one contiguous stream cut into windows every <paramref name="stride"/> tokens
    /// (<see cref="TextStreamDataset"/>: nothing truncated); without one, each document is one untruncated sample.
    /// <paramref name="promptTokens"/> makes each window a prompt (its first tokens, unlabelled) and a completion (the
    /// rest of the window): the prompt-completion data of on-policy distillation over plain text.
    /// </summary>
    [Component("sharptune.datasets.text_completion_dataset")]
    public static ISampleDataset TextCompletionDataset(ITokenizer tokenizer, string source, string column = "text",
        bool? addBos = null, bool addEos = true, int? maxSeqLen = null, int? stride = null, string split = "train",
        string? dataFiles = null, bool skipBadRows = false, int? promptTokens = null)
    {
        // The tokenizer's max_seq_len is the default window; the stream is encoded without it (never cut).
        (ITokenizer Encoder, int? Limit) unlimited = tokenizer switch
        {
            IChatTokenizer c => (c.WithoutLimit() ?? (c.MaxSeqLen is null ? c : throw new ArgumentException(
                $"{c.GetType().Name} cannot encode without its max_seq_len, so a text stream would be cut", nameof(tokenizer))), c.MaxSeqLen),
            Synthetic.CharTokenizer ch => (new Synthetic.CharTokenizer(), ch.MaxSeqLen),
            _ => (tokenizer, null),
        };
        var (encoder, limit) = unlimited;
        var window = maxSeqLen ?? limit;
        if (window is null && stride is not null)
            throw new ArgumentException("stride needs a window: set max_seq_len on the dataset or the tokenizer", nameof(stride));
        if (window is null && promptTokens is not null)
            throw new ArgumentException("prompt_tokens needs a window (prompt plus completion): set max_seq_len on the dataset or the tokenizer", nameof(promptTokens));
        var ds = new TextCompletionDataset(tokenizer, Load(source, dataFiles, split), column, addEos, skipBadRows, addBos);
        return window is { } w ? new TextStreamDataset(encoder, ds.Texts, w, stride, addBos, addEos, promptTokens) : ds;
    }

    /// <summary>Reads the rows of a source, applying a split slice such as "train[:10%]".</summary>
    public static IReadOnlyList<DataRow> Load(string source, string? dataFiles, string split, IDatasetSourceResolver? resolver = null)
    {
        var (name, from, to) = ParseSplit(split);
        var rows = DataSources.ReadRows(DataSources.ResolveFiles(source, dataFiles, name, resolver)).ToList();
        if (from is null && to is null) return rows;
        var start = Resolve(from, rows.Count, 0);
        var end = Resolve(to, rows.Count, rows.Count);
        return end > start ? rows.GetRange(start, end - start) : [];
    }

    /// <summary>Splits "train[10:50%]" into its name and slice bounds.</summary>
    public static (string Name, string? From, string? To) ParseSplit(string split)
    {
        var m = SplitRegex().Match(split);
        if (!m.Success)
            throw new ArgumentException($"split '{split}' is not 'name' or 'name[from:to]' (bounds are row counts or percentages)", nameof(split));
        var from = m.Groups["from"].Value;
        var to = m.Groups["to"].Value;
        return (m.Groups["name"].Value, from.Length == 0 ? null : from, to.Length == 0 ? null : to);
    }

    private static int Resolve(string? bound, int count, int fallback)
    {
        if (bound is null) return fallback;
        var value = bound.EndsWith('%')
            ? (int)Math.Round(double.Parse(bound[..^1], CultureInfo.InvariantCulture) / 100.0 * count)
            : int.Parse(bound, CultureInfo.InvariantCulture);
        if (value < 0) value += count;
        return Math.Clamp(value, 0, count);
    }

    private static ISampleDataset MaybePack(ISampleDataset ds, ITokenizer tokenizer, bool packed, bool splitAcrossPack)
    {
        if (!packed) return ds;
        var max = (tokenizer as IChatTokenizer)?.MaxSeqLen ?? throw new ArgumentException(
            "packed: true needs the tokenizer's max_seq_len to be set", nameof(packed));
        return new PackedDataset(ds, max, tokenizer.PadId, splitAcrossPack);
    }

    private static Dictionary<string, string>? Map(string key, string? column) =>
        column is null ? null : new Dictionary<string, string> { [key] = column };

    [GeneratedRegex(@"^(?<name>[A-Za-z0-9_\-\.]+)(\[(?<from>-?\d+%?)?:(?<to>-?\d+%?)?\])?$")]
    private static partial Regex SplitRegex();
}

// Map-style datasets that yield token ids and pre-shifted labels: SFTDataset and TextCompletionDataset
// (torchtune/datasets/_sft.py, _text_completion.py) and ConcatDataset (torchtune/datasets/_concat.py).
// Labels are shifted here, once: labels[i] = tokens[i+1], or -100 where tokens[i+1] is masked; the last label is -100.
// Recipes must therefore NOT shift labels again.
using SharpTune.Tokenizers;

namespace SharpTune.Data;

/// <summary>One training example.</summary>
/// <param name="Tokens">Token ids [s].</param>
/// <param name="Labels">Pre-shifted targets [s]: the next token, or <see cref="Sample.IgnoreIndex"/>.</param>
/// <param name="InputPos">Per-token positions [s] (packed samples only; otherwise 0..s-1 is implied).</param>
/// <param name="SeqLens">Lengths of the samples inside a pack, padding included as its own block (packed only).</param>
public sealed record Sample(int[] Tokens, int[] Labels, int[]? InputPos = null, int[]? SeqLens = null)
{
    /// <summary>The label value the loss ignores (PyTorch's cross-entropy default).</summary>
    public const int IgnoreIndex = -100;

    /// <summary>Pre-shifted labels from tokens and a mask (true = not trained on).</summary>
    public static int[] ShiftedLabels(int[] tokens, bool[]? mask)
    {
        var labels = new int[tokens.Length];
        for (var i = 0; i + 1 < tokens.Length; i++)
            labels[i] = mask is not null && mask[i + 1] ? IgnoreIndex : tokens[i + 1];
        if (labels.Length > 0) labels[^1] = IgnoreIndex;
        return labels;
    }
}

/// <summary>A map-style dataset of <see cref="Sample"/>s.</summary>
public interface ISampleDataset
{
    /// <summary>Number of samples.</summary>
    int Count { get; }

    /// <summary>The sample at <paramref name="index"/>.</summary>
    Sample this[int index] { get; }
}

/// <summary>Rows turned into conversations at load time (bad rows found then) and tokenized on access.</summary>
public sealed class SftDataset : ISampleDataset, IDatasetSummary
{
    private readonly IChatTokenizer _tokenizer;
    private readonly List<IReadOnlyList<Message>> _conversations = [];

    /// <summary>Builds from rows; bad rows throw <see cref="BadRowException"/> unless <paramref name="skipBadRows"/>.</summary>
    public SftDataset(ITokenizer tokenizer, IEnumerable<DataRow> rows, IMessageTransform transform, bool skipBadRows = false)
    {
        _tokenizer = tokenizer as IChatTokenizer ?? throw new ArgumentException(
            $"{tokenizer.GetType().Name} has no chat format (it does not implement {nameof(IChatTokenizer)})", nameof(tokenizer));
        var bad = new List<BadRowException>();
        foreach (var row in rows)
        {
            try { _conversations.Add(transform.ToMessages(row)); }
            catch (BadRowException e) when (skipBadRows) { bad.Add(e); }
        }
        BadRows = bad;
    }

    /// <summary>Rows skipped because of <c>skip_bad_rows</c>, with file, row and reason.</summary>
    public IReadOnlyList<BadRowException> BadRows { get; }

    /// <inheritdoc/>
    public int Count => _conversations.Count;

    /// <summary>
    /// Rows the tokenizer's max_seq_len cuts and the tokens they lose, measured by tokenizing every row without the
    /// limit (one pass over the data, done when first asked). Zeros when there is no limit.
    /// </summary>
    public (int Rows, long TokensLost, long TokensTotal) Truncation => _truncation ??= MeasureTruncation();

    private (int, long, long)? _truncation;

    /// <inheritdoc/>
    public string Summary
    {
        get
        {
            var (rows, lost, total) = Truncation;
            var head = $"{Count:N0} rows, {total:N0} tokens";
            if (_tokenizer.MaxSeqLen is not { } max) return head + ", no max_seq_len (nothing truncated)";
            if (_tokenizer.WithoutLimit() is null) return head + $" after truncation to max_seq_len {max} (what it cut cannot be measured for this tokenizer)";
            return rows == 0 ? head + $", none longer than max_seq_len {max}"
                : head + $"; {rows:N0} row{(rows == 1 ? "" : "s")} longer than max_seq_len {max} truncated, losing {lost:N0} tokens " +
                  $"({100.0 * lost / Math.Max(1, total):F2}% of the data): raise max_seq_len to keep them";
        }
    }

    private (int, long, long) MeasureTruncation()
    {
        var full = _tokenizer.WithoutLimit();
        var max = _tokenizer.MaxSeqLen;
        int rows = 0;
        long lost = 0, total = 0;
        foreach (var conversation in _conversations)
        {
            var n = (full ?? _tokenizer).TokenizeMessages(conversation, addEos: true).Tokens.Length;
            total += n;
            if (full is null || max is not { } m || n <= m) continue;
            rows++;
            lost += n - m;
        }
        return (rows, lost, total);
    }

    /// <summary>The conversation of sample <paramref name="index"/> before tokenization.</summary>
    public IReadOnlyList<Message> Messages(int index) => _conversations[index];

    /// <inheritdoc/>
    public Sample this[int index]
    {
        get
        {
            var t = _tokenizer.TokenizeMessages(_conversations[index], addEos: true);
            return new Sample(t.Tokens, Sample.ShiftedLabels(t.Tokens, t.Mask));
        }
    }
}

/// <summary>
/// Unstructured text, one untruncated sample per row: BOS (when the tokenizer has one, or as <c>add_bos</c> says) + text
/// (+ EOS), every token trained on. With a window length the builder streams the rows instead (<see cref="TextStreamDataset"/>).
/// </summary>
public sealed class TextCompletionDataset : ISampleDataset
{
    private readonly ITokenizer _tokenizer;
    private readonly List<string> _texts = [];
    private readonly bool _addBos;
    private readonly bool _addEos;

    /// <summary>Builds from rows holding <paramref name="column"/>.</summary>
    public TextCompletionDataset(ITokenizer tokenizer, IEnumerable<DataRow> rows, string column = "text", bool addEos = true,
        bool skipBadRows = false, bool? addBos = null)
    {
        _tokenizer = tokenizer;
        _addEos = addEos;
        _addBos = addBos ?? tokenizer.BosId >= 0;
        if (_addBos && tokenizer.BosId < 0)
            throw new ArgumentException($"add_bos is true but {tokenizer.GetType().Name} has no BOS token", nameof(addBos));
        var bad = new List<BadRowException>();
        foreach (var row in rows)
        {
            try { _texts.Add(Rows.Required(row, column)); }
            catch (BadRowException e) when (skipBadRows) { bad.Add(e); }
        }
        BadRows = bad;
    }

    /// <summary>Rows skipped because of <c>skip_bad_rows</c>.</summary>
    public IReadOnlyList<BadRowException> BadRows { get; }

    /// <summary>The documents, in order.</summary>
    public IReadOnlyList<string> Texts => _texts;

    /// <inheritdoc/>
    public int Count => _texts.Count;

    /// <inheritdoc/>
    public Sample this[int index]
    {
        get
        {
            var tokens = _tokenizer.Encode(_texts[index], addBos: _addBos, addEos: _addEos).ToArray();
            return new Sample(tokens, Sample.ShiftedLabels(tokens, null));
        }
    }
}

/// <summary>Several datasets read one after the other.</summary>
public sealed class ConcatDataset : ISampleDataset
{
    private readonly ISampleDataset[] _parts;
    private readonly int[] _starts;

    /// <summary>Concatenates <paramref name="datasets"/> in order.</summary>
    public ConcatDataset(IEnumerable<ISampleDataset> datasets)
    {
        _parts = [.. datasets];
        if (_parts.Length == 0) throw new ArgumentException("ConcatDataset needs at least one dataset", nameof(datasets));
        _starts = new int[_parts.Length];
        var total = 0;
        for (var i = 0; i < _parts.Length; i++) { _starts[i] = total; total += _parts[i].Count; }
        Count = total;
    }

    /// <summary>The datasets concatenated.</summary>
    public IReadOnlyList<ISampleDataset> Parts => _parts;

    /// <inheritdoc/>
    public int Count { get; }

    /// <inheritdoc/>
    public Sample this[int index]
    {
        get
        {
            if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"dataset has {Count} samples");
            var part = Array.BinarySearch(_starts, index);
            if (part < 0) part = ~part - 1;
            while (part + 1 < _starts.Length && _starts[part + 1] == index) part++; // skip empty parts
            return _parts[part][index - _starts[part]];
        }
    }
}

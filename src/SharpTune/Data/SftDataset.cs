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
public sealed class SftDataset : ISampleDataset
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

/// <summary>Unstructured text for continued pre-training: BOS + text (+ EOS), every token trained on.</summary>
public sealed class TextCompletionDataset : ISampleDataset
{
    private readonly ITokenizer _tokenizer;
    private readonly List<string> _texts = [];
    private readonly bool _addEos;
    private readonly int? _maxSeqLen;

    /// <summary>Builds from rows holding <paramref name="column"/>.</summary>
    public TextCompletionDataset(ITokenizer tokenizer, IEnumerable<DataRow> rows, string column = "text", bool addEos = true,
        bool skipBadRows = false)
    {
        _tokenizer = tokenizer;
        _addEos = addEos;
        _maxSeqLen = (tokenizer as IChatTokenizer)?.MaxSeqLen;
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

    /// <inheritdoc/>
    public int Count => _texts.Count;

    /// <inheritdoc/>
    public Sample this[int index]
    {
        get
        {
            var tokens = _tokenizer.Encode(_texts[index], addBos: _tokenizer.BosId >= 0, addEos: _addEos).ToArray();
            // Truncation keeps the start and does not force an EOS, as torchtune's text completion does.
            if (_maxSeqLen is { } max && tokens.Length > max) tokens = tokens[..max];
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

// Text as one contiguous token stream cut into fixed windows, the way nanoGPT and llm.c train on a corpus and the way
// Hugging Face's perplexity guide (https://huggingface.co/docs/transformers/perplexity) slides a window with a stride.
// Documents (files, rows) are tokenized in order, optionally each behind a BOS, and separated by EOS, then the whole
// stream is cut: window k holds tokens [k*stride, k*stride + window). Labels are the next stream token, including
// across the window's right edge, and a label already trained by an earlier window (the overlap when stride < window)
// is -100, so every next-token transition of the stream is trained exactly once and nothing is ever truncated.
// With prompt tokens (prompt-completion windows, the data of on-policy distillation over plain text), each window is
// an independent pair instead: its first prompt_tokens tokens are the prompt (no labels) and the rest of the window is
// the completion (labelled), so PromptCompletion.Split finds the prompt; nothing across the window's right edge is a
// label, and a window is kept while it holds at least one completion token.
using SharpTune.Tokenizers;

namespace SharpTune.Data;

/// <summary>A dataset that can say in one line what it holds and what (if anything) was cut, for the setup log.</summary>
public interface IDatasetSummary
{
    /// <summary>One line for the log: documents, tokens, samples, and any truncation with the fraction of tokens lost.</summary>
    string Summary { get; }
}

/// <summary>Documents tokenized into one stream and cut into windows of <see cref="Window"/> tokens.</summary>
public sealed class TextStreamDataset : ISampleDataset, IDatasetSummary
{
    private readonly int[] _stream;
    private readonly long _documentsSplit;

    /// <summary>
    /// Tokenizes <paramref name="documents"/> in order into one stream (BOS before each document when
    /// <paramref name="addBos"/>, EOS after each when <paramref name="addEos"/>) and cuts windows of
    /// <paramref name="window"/> tokens every <paramref name="stride"/> tokens (default: the window, no overlap).
    /// With <paramref name="promptTokens"/>, each window is a prompt (its first <paramref name="promptTokens"/> tokens,
    /// unlabelled) and a completion (the rest, labelled).
    /// </summary>
    public TextStreamDataset(ITokenizer tokenizer, IEnumerable<string> documents, int window, int? stride = null,
        bool? addBos = null, bool addEos = true, int? promptTokens = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(window, 2);
        var s = stride ?? window;
        if (s < 1 || s > window)
            throw new ArgumentOutOfRangeException(nameof(stride), s, $"stride must be in [1, window {window}]: a larger stride would skip tokens");
        if (promptTokens is { } pt && (pt < 1 || pt >= window))
            throw new ArgumentOutOfRangeException(nameof(promptTokens), pt,
                $"prompt_tokens must be in [1, window {window} - 1]: the window holds the prompt and at least one completion token");
        var bos = addBos ?? tokenizer.BosId >= 0;
        if (bos && tokenizer.BosId < 0)
            throw new ArgumentException($"add_bos is true but {tokenizer.GetType().Name} has no BOS token", nameof(addBos));
        var stream = new List<int>();
        var long_ = 0L;
        var docs = 0L;
        foreach (var text in documents)
        {
            var start = stream.Count;
            if (bos) stream.Add(tokenizer.BosId);
            stream.AddRange(tokenizer.Encode(text, addBos: false, addEos: false));
            if (addEos) stream.Add(tokenizer.EosId);
            if (stream.Count - start > window) long_++;
            docs++;
        }
        _stream = [.. stream];
        _documentsSplit = long_;
        Documents = docs;
        Window = window;
        Stride = s;
        PromptTokens = promptTokens;
        var count = 0;
        if (promptTokens is { } prompt)
        {
            // A window is kept while its completion has a token: start + prompt_tokens is inside the stream.
            if (_stream.Length > prompt) count = (_stream.Length - 1 - prompt) / s + 1;
        }
        else
        {
            // A window is kept while it trains at least one label not trained before: label p (the token after p) is
            // new in window k when p >= the end of window k-1.
            for (long start = 0, covered = 0; covered < _stream.Length - 1; start += s, count++)
                covered = Math.Min(start + window, _stream.Length - 1);
        }
        Count = count;
    }

    /// <summary>Tokens per window.</summary>
    public int Window { get; }

    /// <summary>Tokens between window starts.</summary>
    public int Stride { get; }

    /// <summary>Prompt tokens of each window (prompt-completion windows), or null (every transition a label).</summary>
    public int? PromptTokens { get; }

    /// <summary>Documents read.</summary>
    public long Documents { get; }

    /// <summary>Documents longer than a window, hence split across windows (never truncated).</summary>
    public long DocumentsSplit => _documentsSplit;

    /// <summary>The whole token stream.</summary>
    public ReadOnlySpan<int> Stream => _stream;

    /// <inheritdoc/>
    public int Count { get; }

    /// <summary>The number of labels trained over all windows: every transition of the stream once.</summary>
    public long Targets => Math.Max(0, _stream.Length - 1);

    /// <inheritdoc/>
    public string Summary =>
        $"{Documents:N0} document{(Documents == 1 ? "" : "s")}, {_stream.Length:N0} tokens in one stream, {Count:N0} windows of {Window} " +
        $"(stride {Stride}{(PromptTokens is { } p ? $", each a {p}-token prompt and its completion" : "")}); {DocumentsSplit:N0} document{(DocumentsSplit == 1 ? "" : "s")} longer than a window split across windows, none truncated";

    /// <inheritdoc/>
    public Sample this[int index]
    {
        get
        {
            if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"dataset has {Count} windows");
            var start = (long)index * Stride;
            var end = Math.Min(start + Window, _stream.Length);
            var tokens = _stream[(int)start..(int)end];
            var labels = new int[tokens.Length];
            if (PromptTokens is { } prompt)
            {
                // Position i predicts token i + 1: the completion tokens [prompt, end - start) are predicted from
                // positions [prompt - 1, end - start - 1); the last position's label would be the next window's.
                for (var i = 0; i < labels.Length; i++)
                    labels[i] = i >= prompt - 1 && i + 1 < tokens.Length ? tokens[i + 1] : Sample.IgnoreIndex;
                return new Sample(tokens, labels);
            }
            var newFrom = index == 0 ? 0 : (index - 1L) * Stride + Window; // labels before this were trained by window index-1
            for (var i = 0; i < labels.Length; i++)
            {
                var p = start + i;
                labels[i] = p >= newFrom && p + 1 < _stream.Length ? _stream[p + 1] : Sample.IgnoreIndex;
            }
            return new Sample(tokens, labels);
        }
    }
}

/// <summary>A contiguous range of another dataset's samples (a held-out split).</summary>
public sealed class SubsetDataset : ISampleDataset, IDatasetSummary
{
    private readonly ISampleDataset _inner;
    private readonly int _start;

    /// <summary>Samples [<paramref name="start"/>, <paramref name="start"/> + <paramref name="count"/>) of <paramref name="inner"/>.</summary>
    public SubsetDataset(ISampleDataset inner, int start, int count, string name)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, inner.Count);
        _inner = inner;
        _start = start;
        Count = count;
        Name = name;
    }

    /// <summary>"train" or "validation".</summary>
    public string Name { get; }

    /// <inheritdoc/>
    public int Count { get; }

    /// <summary>The dataset this is a part of.</summary>
    public ISampleDataset Inner => _inner;

    /// <inheritdoc/>
    public Sample this[int index] => (uint)index < (uint)Count ? _inner[_start + index]
        : throw new ArgumentOutOfRangeException(nameof(index), index, $"{Name} split has {Count} samples");

    /// <inheritdoc/>
    public string Summary => $"{Name}: samples {_start:N0}..{_start + Count - 1:N0} of {_inner.Count:N0}";

    /// <summary>
    /// Holds out the last <paramref name="fraction"/> of <paramref name="dataset"/> (the tail of a text stream: text the
    /// model never trains on, not interleaved with what it does), at least one sample each side.
    /// </summary>
    public static (SubsetDataset Train, SubsetDataset Validation) HoldOut(ISampleDataset dataset, double fraction)
    {
        if (!(fraction > 0 && fraction < 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "validation_split must be in (0, 1)");
        var held = (int)Math.Ceiling(dataset.Count * fraction);
        if (held < 1 || dataset.Count - held < 1)
            throw new ArgumentException($"validation_split {fraction} of {dataset.Count} samples leaves {dataset.Count - held} to train on and {held} held out; each side needs at least one", nameof(fraction));
        var cut = dataset.Count - held;
        return (new SubsetDataset(dataset, 0, cut, "train"), new SubsetDataset(dataset, cut, held, "validation"));
    }
}

/// <summary>Setup-log lines for a dataset and what it wraps.</summary>
public static class DatasetSummary
{
    /// <summary>The <see cref="IDatasetSummary"/> lines of <paramref name="dataset"/> and the datasets inside it.</summary>
    public static IEnumerable<string> Lines(ISampleDataset dataset)
    {
        switch (dataset)
        {
            case IDatasetSummary s when dataset is not SubsetDataset:
                yield return s.Summary;
                break;
            case SubsetDataset sub:
                foreach (var l in Lines(sub.Inner)) yield return l;
                yield return sub.Summary;
                break;
            case PackedDataset p:
                foreach (var l in Lines(p.Source)) yield return l;
                break;
            case ConcatDataset c:
                foreach (var part in c.Parts)
                    foreach (var l in Lines(part)) yield return l;
                break;
        }
    }
}

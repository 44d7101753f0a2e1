// Perplexity of a text, computed as lm-evaluation-harness's loglikelihood_rolling does (the wikitext task):
// the text is tokenised without special tokens and cut into non-overlapping prediction windows of max_length tokens;
// the first window is conditioned on the prefix token (BOS), each later window on as many preceding tokens as fit
// (so every token is predicted exactly once, each window with up to max_length tokens of input). Windows are then
// scored as ordinary (context, continuation) rows (make_disjoint_window + _loglikelihood_tokens).
// Reported: per-token loss and token perplexity, word perplexity, byte perplexity and bits per byte (the
// harness's weighted_perplexity / bits_per_byte over words = re.split(r"\s+", text), bytes = UTF-8 length).
// References: lm_eval/utils.py (get_rolling_token_windows, make_disjoint_window), lm_eval/models/huggingface.py
// (loglikelihood_rolling), lm_eval/tasks/wikitext/preprocess_wikitext.py (process_results), lm_eval/api/metrics.py.
using System.Text;
using System.Text.RegularExpressions;
using SharpTune.Tokenizers;

namespace SharpTune.Eval;

/// <summary>Perplexity figures of one text.</summary>
/// <param name="Tokens">Tokens predicted (all tokens of the text).</param>
/// <param name="Words">Whitespace-separated words (the harness's count).</param>
/// <param name="Bytes">UTF-8 bytes of the text.</param>
/// <param name="LogLikelihood">Total log-likelihood in nats.</param>
public sealed record PerplexityResult(int Tokens, int Words, int Bytes, double LogLikelihood)
{
    /// <summary>Mean negative log-likelihood per token (nats): the training loss.</summary>
    public double LossPerToken => -LogLikelihood / Tokens;

    /// <summary>exp(loss per token).</summary>
    public double TokenPerplexity => Math.Exp(LossPerToken);

    /// <summary>exp(-loglikelihood / words), the harness's word_perplexity.</summary>
    public double WordPerplexity => Math.Exp(-LogLikelihood / Words);

    /// <summary>exp(-loglikelihood / bytes), the harness's byte_perplexity.</summary>
    public double BytePerplexity => Math.Exp(-LogLikelihood / Bytes);

    /// <summary>-loglikelihood / bytes / ln 2, the harness's bits_per_byte.</summary>
    public double BitsPerByte => -LogLikelihood / Bytes / Math.Log(2);
}

/// <summary>One passage's figures, a line of <c>perplexity_passages.jsonl</c>.</summary>
/// <param name="File">The scored text file.</param>
/// <param name="Passage">Index of the passage in the file (see <see cref="Perplexity.Passages"/>).</param>
/// <param name="Tokens">Tokens predicted.</param>
/// <param name="Bytes">UTF-8 bytes of the passage.</param>
/// <param name="LogLikelihood">Total log-likelihood in nats.</param>
public sealed record PassageScore(string File, int Passage, int Tokens, int Bytes, double LogLikelihood)
{
    /// <summary>The file name the evaluate recipe writes into its output folder.</summary>
    public const string FileName = "perplexity_passages.jsonl";

    /// <summary>Serializer options of the file (snake_case keys).</summary>
    public static readonly System.Text.Json.JsonSerializerOptions Json = new() { PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower };

    /// <summary>Reads a passages file.</summary>
    public static IReadOnlyList<PassageScore> Read(string path) =>
        [.. System.IO.File.ReadLines(path).Where(l => l.Length > 0).Select((l, i) =>
            System.Text.Json.JsonSerializer.Deserialize<PassageScore>(l, Json) ?? throw new InvalidDataException($"{path}: line {i + 1} is not a passage record"))];
}

/// <summary>Rolling-window perplexity.</summary>
public static partial class Perplexity
{
    /// <summary>
    /// The harness's rolling windows with context_len = 1: (input-side context ids, predicted ids) pairs that
    /// predict every token once; the first is conditioned on <paramref name="prefixToken"/>.
    /// </summary>
    public static IEnumerable<EncodedRequest> RollingWindows(IReadOnlyList<int> tokens, int prefixToken, int maxLength)
    {
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "max length must be at least 1");
        if (tokens.Count == 0) yield break;
        var first = Math.Min(maxLength, tokens.Count);
        yield return new EncodedRequest([prefixToken], Slice(tokens, 0, first));
        var predicted = first;
        while (predicted < tokens.Count)
        {
            var count = Math.Min(tokens.Count - predicted, maxLength);
            var end = predicted + count;
            // The input window is the max_length tokens before `end`, shifted by one; its last `count` inputs are the
            // continuation's own tokens, so the disjoint context is what precedes them.
            var contextStart = Math.Max(0, end - maxLength - 1);
            yield return new EncodedRequest(Slice(tokens, contextStart, predicted - contextStart), Slice(tokens, predicted, count));
            predicted = end;
        }
    }

    /// <summary>Scores <paramref name="text"/> and returns its perplexity figures.</summary>
    public static PerplexityResult Compute(ICausalLm model, ITokenizer tokenizer, string text, int batchSize = 8,
        int? maxLength = null, IProgress<ScoringProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0) throw new ArgumentException("cannot compute the perplexity of an empty text", nameof(text));
        var scorer = new LoglikelihoodScorer(model, tokenizer, batchSize, sharedContext: false, maxLength);
        var tokens = tokenizer.Encode(text, addBos: false, addEos: false);
        var prefix = tokenizer.BosId >= 0 ? tokenizer.BosId : tokenizer.EosId;
        var windows = RollingWindows(tokens, prefix, scorer.MaxLength).ToArray();
        var results = scorer.ScoreEncoded(windows, progress);
        var words = Whitespace().Split(text).Length;
        return new PerplexityResult(tokens.Count, words, Encoding.UTF8.GetByteCount(text), results.Sum(r => r.LogLikelihood));
    }

    /// <summary>
    /// Cuts <paramref name="text"/> into passages at blank lines, each at least <paramref name="minBytes"/> UTF-8 bytes
    /// (consecutive paragraphs are merged until the passage is that long; a shorter tail joins the previous passage).
    /// The passages are contiguous and cover the text exactly: concatenated they give it back. They are the units a
    /// bootstrap resamples, and they do not depend on any tokenizer, so two models with different tokenizers are
    /// scored on the same units and can be compared passage by passage.
    /// </summary>
    public static IReadOnlyList<string> Passages(string text, int minBytes)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (minBytes < 1) throw new ArgumentOutOfRangeException(nameof(minBytes), minBytes, "a passage must be at least 1 byte");
        var passages = new List<string>();
        var start = 0;
        var position = 0;
        while (position < text.Length)
        {
            var blank = text.IndexOf("\n\n", position, StringComparison.Ordinal);
            var end = blank < 0 ? text.Length : blank + 2;
            while (end < text.Length && text[end] == '\n') end++; // a run of blank lines stays with the paragraph before it
            position = end;
            if (Encoding.UTF8.GetByteCount(text.AsSpan(start, end - start)) >= minBytes || end == text.Length)
            {
                passages.Add(text[start..end]);
                start = end;
            }
        }
        if (passages.Count > 1 && Encoding.UTF8.GetByteCount(passages[^1]) < minBytes)
        {
            passages[^2] += passages[^1];
            passages.RemoveAt(passages.Count - 1);
        }
        return passages;
    }

    /// <summary>
    /// Scores each passage as its own document (rolling windows, the first conditioned on the prefix token) in one
    /// batched pass over all their windows; returns one result per passage, in order. Summed, the results give the
    /// perplexity of the passages as separate documents (no context crosses a passage boundary).
    /// </summary>
    public static IReadOnlyList<PerplexityResult> ComputePassages(ICausalLm model, ITokenizer tokenizer, IReadOnlyList<string> passages,
        int batchSize = 8, int? maxLength = null, IProgress<ScoringProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(passages);
        var scorer = new LoglikelihoodScorer(model, tokenizer, batchSize, sharedContext: false, maxLength);
        var prefix = tokenizer.BosId >= 0 ? tokenizer.BosId : tokenizer.EosId;
        var windows = new List<EncodedRequest>();
        var owner = new List<int>();
        var counts = new int[passages.Count];
        for (var p = 0; p < passages.Count; p++)
        {
            if (passages[p].Length == 0) throw new ArgumentException($"passage {p} is empty", nameof(passages));
            var tokens = tokenizer.Encode(passages[p], addBos: false, addEos: false);
            counts[p] = tokens.Count;
            foreach (var w in RollingWindows(tokens, prefix, scorer.MaxLength))
            {
                windows.Add(w);
                owner.Add(p);
            }
        }
        var scored = scorer.ScoreEncoded(windows, progress);
        var ll = new double[passages.Count];
        for (var i = 0; i < scored.Count; i++) ll[owner[i]] += scored[i].LogLikelihood;
        return [.. passages.Select((text, p) => new PerplexityResult(counts[p], Whitespace().Split(text).Length, Encoding.UTF8.GetByteCount(text), ll[p]))];
    }

    /// <summary>Reads a UTF-8 text file and scores it as one document.</summary>
    public static PerplexityResult ComputeFile(ICausalLm model, ITokenizer tokenizer, string path, int batchSize = 8,
        int? maxLength = null, IProgress<ScoringProgress>? progress = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"text file not found: {path}", path);
        return Compute(model, tokenizer, File.ReadAllText(path, Encoding.UTF8), batchSize, maxLength, progress);
    }

    private static int[] Slice(IReadOnlyList<int> list, int start, int count)
    {
        var a = new int[count];
        for (var i = 0; i < count; i++) a[i] = list[start + i];
        return a;
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}

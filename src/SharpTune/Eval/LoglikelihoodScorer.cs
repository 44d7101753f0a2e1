// Log-likelihood scoring with lm-evaluation-harness semantics (HF causal-LM backend):
//  - trailing whitespace of the context moves to the front of the continuation;
//  - the whole string and the context are tokenised without special tokens; the continuation ids are the whole
//    string's ids after the first len(context ids) (so a token merged across the boundary is not scored twice);
//  - the model input is (context + continuation)[-(max_length + 1):][:-1]: left truncation keeps the last tokens;
//  - rows are right-padded with 0 (harmless under a causal mask) and sorted longest first into batches;
//  - score = sum of log_softmax at the continuation positions, is_greedy = argmax equals every continuation token.
// On top of that, requests sharing a context (hellaswag's four endings) can be packed into one sequence with a tree
// mask (see SharedContextPacking.cs): same numbers, the context is run once.
// References: lm_eval/api/model.py (TemplateLM._encode_pair, loglikelihood),
// lm_eval/models/huggingface.py (HFLM._loglikelihood_tokens, tok_encode, prefix_token_id).
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Eval;

/// <summary>Scores (context, continuation) pairs exactly as lm-evaluation-harness's Hugging Face backend does.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>v</c> vocab, <c>n</c> scored positions.</remarks>
public sealed class LoglikelihoodScorer
{
    private readonly ICausalLm _model;
    private readonly ITokenizer _tokenizer;
    private readonly int _batchSize;
    private readonly bool _sharedContext;
    private readonly int _maxLength;

    /// <param name="model">The model to score with.</param>
    /// <param name="tokenizer">Its tokenizer; encoded without special tokens, as the harness does by default.</param>
    /// <param name="batchSize">Sequences per forward pass.</param>
    /// <param name="sharedContext">Pack requests with the same context into one tree-masked sequence.</param>
    /// <param name="maxLength">The harness's <c>max_length</c>; defaults to the model's <see cref="ICausalLm.MaxSeqLen"/>.</param>
    public LoglikelihoodScorer(ICausalLm model, ITokenizer tokenizer, int batchSize = 8, bool sharedContext = true,
        int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batch size must be at least 1");
        var max = maxLength ?? model.MaxSeqLen;
        if (max < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), max, "max length must be at least 1");
        if (max > model.MaxSeqLen)
            throw new ArgumentOutOfRangeException(nameof(maxLength), max, $"max length exceeds the model's MaxSeqLen {model.MaxSeqLen}");
        _model = model;
        _tokenizer = tokenizer;
        _batchSize = batchSize;
        _sharedContext = sharedContext;
        _maxLength = max;
    }

    /// <summary>The harness's max_length in use.</summary>
    public int MaxLength => _maxLength;

    /// <summary>
    /// Moves the context's trailing whitespace to the front of the continuation (the harness's <c>n_spaces</c> rule),
    /// so that "Answer: " + "A" is scored as "Answer:" + " A".
    /// </summary>
    public static (string Context, string Continuation) MoveTrailingWhitespace(string context, string continuation)
    {
        var trimmed = context.TrimEnd();
        var n = context.Length - trimmed.Length;
        return n == 0 ? (context, continuation) : (trimmed, context[^n..] + continuation);
    }

    /// <summary>Tokenises one request the way the harness does (see the file header).</summary>
    public EncodedRequest Encode(LoglikelihoodRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Context.Length == 0)
        {
            // The harness conditions an empty context on the prefix token (BOS, else EOS).
            var prefix = _tokenizer.BosId >= 0 ? _tokenizer.BosId : _tokenizer.EosId;
            return new EncodedRequest([prefix], _tokenizer.Encode(request.Continuation, addBos: false, addEos: false).ToArray());
        }
        var (context, continuation) = MoveTrailingWhitespace(request.Context, request.Continuation);
        var whole = _tokenizer.Encode(context + continuation, addBos: false, addEos: false);
        var contextIds = _tokenizer.Encode(context, addBos: false, addEos: false);
        var continuationIds = whole.Skip(contextIds.Count).ToArray();
        return new EncodedRequest(contextIds.ToArray(), continuationIds);
    }

    /// <summary>Tokenises and scores <paramref name="requests"/>; results come back in request order.</summary>
    public IReadOnlyList<LoglikelihoodResult> Score(IReadOnlyList<LoglikelihoodRequest> requests,
        IProgress<ScoringProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(requests);
        return ScoreEncoded(requests.Select(Encode).ToArray(), progress);
    }

    /// <summary>Scores already tokenised requests; results come back in request order.</summary>
    public IReadOnlyList<LoglikelihoodResult> ScoreEncoded(IReadOnlyList<EncodedRequest> requests,
        IProgress<ScoringProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(requests);
        for (var i = 0; i < requests.Count; i++) Validate(requests[i], i);

        var results = new LoglikelihoodResult[requests.Count];
        var plainRows = new List<ScoringRow>();
        var packedRows = new List<ScoringRow>();
        if (_sharedContext)
        {
            foreach (var row in SharedContextPacking.Pack(requests, _maxLength))
                (row.IsPacked ? packedRows : plainRows).Add(row);
        }
        else
        {
            for (var i = 0; i < requests.Count; i++) plainRows.Add(ScoringRow.Plain(i, requests[i], _maxLength));
        }

        var done = 0;
        using var noGrad = torch.no_grad();
        foreach (var rows in new[] { plainRows, packedRows })
        {
            // Longest first, as the harness's Collator does, so padding stays small.
            var ordered = rows.OrderByDescending(r => r.Tokens.Length).ToList();
            for (var start = 0; start < ordered.Count; start += _batchSize)
            {
                var batch = ordered.GetRange(start, Math.Min(_batchSize, ordered.Count - start));
                RunBatch(batch, results);
                done += batch.Sum(r => r.Targets.Count);
                progress?.Report(new ScoringProgress(done, requests.Count));
            }
        }
        return results;
    }

    private void Validate(EncodedRequest r, int index)
    {
        if (r.Context.Count == 0)
            throw new ArgumentException($"request {index}: the context encodes to no tokens", nameof(r));
        if (r.Continuation.Count == 0)
            throw new ArgumentException(
                $"request {index}: the continuation encodes to no tokens (the harness requires at least one)", nameof(r));
        if (r.Continuation.Count > _maxLength)
            throw new ArgumentException(
                $"request {index}: continuation has {r.Continuation.Count} tokens, more than max length {_maxLength}", nameof(r));
    }

    private void RunBatch(List<ScoringRow> batch, LoglikelihoodResult[] results)
    {
        using var scope = torch.NewDisposeScope();
        var b = batch.Count;
        var s = batch.Max(r => r.Tokens.Length);
        var packed = batch[0].IsPacked;

        var tokenData = new long[b * s]; // right-padded with 0, as the harness pads
        for (var i = 0; i < b; i++) Array.Copy(batch[i].Tokens, 0, tokenData, i * s, batch[i].Tokens.Length);
        var tokens = torch.tensor(tokenData, new long[] { b, s }, dtype: ScalarType.Int64); // [b, s]

        Tensor? mask = null, positions = null;
        if (packed)
        {
            mask = SharedContextPacking.BuildMask(batch, s);           // [b, s, s]
            positions = SharedContextPacking.BuildPositions(batch, s); // [b, s]
        }

        var logits = _model.Logits(tokens, mask, positions); // [b, s, v]
        if (logits.dim() != 3 || logits.shape[0] != b || logits.shape[1] != s)
            throw new InvalidOperationException(
                $"model returned logits of shape [{string.Join(", ", logits.shape)}], expected [{b}, {s}, v]");
        var v = logits.shape[2];

        // Gather only the positions that predict continuation tokens before the log-softmax: [n].
        var flatIndex = new List<long>();
        var targetIds = new List<long>();
        for (var i = 0; i < b; i++)
            foreach (var t in batch[i].Targets)
                for (var j = 0; j < t.Tokens.Length; j++)
                {
                    flatIndex.Add((long)i * s + t.Positions[j]);
                    targetIds.Add(t.Tokens[j]);
                }
        var picked = logits.reshape(b * s, v).index_select(0, torch.tensor(flatIndex.ToArray(), device: logits.device)); // [n, v]
        if (picked.dtype != ScalarType.Float64) picked = picked.to_type(ScalarType.Float32);
        var logp = torch.nn.functional.log_softmax(picked, 1); // [n, v]
        var targets = torch.tensor(targetIds.ToArray(), device: logits.device).unsqueeze(1); // [n, 1]
        var tokenLogp = logp.gather(1, targets).squeeze(1).to_type(ScalarType.Float64).cpu(); // [n]
        var greedy = logp.argmax(1).eq(targets.squeeze(1)).cpu(); // [n]
        var lp = tokenLogp.data<double>().ToArray();
        var gr = greedy.data<bool>().ToArray();

        var k = 0;
        foreach (var row in batch)
            foreach (var t in row.Targets)
            {
                double sum = 0;
                var allGreedy = true;
                for (var j = 0; j < t.Tokens.Length; j++, k++)
                {
                    sum += lp[k];
                    allGreedy &= gr[k];
                }
                results[t.RequestIndex] = new LoglikelihoodResult(sum, allGreedy);
            }
    }
}

/// <summary>One model input row and the continuations scored from it.</summary>
internal sealed class ScoringRow
{
    public required long[] Tokens { get; init; }

    /// <summary>Position ids (packed rows only).</summary>
    public long[]? Positions { get; init; }

    /// <summary>Length of the shared context (packed rows only).</summary>
    public int ContextLength { get; init; }

    /// <summary>Start and length of each continuation segment after the context (packed rows only).</summary>
    public IReadOnlyList<(int Start, int Length)> Segments { get; init; } = [];

    public required IReadOnlyList<ScoringTarget> Targets { get; init; }

    public bool IsPacked => Positions is not null;

    /// <summary>The harness's row: (context + continuation)[-(max + 1):][:-1], scored at its last positions.</summary>
    public static ScoringRow Plain(int requestIndex, EncodedRequest r, int maxLength)
    {
        var all = r.Context.Concat(r.Continuation).ToArray();
        var keep = Math.Min(all.Length, maxLength + 1);
        var input = all.Skip(all.Length - keep).Take(keep - 1).Select(x => (long)x).ToArray();
        var n = r.Continuation.Count;
        var positions = Enumerable.Range(input.Length - n, n).ToArray();
        return new ScoringRow
        {
            Tokens = input,
            Targets = [new ScoringTarget(requestIndex, positions, r.Continuation.Select(x => (long)x).ToArray())],
        };
    }
}

/// <summary>Which positions of a row predict which continuation tokens of which request.</summary>
internal sealed record ScoringTarget(int RequestIndex, int[] Positions, long[] Tokens);

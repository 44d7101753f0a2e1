// Autoregressive text generation with the KV cache (torchtune generation.generate / sample): greedy at
// temperature 0, otherwise temperature + top-k + top-p (nucleus, Holtzman et al. 2019) sampling from a seeded
// generator. Prompts of different lengths are decoded together, left-padded (as transformers' generate with
// padding_side="left"): every row's real tokens end in the same slot, so one new token per row is appended per step
// into the preallocated cache, pad slots are masked out of attention and each row's RoPE positions start at 0 at its
// first real token; without padding no mask is built. The prompt is processed by the modules; each new token goes
// through FusedDecoder (the same function in far fewer libtorch calls, from weights fused at the start of every
// generation) where the model allows it, else through the modules. Runs under inference mode. The sampling runs on
// the model's device; the sampled ids are the one host copy per step (needed to stop at EOS and to stream). Library
// code: returns ids and timings, prints nothing.
using System.Diagnostics;
using SharpTune.Modules;
using static TorchSharp.torch;

namespace SharpTune.Eval;

/// <summary>Decoding settings.</summary>
public sealed record GenerationOptions
{
    /// <summary>Maximum tokens to generate (capped by the model's max_seq_len).</summary>
    public int MaxNewTokens { get; init; } = 256;

    /// <summary>0 = greedy (argmax); otherwise logits are divided by it before sampling.</summary>
    public double Temperature { get; init; }

    /// <summary>Keep only the k most likely tokens (null or 0 = off).</summary>
    public int? TopK { get; init; }

    /// <summary>Keep the smallest set of tokens whose probability reaches p (null or 1 = off).</summary>
    public double? TopP { get; init; }

    /// <summary>Seed of the sampling generator (null = 0; only used when sampling).</summary>
    public ulong? Seed { get; init; }

    /// <summary>Ids that end generation; the stop token is included in the output.</summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];

    /// <summary>Used as the whole prompt when the prompt is empty.</summary>
    public int? BosId { get; init; }

    /// <summary>Decode through the modules even where the fused step applies (tests compare the two).</summary>
    internal bool ModulePathOnly { get; init; }

    /// <summary>Throws on out-of-range values.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"max_new_tokens must be >= 0, got {MaxNewTokens}");
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new ArgumentException($"temperature must be >= 0, got {Temperature}");
        if (TopK is < 0) throw new ArgumentException($"top_k must be >= 0, got {TopK}");
        if (TopP is { } p && (p <= 0 || p > 1)) throw new ArgumentException($"top_p must be in (0, 1], got {p}");
    }
}

/// <summary>Generated ids of a batch of prompts and timing.</summary>
/// <param name="PromptTokens">Each prompt as fed (BOS alone for an empty prompt), unpadded.</param>
/// <param name="GeneratedTokens">Each row's new tokens, including its final stop token if one was produced.</param>
/// <param name="StoppedAtStopToken">Per row: true when a stop token ended it.</param>
/// <param name="PrefillTime">Time to process the prompts and pick the first tokens.</param>
/// <param name="DecodeTime">Time for the remaining tokens.</param>
public sealed record BatchGenerationResult(IReadOnlyList<IReadOnlyList<int>> PromptTokens, IReadOnlyList<IReadOnlyList<int>> GeneratedTokens,
    IReadOnlyList<bool> StoppedAtStopToken, TimeSpan PrefillTime, TimeSpan DecodeTime)
{
    /// <summary>Generated tokens of all rows per second over prefill and decoding.</summary>
    public double TokensPerSecond
    {
        get
        {
            var s = (PrefillTime + DecodeTime).TotalSeconds;
            return s > 0 ? GeneratedTokens.Sum(g => g.Count) / s : 0;
        }
    }
}

/// <summary>Generated ids and timing.</summary>
/// <param name="PromptTokens">The prompt as fed (BOS alone for an empty prompt).</param>
/// <param name="GeneratedTokens">New tokens, including a final stop token if one was produced.</param>
/// <param name="StoppedAtStopToken">True when a stop token ended generation.</param>
/// <param name="PrefillTime">Time to process the prompt and pick the first token.</param>
/// <param name="DecodeTime">Time for the remaining tokens.</param>
public sealed record GenerationResult(IReadOnlyList<int> PromptTokens, IReadOnlyList<int> GeneratedTokens, bool StoppedAtStopToken,
    TimeSpan PrefillTime, TimeSpan DecodeTime)
{
    /// <summary>Generated tokens per second over prefill and decoding.</summary>
    public double TokensPerSecond
    {
        get
        {
            var s = (PrefillTime + DecodeTime).TotalSeconds;
            return s > 0 ? GeneratedTokens.Count / s : 0;
        }
    }
}

/// <summary>Autoregressive decoding, one sequence or a left-padded batch.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>p</c> longest prompt, <c>c</c> cache slots, <c>v</c> vocabulary.</remarks>
public static class Generation
{
    /// <summary>
    /// Generates up to <see cref="GenerationOptions.MaxNewTokens"/> tokens after <paramref name="prompt"/>. Sets up the
    /// model's KV caches (and removes them afterwards) and runs in eval mode without gradients.
    /// <paramref name="onToken"/> receives each new token as soon as it is picked (for streaming).
    /// </summary>
    public static GenerationResult Generate(TransformerDecoder model, IReadOnlyList<int> prompt, GenerationOptions options, Action<int>? onToken = null)
    {
        var r = GenerateBatch(model, [prompt], options, onToken: onToken is null ? null : (_, t) => onToken(t));
        return new GenerationResult(r.PromptTokens[0], r.GeneratedTokens[0], r.StoppedAtStopToken[0], r.PrefillTime, r.DecodeTime);
    }

    /// <summary>
    /// Generates for every prompt at once (left-padded into one batch). Each row stops at its own stop token; the
    /// batch ends when every row has stopped or after max_new_tokens (capped so the longest prompt fits the model's
    /// max_seq_len). Sampling draws from <paramref name="generator"/> when given (its state advances), else from a
    /// generator seeded with <see cref="GenerationOptions.Seed"/>. <paramref name="onToken"/> receives (row, token)
    /// for every row still running, once per step. Sets up the KV caches and removes them afterwards; eval mode, no
    /// gradients. Greedy output of a row does not depend on the other rows of the batch.
    /// </summary>
    public static BatchGenerationResult GenerateBatch(TransformerDecoder model, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        Generator? generator = null, Action<int, int>? onToken = null)
    {
        options.Validate();
        if (prompts.Count == 0) throw new ArgumentException("no prompts to generate from", nameof(prompts));
        var rows = prompts.Select((p, i) => CheckedPrompt(model, p, options, i)).ToList();
        var b = rows.Count;
        var p = rows.Max(r => r.Count);
        var maxNew = Math.Min(options.MaxNewTokens, model.MaxSeqLen - p + 1);
        var generated = rows.Select(_ => new List<int>()).ToArray();
        var stopped = new bool[b];
        if (maxNew <= 0) return Result(rows, generated, stopped, TimeSpan.Zero, TimeSpan.Zero);

        var wasTraining = model.training;
        model.eval();
        var device = model.OutputWeight.device;
        var ownGenerator = generator is null && options.Temperature > 0 ? new Generator(options.Seed ?? 0, device) : null;
        var sampler = generator ?? ownGenerator;
        var stop = options.StopTokens.ToHashSet();
        var clock = Stopwatch.StartNew();
        var prefill = TimeSpan.Zero;
        var capacity = Math.Max(1, p + maxNew - 1);
        FusedDecoder? fused = null;
        try
        {
            using var inference = inference_mode();
            using var outer = NewDisposeScope();
            var (tokens, padSlots, positions) = Layout(rows, p, capacity, device); // [b, p], [b, c] or null, [b|1, c]
            fused = options.ModulePathOnly ? null : FusedDecoder.TryCreate(model, b, capacity, positions, padSlots); // sets up the caches, or:
            if (fused is null) model.SetupCaches(b, capacity);
            Tensor hidden;
            Tensor? keyMask = null; // [b, 1, c]: the module path's mask for one new token (null: every cached key)
            if (padSlots is null)
            {
                hidden = model.ForwardHidden(tokens); // [b, p, d], causal
            }
            else
            {
                keyMask = padSlots.logical_not().unsqueeze(1);
                hidden = model.ForwardHidden(tokens, PrefillMask(keyMask, p), positions.narrow(1, 0, p)); // [b, p, d]
            }
            var next = SampleBatch(model.ApplyOutput(hidden.select(1, p - 1)).to_type(ScalarType.Float32), options, sampler); // [b]
            var active = b;
            for (var step = 0; ; step++)
            {
                var ids = next.cpu().data<long>().ToArray(); // the one host copy per step
                if (step == 0) prefill = clock.Elapsed;
                for (var i = 0; i < b; i++)
                {
                    if (stopped[i]) continue; // a finished row keeps decoding in the batch, unread
                    var id = (int)ids[i];
                    generated[i].Add(id);
                    onToken?.Invoke(i, id);
                    if (stop.Contains(id)) { stopped[i] = true; active--; }
                }
                if (active == 0 || step + 1 >= maxNew) break;
                using var scope = NewDisposeScope();
                var slot = p + step; // the cache slot the token just picked goes into
                hidden = fused?.Step(next, slot) // [b, d]
                    ?? model.ForwardHidden(next.unsqueeze(1), keyMask, keyMask is null ? null : positions.narrow(1, slot, 1)).select(1, 0);
                next = SampleBatch(model.ApplyOutput(hidden).to_type(ScalarType.Float32), options, sampler).MoveToOuterDisposeScope();
            }
        }
        finally
        {
            model.RemoveCaches();
            fused?.Dispose();
            ownGenerator?.Dispose();
            if (wasTraining) model.train();
        }
        return Result(rows, generated, stopped, prefill, clock.Elapsed - prefill);
    }

    private static BatchGenerationResult Result(List<List<int>> rows, List<int>[] generated, bool[] stopped, TimeSpan prefill, TimeSpan decode) =>
        new(rows, generated, stopped, prefill, decode);

    private static List<int> CheckedPrompt(TransformerDecoder model, IReadOnlyList<int> prompt, GenerationOptions options, int row)
    {
        var tokens = prompt.Count > 0 ? prompt.ToList()
            : options.BosId is { } bos ? [bos]
            : throw new ArgumentException($"prompt {row} is empty and no BOS id was given to start from");
        foreach (var t in tokens)
            if (t < 0 || t >= model.VocabSize) throw new ArgumentException($"prompt {row}: token {t} is outside the vocabulary [0, {model.VocabSize})");
        if (tokens.Count > model.MaxSeqLen)
            throw new ArgumentException($"prompt {row} of {tokens.Count} tokens exceeds max_seq_len {model.MaxSeqLen}");
        return tokens;
    }

    // The left-padded layout: prompt tokens [b, p] (pads hold id 0, never attended), the padding slots [b, c] (null
    // when every prompt has the same length) and RoPE positions of every cache slot counting from each row's first
    // real token ([b, c], or [1, c] shared by all rows without padding).
    internal static (Tensor Tokens, Tensor? PadSlots, Tensor Positions) Layout(List<List<int>> rows, int p, int capacity, Device device)
    {
        var b = rows.Count;
        var tokens = new long[b * p];
        for (var i = 0; i < b; i++)
            for (var j = 0; j < rows[i].Count; j++) tokens[i * p + p - rows[i].Count + j] = rows[i][j];
        var tokenTensor = tensor(tokens, device: device).view(b, p);
        if (rows.All(r => r.Count == p)) return (tokenTensor, null, arange(capacity, dtype: ScalarType.Int64, device: device).unsqueeze(0));
        var pad = new bool[b * capacity];
        var positions = new long[b * capacity];
        for (var i = 0; i < b; i++)
        {
            var padCount = p - rows[i].Count;
            for (var slot = 0; slot < capacity; slot++)
            {
                pad[i * capacity + slot] = slot < padCount;
                positions[i * capacity + slot] = Math.Max(0, slot - padCount);
            }
        }
        return (tokenTensor, tensor(pad, device: device).view(b, capacity), tensor(positions, device: device).view(b, capacity));
    }

    // The prefill's attention mask [b, p, p] from the real keys [b, 1, c]: causal, pad slots hidden; a pad slot sees
    // itself so its softmax has a finite entry and no NaN reaches a real row through its keys/values.
    internal static Tensor PrefillMask(Tensor realKeys, int p)
    {
        var device = realKeys.device;
        var causal = ones(p, p, dtype: ScalarType.Bool, device: device).tril();             // [p, p]
        var self = eye(p, dtype: ScalarType.Bool, device: device);                          // [p, p]
        return causal.unsqueeze(0).logical_and(realKeys.narrow(2, 0, p)).logical_or(self.unsqueeze(0)); // [b, p, p]
    }

    /// <summary>Picks the next id from logits [v] (float32): argmax at temperature 0, else filtered sampling.</summary>
    public static int Sample(Tensor logits, GenerationOptions options, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        return (int)SampleBatch(logits.unsqueeze(0), options, generator).item<long>();
    }

    /// <summary>Picks one id per row from logits [b, v] (float32) on their device: argmax at temperature 0, else
    /// temperature, top-k and top-p filtered sampling. Returns [b] int64.</summary>
    public static Tensor SampleBatch(Tensor logits, GenerationOptions options, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        if (options.Temperature == 0) return logits.argmax(-1).MoveToOuterDisposeScope();
        var finalProbs = nn.functional.softmax(Filter(logits, options), -1);
        return multinomial(finalProbs, 1, false, generator).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The logits the sampler draws from, for logits [.., v] at temperature > 0: divided by the temperature, tokens
    /// outside the top k and outside the top-p nucleus set to -inf. Their log_softmax is the sampler's log-probability
    /// of each token (what an importance weight divides by).
    /// </summary>
    public static Tensor Filter(Tensor logits, GenerationOptions options)
    {
        if (!(options.Temperature > 0)) throw new ArgumentException($"sampling needs temperature > 0, got {options.Temperature}", nameof(options));
        using var scope = NewDisposeScope();
        var scaled = logits / options.Temperature; // [.., v]
        if (options.TopK is { } k && k > 0 && k < scaled.shape[^1])
        {
            var (values, _) = scaled.topk(k, dim: -1);
            var kth = values.narrow(-1, k - 1, 1); // [.., 1]
            scaled = scaled.masked_fill(scaled.lt(kth), double.NegativeInfinity);
        }
        if (options.TopP is { } p && p < 1)
        {
            var (sorted, order) = scaled.sort(-1, descending: true);
            var probs = nn.functional.softmax(sorted, -1);
            var before = probs.cumsum(-1) - probs; // mass strictly before each token
            var drop = before.ge(p); // keep tokens until the mass reaches p (the first is always kept)
            var dropOriginal = zeros_like(drop).scatter(-1, order, drop);
            scaled = scaled.masked_fill(dropOriginal, double.NegativeInfinity);
        }
        return scaled.MoveToOuterDisposeScope();
    }
}

// Autoregressive text generation with the KV cache (torchtune generation.generate / sample): greedy at
// temperature 0, otherwise temperature + top-k + top-p (nucleus, Holtzman et al. 2019) sampling from a seeded
// generator. Library code: returns ids and timings, prints nothing.
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

    /// <summary>Throws on out-of-range values.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"max_new_tokens must be >= 0, got {MaxNewTokens}");
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new ArgumentException($"temperature must be >= 0, got {Temperature}");
        if (TopK is < 0) throw new ArgumentException($"top_k must be >= 0, got {TopK}");
        if (TopP is { } p && (p <= 0 || p > 1)) throw new ArgumentException($"top_p must be in (0, 1], got {p}");
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

/// <summary>Autoregressive decoding for a single sequence.</summary>
public static class Generation
{
    /// <summary>
    /// Generates up to <see cref="GenerationOptions.MaxNewTokens"/> tokens after <paramref name="prompt"/>. Sets up the
    /// model's KV caches (and removes them afterwards) and runs in eval mode without gradients.
    /// <paramref name="onToken"/>, when given, receives each new id as soon as it is sampled (streaming).
    /// </summary>
    public static GenerationResult Generate(TransformerDecoder model, IReadOnlyList<int> prompt, GenerationOptions options,
        Action<int>? onToken = null)
    {
        options.Validate();
        var promptTokens = prompt.Count > 0 ? prompt.ToList()
            : options.BosId is { } bos ? [bos]
            : throw new ArgumentException("the prompt is empty and no BOS id was given to start from");
        foreach (var t in promptTokens)
            if (t < 0 || t >= model.VocabSize) throw new ArgumentException($"prompt token {t} is outside the vocabulary [0, {model.VocabSize})");
        if (promptTokens.Count > model.MaxSeqLen)
            throw new ArgumentException($"prompt of {promptTokens.Count} tokens exceeds max_seq_len {model.MaxSeqLen}");
        var maxNew = Math.Min(options.MaxNewTokens, model.MaxSeqLen - promptTokens.Count + 1);
        var generated = new List<int>();
        if (maxNew <= 0) return new GenerationResult(promptTokens, generated, false, TimeSpan.Zero, TimeSpan.Zero);

        var wasTraining = model.training;
        model.eval();
        var device = model.OutputWeight.device;
        using var generator = new Generator(options.Seed ?? 0, device);
        var stop = options.StopTokens.ToHashSet();
        var stopped = false;
        var clock = Stopwatch.StartNew();
        TimeSpan prefill = TimeSpan.Zero;
        try
        {
            using var noGrad = no_grad();
            model.SetupCaches(1, Math.Max(1, Math.Min(model.MaxSeqLen, promptTokens.Count + maxNew - 1)));
            var input = promptTokens.Select(t => (long)t).ToArray();
            for (var step = 0; step < maxNew; step++)
            {
                using var scope = NewDisposeScope();
                var tokens = tensor(input, device: device).unsqueeze(0); // [1, s]
                var hidden = model.ForwardHidden(tokens); // [1, s, d]
                var logits = model.ApplyOutput(hidden.select(1, hidden.shape[1] - 1)).squeeze(0).to_type(ScalarType.Float32); // [v]
                var next = Sample(logits, options, generator);
                generated.Add(next);
                if (step == 0) prefill = clock.Elapsed;
                onToken?.Invoke(next);
                if (stop.Contains(next)) { stopped = true; break; }
                input = [next];
            }
        }
        finally
        {
            model.RemoveCaches();
            if (wasTraining) model.train();
        }
        return new GenerationResult(promptTokens, generated, stopped, prefill, clock.Elapsed - prefill);
    }

    /// <summary>Picks the next id from logits [v] (float32): argmax at temperature 0, else filtered sampling.</summary>
    public static int Sample(Tensor logits, GenerationOptions options, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        if (options.Temperature == 0) return (int)logits.argmax().item<long>();
        var scaled = logits / options.Temperature;
        if (options.TopK is { } k && k > 0 && k < scaled.shape[0])
        {
            var (values, _) = scaled.topk(k);
            var kth = values[k - 1];
            scaled = scaled.masked_fill(scaled.lt(kth), double.NegativeInfinity);
        }
        if (options.TopP is { } p && p < 1)
        {
            var (sorted, order) = scaled.sort(descending: true);
            var probs = nn.functional.softmax(sorted, -1);
            var before = probs.cumsum(0) - probs; // mass strictly before each token
            var drop = before.ge(p); // keep tokens until the mass reaches p (the first is always kept)
            var dropOriginal = zeros_like(drop).scatter(0, order, drop);
            scaled = scaled.masked_fill(dropOriginal, double.NegativeInfinity);
        }
        var finalProbs = nn.functional.softmax(scaled, -1);
        return (int)multinomial(finalProbs, 1, false, generator).item<long>();
    }
}

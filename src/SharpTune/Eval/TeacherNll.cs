// Teacher NLL of a student's sampled completions: the on-policy distillation metric of GKD (Agarwal et al. 2024,
// "On-Policy Distillation of Language Models", which scores students on their own generations) in the form TRL's GKD
// examples evaluate: the student samples a completion of each held-out prompt, and the teacher scores the sampled tokens.
// Per prompt the unit is (tokens, sum over completion tokens of -log p_teacher(token | prompt, earlier sampled tokens)),
// so the corpus figure is sum nll / sum tokens (nats per token) and its bootstrap resamples prompts (Bootstrap, MeanNll).
// At sampling temperature 1 its expectation per token is the cross-entropy H(p_S, p_T) = H(p_S) + KL(p_S || p_T) on the
// student's own prefixes: low when the student writes what the teacher finds likely, without rewarding a student that
// collapses to the teacher's most likely token (greedy decoding would, and loops). The prompts are the first tokens of
// evenly spaced, non-overlapping windows of a held-out token stream (TextStreamDataset with prompt tokens).
// All prompts are sampled by one generator seeded once, in batches: the completions are a function of (student, seed,
// prompts, sampling settings, batch size), and two students scored with the same seed share the random numbers.
using SharpTune.Data;
using SharpTune.Distillation;
using SharpTune.Modules;
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Eval;

/// <summary>Settings of the teacher-NLL evaluation (the evaluate recipe's <c>teacher_nll</c> key).</summary>
/// <param name="TeacherCheckpointDir">HF folder of the teacher (config.json and safetensors); same vocabulary as the student.</param>
/// <param name="NumPrompts">Prompts scored, evenly spaced over the held-out windows; null: every window.</param>
/// <param name="PromptTokens">Tokens of each prompt (the start of a held-out window).</param>
/// <param name="CompletionTokens">Tokens the student samples after each prompt (fewer when it samples a stop token).</param>
/// <param name="Temperature">Sampling temperature (&gt; 0: the metric is of samples, not of greedy decoding).</param>
/// <param name="TopP">Nucleus mass (1 = off).</param>
/// <param name="TopK">Top-k filter (null = off).</param>
/// <param name="Seed">Seed of the sampling generator.</param>
/// <param name="BatchSize">Prompts sampled and scored together (the samples depend on it, as on the seed).</param>
/// <param name="AddBos">Put a BOS before the held-out text (as the student's training data did or did not).</param>
public sealed record TeacherNllOptions(string TeacherCheckpointDir, int? NumPrompts = null, int PromptTokens = 64, int CompletionTokens = 64,
    double Temperature = 1.0, double TopP = 1.0, int? TopK = null, long Seed = 0, int BatchSize = 32, bool AddBos = false)
{
    /// <summary>The first invalid setting as (key, message), or null.</summary>
    public (string Key, string Message)? Problem() =>
        NumPrompts is < 1 ? ("num_prompts", $"must be at least 1 or null, got {NumPrompts}")
        : PromptTokens < 1 ? ("prompt_tokens", $"must be at least 1, got {PromptTokens}")
        : CompletionTokens < 1 ? ("completion_tokens", $"must be at least 1, got {CompletionTokens}")
        : !(Temperature > 0) || double.IsInfinity(Temperature) ? ("temperature", $"must be a finite number > 0 (the metric scores samples), got {Temperature}")
        : TopP is not (> 0 and <= 1) ? ("top_p", $"must be in (0, 1], got {TopP}")
        : TopK is < 1 ? ("top_k", $"must be at least 1 or null, got {TopK}")
        : BatchSize < 1 ? ("batch_size", $"must be at least 1, got {BatchSize}")
        : null;

    /// <summary>The student's sampling settings (stopping at <paramref name="stopTokens"/>).</summary>
    public GenerationOptions Sampling(IReadOnlyCollection<int> stopTokens) => new()
    {
        MaxNewTokens = CompletionTokens,
        Temperature = Temperature,
        TopP = TopP,
        TopK = TopK,
        StopTokens = stopTokens,
    };
}

/// <summary>One prompt's figures, a line of <c>teacher_nll.jsonl</c>.</summary>
/// <param name="Prompt">Index of the prompt's window in the held-out stream.</param>
/// <param name="Tokens">Completion tokens sampled (a final stop token included) and scored.</param>
/// <param name="Nll">Sum over them of the teacher's negative log-likelihood, in nats.</param>
public sealed record CompletionScore(int Prompt, int Tokens, double Nll)
{
    /// <summary>The file name the evaluate recipe writes into its output folder.</summary>
    public const string FileName = "teacher_nll.jsonl";

    /// <summary>Reads a completion-scores file.</summary>
    public static IReadOnlyList<CompletionScore> Read(string path) =>
        [.. File.ReadLines(path).Where(l => l.Length > 0).Select((l, i) =>
            System.Text.Json.JsonSerializer.Deserialize<CompletionScore>(l, PassageScore.Json) ?? throw new InvalidDataException($"{path}: line {i + 1} is not a completion record"))];

    /// <summary>The file's text: one JSON line per prompt.</summary>
    public static string ToJsonl(IEnumerable<CompletionScore> scores) =>
        string.Concat(scores.Select(s => System.Text.Json.JsonSerializer.Serialize(s, PassageScore.Json) + "\n"));
}

/// <summary>Samples completions with a student and scores them with a teacher.</summary>
/// <remarks>Shapes: <c>b</c> batch, <c>s</c> sequence, <c>v</c> vocabulary.</remarks>
public static class TeacherNll
{
    /// <summary>
    /// The prompts of <paramref name="windows"/> (prompt-completion windows): with <paramref name="count"/>, that many
    /// windows evenly spaced over the stream (window floor(i * n / count)), else all; as (window index, prompt tokens).
    /// </summary>
    public static IReadOnlyList<(int Window, int[] Prompt)> Prompts(ISampleDataset windows, int? count)
    {
        var n = windows.Count;
        if (n == 0) throw new ArgumentException("the held-out text makes no window with a token after its prompt", nameof(windows));
        if (count > n) throw new ArgumentOutOfRangeException(nameof(count), count, $"the held-out text makes only {n} windows");
        var k = count ?? n;
        return [.. Enumerable.Range(0, k).Select(i => (int)((long)i * n / k)).Select(w => (w, PromptCompletion.Split(windows[w], w).Prompt))];
    }

    /// <summary>
    /// Completions of <paramref name="prompts"/> sampled by <paramref name="student"/>, <paramref name="batchSize"/>
    /// prompts at a time, every batch drawing from one generator seeded with <paramref name="seed"/>.
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<int>> Sample(TransformerDecoder student, IReadOnlyList<int[]> prompts, GenerationOptions options,
        int batchSize, long seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (!(options.Temperature > 0)) throw new ArgumentException($"the metric scores samples: temperature must be > 0, got {options.Temperature}", nameof(options));
        var longest = prompts.Max(p => p.Length);
        if (longest + options.MaxNewTokens > student.MaxSeqLen)
            throw new ArgumentException($"a {longest}-token prompt and {options.MaxNewTokens} completion tokens exceed the student's max_seq_len {student.MaxSeqLen}");
        using var generator = new Generator(unchecked((ulong)seed), student.OutputWeight.device);
        var completions = new List<IReadOnlyList<int>>(prompts.Count);
        for (var start = 0; start < prompts.Count; start += batchSize)
        {
            var batch = prompts.Skip(start).Take(batchSize).Select(p => (IReadOnlyList<int>)p).ToList();
            completions.AddRange(Generation.GenerateBatch(student, batch, options, generator).GeneratedTokens);
        }
        return completions;
    }

    /// <summary>
    /// The teacher's NLL of each completion given its prompt: one forward of prompt + completion, summed over the
    /// completion tokens, through the evaluation harness's scorer (<see cref="LoglikelihoodScorer.ScoreEncoded"/>:
    /// rows right-padded longest first, float32 log-softmax of the completion positions only, sums in double).
    /// <paramref name="tokenizer"/> is the teacher's, which the scorer holds; the requests are already token ids.
    /// </summary>
    public static IReadOnlyList<(int Tokens, double Nll)> Score(TransformerDecoder teacher, ITokenizer tokenizer, IReadOnlyList<int[]> prompts,
        IReadOnlyList<IReadOnlyList<int>> completions, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (prompts.Count != completions.Count) throw new ArgumentException($"{prompts.Count} prompts but {completions.Count} completions");
        var longest = prompts.Select((p, i) => p.Length + completions[i].Count).DefaultIfEmpty(0).Max();
        if (longest > teacher.MaxSeqLen) // the scorer would cut the prompt's start, as the harness does; a metric must not
            throw new ArgumentException($"prompt + completion of {longest} tokens exceed the teacher's max_seq_len {teacher.MaxSeqLen}");
        var wasTraining = teacher.training;
        teacher.eval();
        try
        {
            var scorer = new LoglikelihoodScorer(new DecoderCausalLm(teacher), tokenizer, batchSize, sharedContext: false);
            var results = scorer.ScoreEncoded([.. prompts.Select((p, i) => new EncodedRequest(p, completions[i]))]);
            return [.. results.Select((r, i) => (completions[i].Count, -r.LogLikelihood))];
        }
        finally
        {
            if (wasTraining) teacher.train();
        }
    }
}

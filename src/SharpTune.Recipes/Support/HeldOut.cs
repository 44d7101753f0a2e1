// Held-out validation for the training recipes: the split (`validation_dataset`, or `validation_split` of the
// training data's tail), the mean cross-entropy and perplexity of the model on it every `run_val_every_n_steps`
// optimizer steps (torchtune's key) and at the end, and the best/last figures for the run summary.
// Perplexity is exp(mean per-token cross-entropy), the definition of Hugging Face's perplexity guide and of our
// Eval/Perplexity. Under mpirun every rank scores the whole split (it is small), so no collective is needed.
using SharpTune.Config;
using SharpTune.Data;
using SharpTune.Losses;
using SharpTune.Modules;
using SharpTune.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Recipes.Support;

/// <summary>One held-out evaluation: mean loss per target token and its perplexity.</summary>
public sealed record HeldOutScore(long Step, double Loss, long Tokens)
{
    /// <summary>exp(loss).</summary>
    public double Perplexity => Math.Exp(Loss);

    /// <summary>The metric log entry: <c>val_loss</c>, <c>val_ppl</c>, <c>val_tokens</c>.</summary>
    public IReadOnlyDictionary<string, double> Metrics => new Dictionary<string, double>
    {
        ["val_loss"] = Loss, ["val_ppl"] = Perplexity, ["val_tokens"] = Tokens,
    };
}

/// <summary>The held-out split of a run and its scores so far.</summary>
public sealed class HeldOut
{
    private readonly List<HeldOutScore> _scores = [];

    /// <summary>A held-out set scored every <paramref name="everyNSteps"/> steps in batches of <paramref name="batchSize"/>.</summary>
    public HeldOut(ISampleDataset dataset, int everyNSteps, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(everyNSteps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        Dataset = dataset;
        EveryNSteps = everyNSteps;
        BatchSize = batchSize;
    }

    /// <summary>The validation samples.</summary>
    public ISampleDataset Dataset { get; }

    /// <summary>Validate every this many optimizer steps (and always after the last step).</summary>
    public int EveryNSteps { get; }

    /// <summary>Samples per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>Every score, in step order.</summary>
    public IReadOnlyList<HeldOutScore> Scores => _scores;

    /// <summary>
    /// Reads <c>validation_dataset</c> / <c>validation_split</c> / <c>run_val_every_n_steps</c>. Returns the training
    /// dataset (the head of <paramref name="train"/> under validation_split) and the held-out set, or null when the
    /// config asks for none. Logs what each side holds.
    /// </summary>
    public static (ISampleDataset Train, HeldOut? HeldOut) Setup(SharpTuneConfig config, ISampleDataset train, ITokenizer tokenizer,
        int batchSize, IRecipeReporter reporter)
    {
        var hasDataset = config.Find("validation_dataset") is { Kind: not ConfigNodeKind.Null };
        var split = config.Get<double?>("validation_split", null);
        var every = config.Get<int?>("run_val_every_n_steps", null);
        var where = config.Find("validation_split")?.Location ?? config.Find("validation_dataset")?.Location
            ?? config.Find("run_val_every_n_steps")?.Location ?? new SourceLocation(config.SourcePath ?? "<config>", 0, 0);
        if (hasDataset && split is not null)
            throw new ConfigException(where, "validation_split", "set validation_dataset or validation_split, not both");
        if (every is < 1)
            throw new ConfigException(where, "run_val_every_n_steps", $"must be at least 1 or null, got {every}");
        if (!hasDataset && split is null)
        {
            if (every is not null)
                throw new ConfigException(where, "run_val_every_n_steps", "there is nothing to validate on: set validation_split (e.g. 0.1) or validation_dataset");
            return (train, null);
        }
        ISampleDataset validation;
        if (split is { } fraction)
        {
            if (!(fraction > 0 && fraction < 1))
                throw new ConfigException(where, "validation_split", $"must be a fraction in (0, 1), got {fraction}");
            try { (train, validation) = SubsetDataset.HoldOut(train, fraction); }
            catch (ArgumentException e) { throw new ConfigException(where, "validation_split", e.Message); }
            reporter.Info($"validation_split {fraction}: the last {validation.Count:N0} of {train.Count + validation.Count:N0} samples are held out (never trained on)");
        }
        else
        {
            validation = config.InstantiateWith<ISampleDataset>("validation_dataset", new Dictionary<string, object?> { ["tokenizer"] = tokenizer });
            foreach (var line in DatasetSummary.Lines(validation)) reporter.Info($"validation_dataset: {line}");
            if (validation.Count == 0) throw new ConfigException(where, "validation_dataset", "the validation dataset is empty");
        }
        var n = every ?? int.MaxValue;
        reporter.Info(every is null ? "held-out loss is measured after the last step (set run_val_every_n_steps for a curve)"
            : $"held-out loss is measured every {every} optimizer steps and after the last");
        return (train, new HeldOut(validation, n, batchSize));
    }

    /// <summary>Whether to validate after optimizer step <paramref name="step"/> (1-based) of <paramref name="totalSteps"/>.</summary>
    public bool IsDue(long step, long totalSteps) => step % EveryNSteps == 0 || step == totalSteps;

    /// <summary>
    /// Mean cross-entropy per target token of <paramref name="model"/> over the whole held-out set, without gradients and in
    /// eval mode (restoring train mode after), recorded for <paramref name="step"/>.
    /// </summary>
    public HeldOutScore Score(TransformerDecoder model, long step, int padId, Device device)
    {
        var wasTraining = model.training;
        model.eval();
        double sum = 0;
        long count = 0;
        var loss = new CrossEntropyLoss();
        try
        {
            using var noGrad = no_grad();
            for (var start = 0; start < Dataset.Count; start += BatchSize)
            {
                using var scope = NewDisposeScope();
                var samples = new List<Sample>();
                for (var i = start; i < Math.Min(start + BatchSize, Dataset.Count); i++) samples.Add(Dataset[i]);
                var batch = samples[0].SeqLens is not null ? Collate.Packed(samples) : Collate.PadSft(samples, padId);
                var tokens = batch.Tokens.to(device);
                var hidden = model.ForwardHidden(tokens, batch.Mask?.to(device), batch.InputPos?.to(device)); // [b, s, d]
                var logits = model.ApplyOutput(hidden);                                          // [b, s, v]
                var s = loss.Sum(logits.to(ScalarType.Float32), batch.Labels.to(device));
                sum += s.Sum.item<float>();
                count += s.Count.item<long>();
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        if (count == 0) throw new InvalidDataException("the validation set has no target tokens (every label is masked)");
        var score = new HeldOutScore(step, sum / count, count);
        _scores.Add(score);
        return score;
    }

    /// <summary>"held-out loss 2.31 (perplexity 10.1) at step 40; best 2.29 (9.9) at step 30", or null before any score.</summary>
    public string? Summary()
    {
        if (_scores.Count == 0) return null;
        var last = _scores[^1];
        var best = _scores.MinBy(s => s.Loss)!;
        return $"held-out loss {last.Loss:F4} (perplexity {last.Perplexity:F3}, {last.Tokens:N0} tokens) at step {last.Step}" +
               (best == last ? " (the best)" : $"; best {best.Loss:F4} (perplexity {best.Perplexity:F3}) at step {best.Step}");
    }
}

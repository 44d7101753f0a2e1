// A tiny next-token task shared by the MPI worker and the tests: variable-length samples (so ranks hold different
// numbers of valid tokens), a two-layer model without dropout, and the one-process reference training loop built only
// from the single-device DataLoader over full batches and a plain, written-out gradient normalisation and clipping.
using SharpTune.Data;
using SharpTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.MpiWorker;

/// <summary>Settings of one tiny training run.</summary>
public sealed record TinyTrainingSettings
{
    public string Optimizer { get; init; } = "adamw";
    public int Samples { get; init; } = 24;
    public int GlobalBatch { get; init; } = 4;
    public int GradientAccumulation { get; init; } = 2;
    public int Epochs { get; init; } = 2;
    public double? MaxGradNorm { get; init; } = 0.4;
    public long Seed { get; init; } = 7;
}

/// <summary>What the one-process reference run logged per optimizer step.</summary>
public sealed record ReferenceRun(List<double> Losses, List<double> GradNorms, List<double> MaxUpdates);

/// <summary>Model, data and loss of the tiny task.</summary>
public static class TinyTask
{
    public const int Vocab = 32;
    public const int Dim = 16;

    /// <summary>Embedding -> tanh -> linear, named like a decoder's parts.</summary>
    public static Sequential Model() =>
        nn.Sequential(("embed_tokens", nn.Embedding(Vocab, Dim)), ("act", nn.Tanh()), ("lm_head", nn.Linear(Dim, Vocab)));

    /// <summary>Samples of 3..12 tokens; some have their first labels masked like a prompt.</summary>
    public static ISampleDataset Dataset(int count)
    {
        var rng = new Random(1234);
        var samples = new Sample[count];
        for (var i = 0; i < count; i++)
        {
            var n = rng.Next(3, 13);
            var tokens = new int[n];
            for (var t = 0; t < n; t++) tokens[t] = rng.Next(1, Vocab);
            var labels = new int[n];
            var prompt = i % 3 == 0 ? 2 : 0;
            for (var t = 0; t < n; t++) labels[t] = t + 1 < n && t >= prompt ? tokens[t + 1] : Sample.IgnoreIndex;
            samples[i] = new Sample(tokens, labels);
        }
        return new ListDataset(samples);
    }

    /// <summary>The loader of GLOBAL batches (pad id 0).</summary>
    public static SharpTune.Data.DataLoader Loader(TinyTrainingSettings s) => new(Dataset(s.Samples), s.GlobalBatch, seed: (int)s.Seed, shuffle: true);

    /// <summary>Summed cross-entropy over valid tokens, and their count.</summary>
    public static (Tensor Sum, long Tokens) Loss(nn.Module<Tensor, Tensor> model, Batch batch)
    {
        var logits = model.call(batch.Tokens);                    // [b, s, v]
        var flat = logits.reshape(-1, Vocab);                     // [b*s, v]
        var labels = batch.Labels.reshape(-1);                    // [b*s]
        var sum = nn.functional.cross_entropy(flat, labels, ignore_index: Sample.IgnoreIndex, reduction: nn.Reduction.Sum);
        var tokens = labels.ne(Sample.IgnoreIndex).sum().item<long>();
        return (sum, tokens);
    }

    /// <summary>The optimizer the settings name.</summary>
    public static OptimizerHelper Optimizer(TinyTrainingSettings s, IEnumerable<Parameter> parameters) => s.Optimizer switch
    {
        "sgd" => Optimizers.Sgd(parameters, lr: 0.5, momentum: 0.9),
        "adamw" => Optimizers.AdamW(parameters, lr: 0.05, weightDecay: 0.01),
        _ => throw new ArgumentException($"unknown optimizer '{s.Optimizer}' (expected sgd or adamw)"),
    };

    /// <summary>Optimizer steps per epoch.</summary>
    public static int StepsPerEpoch(TinyTrainingSettings s, int batchesPerEpoch) => batchesPerEpoch / s.GradientAccumulation;

    /// <summary>One process, full global batches, gradients normalised and clipped in plain code. Returns the per-step losses, gradient
    /// norms (before clipping) and largest element-wise weight updates: the magnitudes a tolerance is derived from.</summary>
    public static ReferenceRun TrainReference(TinyTrainingSettings s, Sequential model)
    {
        var loader = Loader(s);
        using var optimizer = Optimizer(s, model.parameters());
        var run = new ReferenceRun([], [], []);
        for (var epoch = 0; epoch < s.Epochs; epoch++)
        {
            var micro = 0;
            var (lossSum, stepTokens) = (0.0, 0L);
            foreach (var batch in loader.Batches(epoch).Take(StepsPerEpoch(s, loader.BatchesPerEpoch) * s.GradientAccumulation))
            {
                using var scope = NewDisposeScope();
                var (sum, tokens) = Loss(model, batch);
                sum.backward();
                lossSum += sum.to_type(ScalarType.Float64).item<double>();
                stepTokens += tokens;
                if (++micro % s.GradientAccumulation != 0) continue;
                // The gradient of the mean per-token loss of the step, its 2-norm (float64) and clip_grad_norm_'s scaling.
                var norm = NormaliseAndClip(model.parameters(), stepTokens, s.MaxGradNorm);
                run.Losses.Add(lossSum / stepTokens);
                run.GradNorms.Add(norm);
                (lossSum, stepTokens) = (0, 0);
                var before = Flatten(model);
                optimizer.step();
                optimizer.zero_grad();
                run.MaxUpdates.Add(before.Zip(Flatten(model), (a, b) => Math.Abs((double)a - b)).Max());
            }
        }
        return run;
    }

    /// <summary>
    /// Trains <paramref name="model"/> through <paramref name="sync"/> (local or data-parallel) over the batches
    /// <paramref name="batches"/> gives per epoch; returns each optimizer step's loss and gradient norm.
    /// </summary>
    public static (List<double> Losses, List<double> Norms) Train(TinyTrainingSettings s, Sequential model, IGradientSync sync,
        Func<int, IEnumerable<Batch>> batches, int batchesPerEpoch)
    {
        using var optimizer = Optimizer(s, model.parameters());
        var (losses, norms) = (new List<double>(), new List<double>());
        for (var epoch = 0; epoch < s.Epochs; epoch++)
        {
            var micro = 0;
            foreach (var batch in batches(epoch).Take(StepsPerEpoch(s, batchesPerEpoch) * s.GradientAccumulation))
            {
                using var scope = NewDisposeScope();
                var (sum, tokens) = Loss(model, batch);
                sync.Backward(sum, tokens);
                if (++micro % s.GradientAccumulation != 0) continue;
                var step = sync.Finish();
                losses.Add(step.Loss);
                norms.Add(step.GradNorm);
                optimizer.step();
                optimizer.zero_grad();
            }
        }
        return (losses, norms);
    }

    // Divides every gradient by the step's valid tokens, then scales them by max / (norm + 1e-6) when that is below 1
    // (torch.nn.utils.clip_grad_norm_); returns the norm before clipping, summed in float64.
    private static double NormaliseAndClip(IEnumerable<Parameter> parameters, long tokens, double? maxNorm)
    {
        using var guard = no_grad();
        var grads = parameters.Select(p => p.grad).OfType<Tensor>().ToList();
        foreach (var g in grads) g.div_(tokens);
        var norm = Math.Sqrt(grads.Sum(g => g.to_type(ScalarType.Float64).square().sum().item<double>()));
        if (maxNorm is { } max && max / (norm + 1e-6) < 1)
            foreach (var g in grads) g.mul_(max / (norm + 1e-6));
        return norm;
    }

    /// <summary>Valid tokens of one optimizer step at most: samples are at most 12 tokens long.</summary>
    public static long MaxTokensPerStep(TinyTrainingSettings s) => (long)s.GlobalBatch * s.GradientAccumulation * 12;

    /// <summary>All parameters as one float32 array, in state_dict order.</summary>
    public static float[] Flatten(nn.Module model) =>
        model.state_dict().Values.SelectMany(t => t.detach().to_type(ScalarType.Float32).contiguous().data<float>().ToArray()).ToArray();

    private sealed class ListDataset(Sample[] samples) : ISampleDataset
    {
        public int Count => samples.Length;
        public Sample this[int index] => samples[index];
    }
}

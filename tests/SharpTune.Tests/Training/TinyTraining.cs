// A tiny deterministic training setup shared by the training tests: a two-layer MLP with dropout (so the RNG
// matters), a fixed synthetic regression data set, shuffled per epoch, AdamW and a cosine schedule.
using SharpTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SharpTune.Tests.Training;

internal sealed class TinyRun : IDisposable
{
    public const int Examples = 24;
    public const int BatchSize = 4;
    public const int StepsPerEpoch = Examples / BatchSize;

    public TinyRun(long seed, double dropout = 0.1)
    {
        Seed = seed;
        Determinism.Seed(seed);
        Model = nn.Sequential(
            ("fc1", nn.Linear(8, 16)), ("act", nn.ReLU()), ("drop", nn.Dropout(dropout)), ("fc2", nn.Linear(16, 1)));
        Optimizer = Optimizers.AdamW(Model.parameters(), lr: 1e-2, weightDecay: 0.01);
        Scheduler = LrSchedulers.GetCosineScheduleWithWarmup(Optimizer, numWarmupSteps: 2, numTrainingSteps: 20);
        var gen = new Generator(1234);
        X = randn(new long[] { Examples, 8 }, generator: gen);
        Y = X.sum(1, keepdim: true).sin();
    }

    public long Seed { get; private set; }
    public Sequential Model { get; }
    public OptimizerHelper Optimizer { get; }
    public LrScheduler Scheduler { get; }
    public Tensor X { get; }
    public Tensor Y { get; }
    public long StepsRun { get; private set; }

    /// <summary>Continues a restored run: the next step is <paramref name="stepsRun"/>, data order from <paramref name="seed"/>.</summary>
    public void ResumeAt(long stepsRun, long seed)
    {
        StepsRun = stepsRun;
        Seed = seed;
    }

    /// <summary>Runs global optimizer steps [StepsRun, until).</summary>
    public void RunUntil(long until)
    {
        Model.train();
        for (; StepsRun < until; StepsRun++)
        {
            using var scope = NewDisposeScope();
            var epoch = (int)(StepsRun / StepsPerEpoch);
            var position = (int)(StepsRun % StepsPerEpoch);
            var order = Determinism.ShuffledOrder(Examples, Seed, epoch);
            var idx = tensor(order.Skip(position * BatchSize).Take(BatchSize).Select(i => (long)i).ToArray());
            var pred = Model.call(X.index_select(0, idx));
            var loss = (pred - Y.index_select(0, idx)).square().mean();
            Optimizer.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(Model.parameters(), 1.0);
            Optimizer.step();
            Scheduler.Step();
        }
    }

    public byte[] WeightBytes()
    {
        using var ms = new MemoryStream();
        foreach (var p in Model.parameters())
            ms.Write(p.detach().contiguous().bytes);
        return ms.ToArray();
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        Model.Dispose();
        X.Dispose();
        Y.Dispose();
    }
}

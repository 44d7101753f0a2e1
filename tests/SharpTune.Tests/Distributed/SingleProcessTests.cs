// Tests of the distributed machinery that need no MPI: the chunking of counts, the split of global batches, the
// thread default, and the one-process behaviour of the context and the flat-buffer gradient path (which must equal the
// plain one-process reference in TinyTask).
using SharpTune.Data;
using SharpTune.Distributed;
using SharpTune.MpiWorker;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Tests.Distributed;

public sealed class SingleProcessTests
{
    [Fact]
    public void Chunks_CountAboveIntMax_PiecesBelow2Pow31CoverEveryElementOnce()
    {
        var count = 5L * int.MaxValue + 17;

        var chunks = Mpi.Chunks(count, Mpi.MaxChunkElements).ToList();

        Assert.All(chunks, c => Assert.InRange(c.Count, 1, Mpi.MaxChunkElements));
        Assert.Equal(0, chunks[0].Offset);
        for (var i = 1; i < chunks.Count; i++) Assert.Equal(chunks[i - 1].Offset + chunks[i - 1].Count, chunks[i].Offset);
        Assert.Equal(count, chunks[^1].Offset + chunks[^1].Count);
        Assert.Equal((int)((count + Mpi.MaxChunkElements - 1) / Mpi.MaxChunkElements), chunks.Count);
    }

    [Theory]
    [InlineData(0, 3, 0)]
    [InlineData(6, 3, 2)]
    [InlineData(7, 3, 3)]
    [InlineData(1, 1, 1)]
    public void Chunks_SmallCounts_ExpectedPieces(long count, int max, int pieces)
    {
        var chunks = Mpi.Chunks(count, max).ToList();

        Assert.Equal(pieces, chunks.Count);
        Assert.Equal(count, chunks.Sum(c => (long)c.Count));
    }

    [Fact]
    public void Chunks_BadArguments_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Mpi.Chunks(-1, 4).ToList());
        Assert.Throws<ArgumentOutOfRangeException>(() => Mpi.Chunks(4, 0).ToList());
    }

    [Theory]
    [InlineData(10, 3)]
    [InlineData(4, 4)]
    [InlineData(9, 2)]
    [InlineData(2, 5)]
    public void Range_AnySplit_ContiguousBalancedAndComplete(int count, int world)
    {
        var ranges = Enumerable.Range(0, world).Select(r => Sharding.Range(count, r, world)).ToList();

        Assert.Equal(0, ranges[0].Start);
        for (var r = 1; r < world; r++) Assert.Equal(ranges[r - 1].Start + ranges[r - 1].Count, ranges[r].Start);
        Assert.Equal(count, ranges.Sum(x => x.Count));
        Assert.True(ranges.Max(x => x.Count) - ranges.Min(x => x.Count) <= 1);
        Assert.True(ranges.Select(x => x.Count).SequenceEqual(ranges.Select(x => x.Count).OrderDescending()), "lower ranks take the extra items");
    }

    [Fact]
    public void DataLoaderForRank_ThreeRanks_ShardsConcatenateToTheOneProcessGlobalBatch()
    {
        var settings = new TinyTrainingSettings { Samples = 20, GlobalBatch = 7 };
        var global = TinyTask.Loader(settings);
        var views = Enumerable.Range(0, 3).Select(r => TinyTask.Loader(settings).ForRank(r, 3)).ToList();

        Assert.All(views, v => Assert.Equal(global.BatchesPerEpoch, v.BatchesPerEpoch));
        for (var epoch = 0; epoch < 2; epoch++)
            for (var b = 0; b < global.BatchesPerEpoch; b++)
            {
                var expected = global.Samples(epoch, b);
                var joined = views.SelectMany(v => v.Samples(epoch, b)).ToList();
                Assert.Equal(expected.Count, joined.Count);
                for (var i = 0; i < expected.Count; i++)
                {
                    Assert.Equal(expected[i].Tokens, joined[i].Tokens);
                    Assert.Equal(expected[i].Labels, joined[i].Labels);
                }
            }
        Assert.NotEqual(global.Samples(0, 0)[0].Tokens, global.Samples(1, 0)[0].Tokens); // epochs are shuffled differently
    }

    [Fact]
    public void DataLoaderForRank_Indices_ConcatenateToGlobalIndicesAndMatchTheRanksSamples()
    {
        // The offline teacher cache is keyed by dataset index: a rank's indices must name exactly its samples.
        var settings = new TinyTrainingSettings { Samples = 20, GlobalBatch = 7 };
        var global = TinyTask.Loader(settings);
        var views = Enumerable.Range(0, 3).Select(r => TinyTask.Loader(settings).ForRank(r, 3)).ToList();
        for (var b = 0; b < global.BatchesPerEpoch; b++)
        {
            Assert.Equal(global.Indices(1, b), views.SelectMany(v => v.Indices(1, b)));
            foreach (var v in views)
            {
                var samples = v.Samples(1, b);
                var indices = v.Indices(1, b);
                Assert.Equal(samples.Count, indices.Count);
                for (var i = 0; i < samples.Count; i++)
                    Assert.Equal(global.Samples(1, b)[global.Indices(1, b).ToList().IndexOf(indices[i])].Tokens, samples[i].Tokens);
            }
        }
    }

    [Fact]
    public void DataLoaderForRank_ResumedWithAnotherWorldSize_SameRemainingGlobalBatches()
    {
        // A run checkpointed after global batch 2 of epoch 1 by 2 ranks resumes on 3 ranks.
        var settings = new TinyTrainingSettings { Samples = 24, GlobalBatch = 6 };
        var global = TinyTask.Loader(settings);
        var resumed = Enumerable.Range(0, 3).Select(r => TinyTask.Loader(settings).ForRank(r, 3)).ToList();

        var perRank = resumed.Select(v => v.Batches(1, startBatch: 2).ToList()).ToList();
        var expected = global.Batches(1, startBatch: 2).ToList();

        Assert.All(perRank, batches => Assert.Equal(expected.Count, batches.Count));
        for (var b = 0; b < expected.Count; b++)
        {
            using var joined = cat(perRank.Select(batches => batches[b].Labels.reshape(-1)).ToList(), 0);
            using var labels = expected[b].Labels.reshape(-1);
            // Padding differs per shard, so compare the valid labels in order.
            Assert.Equal(labels[labels.ne(-100)].data<long>().ToArray(), joined[joined.ne(-100)].data<long>().ToArray());
        }
    }

    [Fact]
    public void DataLoaderForRank_GlobalBatchSmallerThanWorld_ClearError()
    {
        var loader = TinyTask.Loader(new TinyTrainingSettings { GlobalBatch = 2 });

        var e = Assert.Throws<ArgumentException>(() => loader.ForRank(0, 3));

        Assert.Contains("batch_size 2", e.Message);
        Assert.Contains("(3)", e.Message);
    }

    [Theory]
    [InlineData(16, 2, 8)]
    [InlineData(1, 2, 1)]
    [InlineData(7, 1, 7)]
    [InlineData(96, 8, 12)]
    public void DefaultThreads_CoresSharedByRanksOfAMachine(int cores, int ranks, int expected) =>
        Assert.Equal(expected, DistributedContext.DefaultThreads(cores, ranks));

    [Theory]
    [InlineData(3, "5", 3)]
    [InlineData(null, "5", 5)]
    [InlineData(null, null, 8)]
    [InlineData(null, " ", 8)]
    public void ResolveThreads_OptionThenEnvironmentThenDefault(int? configured, string? env, int expected) =>
        Assert.Equal(expected, DistributedContext.ResolveThreads(configured, env, usableCores: 16, ranksOnMachine: 2));

    [Theory]
    [InlineData("0")]
    [InlineData("four")]
    public void ResolveThreads_BadEnvironmentValue_ClearError(string env)
    {
        var e = Assert.Throws<ArgumentException>(() => DistributedContext.ResolveThreads(null, env, 16, 2));

        Assert.Contains(DistributedContext.ThreadsVariable, e.Message);
    }

    [Fact]
    public void Initialize_NoLauncherInEnvironment_SingleProcessWithoutLoadingMpi()
    {
        Assert.Null(Mpi.LauncherEnvironment()); // the test host is not started by mpirun

        using var ctx = DistributedContext.Initialize(new DistributedOptions { ThreadsPerRank = torch.get_num_threads() });

        Assert.Equal((0, 1, false, true), (ctx.Rank, ctx.WorldSize, ctx.UsesMpi, ctx.IsMain));
        Assert.False(Mpi.IsLoaded);
        Assert.Equal(new[] { 2.5, 3.0 }, ctx.AllReduceSum(2.5, 3.0));
        var ran = false;
        ctx.OnMain(() => ran = true);
        Assert.True(ran);
    }

    [Fact]
    public void Run_BodyThrowsInOneProcess_ReportsAndReturnsNonZero()
    {
        var reported = new List<string>();

        var code = DistributedContext.Run(_ => throw new InvalidOperationException("boom"), reported.Add,
            new DistributedOptions { ThreadsPerRank = torch.get_num_threads() });

        Assert.Equal(1, code);
        Assert.Single(reported);
        Assert.Contains("rank 0 of 1 failed", reported[0]);
        Assert.Contains("boom", reported[0]);
    }

    [Fact]
    public void Current_InsideAndAfterRun_IsTheRunsContextThenNull()
    {
        DistributedContext? seen = null;
        var local = DistributedContext.CurrentOrLocal;

        var code = DistributedContext.Run(ctx => { seen = DistributedContext.Current; return ReferenceEquals(ctx, DistributedContext.CurrentOrLocal) ? 0 : 2; },
            _ => { }, new DistributedOptions { ThreadsPerRank = torch.get_num_threads() });

        Assert.Equal(0, code);
        Assert.NotNull(seen);
        Assert.Null(DistributedContext.Current);
        Assert.Equal((0, 1, false), (local.Rank, local.WorldSize, local.UsesMpi));
    }

    [Theory]
    [InlineData("sgd", 0.4)]
    [InlineData("adamw", null)]
    [InlineData("adamw", 1e-3)]
    public void DataParallelGradients_OneProcess_EqualsPlainReference(string optimizer, double? clip)
    {
        var s = new TinyTrainingSettings { Optimizer = optimizer, MaxGradNorm = clip };
        Determinism.Seed(s.Seed);
        using var reference = TinyTask.Model();
        var expectedRun = TinyTask.TrainReference(s, reference);
        var expected = TinyTask.Flatten(reference);

        using var ctx = DistributedContext.Initialize(new DistributedOptions { ThreadsPerRank = torch.get_num_threads() });
        Determinism.Seed(s.Seed);
        using var model = TinyTask.Model();
        var loader = TinyTask.Loader(s).ForRank(ctx.Rank, ctx.WorldSize);
        using var grads = new DataParallelGradients(ctx, model.parameters(), s.MaxGradNorm);
        var (losses, norms) = TinyTask.Train(s, model, grads, epoch => loader.Batches(epoch), loader.BatchesPerEpoch);

        SameTinyRun.Assert(expectedRun, expected, TinyTask.Flatten(model), losses, s, $"{optimizer}, clip {clip}");
        if (clip is { } c) Assert.Contains(norms, n => n > c); // the clip actually bit at least once
    }

    /// <summary>The reported norm against a float64 sum of squares of the token-normalised gradients; parameter sizes
    /// give whole 4,096-element rows and a ragged tail, and values of very different scales.</summary>
    [Fact]
    public void Finish_GradNorm_EqualsFloat64Reference()
    {
        using var ctx = DistributedContext.Initialize(new DistributedOptions { ThreadsPerRank = torch.get_num_threads() });
        Determinism.Seed(3);
        var parameters = new[] { 10_000L, 4_096, 7, 123_457 }.Select(n => new TorchSharp.Modules.Parameter(zeros(n))).ToList();
        using var grads = new DataParallelGradients(ctx, parameters);
        using (var scope = NewDisposeScope())
        {
            var loss = parameters.Select((p, i) => (p * (randn(p.shape) * Math.Pow(10, i - 2))).sum()).Aggregate((a, b) => a + b);
            grads.Backward(loss, 7);
        }
        var expected = Math.Sqrt(parameters.Sum(p => p.grad!.to_type(ScalarType.Float64).square().sum().item<double>())) / 7; // Finish divides by the tokens

        var step = grads.Finish();

        // The fp32 norm of each 4,096-element row is a sum of 4,096 squares (gamma(4096) relative, the squares adding
        // one rounding each); the float64 sum over rows and the square root add nothing at this scale.
        Assert.Equal(expected, step.GradNorm, expected * FloatBounds.Gamma(4096 + 1));
        foreach (var p in parameters) p.Dispose();
    }

    [Fact]
    public void Finish_ParameterWithoutGradient_StaysWithoutGradient()
    {
        using var ctx = DistributedContext.Initialize(new DistributedOptions { ThreadsPerRank = torch.get_num_threads() });
        using var used = nn.Linear(3, 1);
        using var unused = nn.Linear(3, 1);
        var parameters = used.parameters().Concat(unused.parameters()).ToList();
        using var grads = new DataParallelGradients(ctx, parameters);

        grads.Backward(used.call(ones(2, 3)).sum(), 2);
        var step = grads.Finish();

        Assert.All(unused.parameters(), p => Assert.Null(p.grad));
        Assert.All(used.parameters(), p => Assert.NotNull(p.grad));
        Assert.Equal(2, step.Tokens);
        // d(sum of 2 rows of w·x + b)/db = 2, divided by 2 tokens
        Assert.Equal(1.0, used.bias!.grad!.item<float>(), 6);
    }

    [Fact]
    public void Finish_NoValidTokens_ClearError()
    {
        using var ctx = DistributedContext.Initialize(new DistributedOptions { ThreadsPerRank = torch.get_num_threads() });
        using var lin = nn.Linear(2, 1);
        using var grads = new DataParallelGradients(ctx, lin.parameters());
        grads.Backward(lin.call(ones(1, 2)).sum() * 0, 0);

        var e = Assert.Throws<InvalidOperationException>(() => grads.Finish());

        Assert.Contains("no valid tokens", e.Message);
    }
}

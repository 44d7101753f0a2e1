// The program the distributed tests launch under mpirun (`mpirun -np 2 dotnet SharpTune.MpiWorker.dll <scenario>`).
// Scenarios: collectives (binding and context checks), train (data-parallel tiny training; every rank writes its final
// weights), fail (one rank throws mid-run), hang (ranks wait in collectives until killed), bench (allreduce GB/s and
// step time). Exit code 0 means every check on this rank passed.
using System.Diagnostics;
using SharpTune.Checkpointing;
using SharpTune.Distributed;
using SharpTune.MpiWorker;
using SharpTune.Training;
using static TorchSharp.torch;

if (args.Length == 0)
{
    Console.Error.WriteLine("usage: SharpTune.MpiWorker collectives | train <sgd|adamw> <out-prefix> | fail <rank> | hang <pid-prefix> | bench <MiB> <reps>");
    return 2;
}
var options = new DistributedOptions { ThreadsPerRank = args[0] == "bench" ? null : 1 };
return DistributedContext.Run(ctx => args[0] switch
{
    "collectives" => Scenarios.Collectives(ctx),
    "train" => Scenarios.Train(ctx, args[1], args[2]),
    "fail" => Scenarios.Fail(ctx, int.Parse(args[1])),
    "hang" => Scenarios.Hang(ctx, args[1]),
    "bench" => Scenarios.Bench(ctx, int.Parse(args[1]), int.Parse(args[2])),
    _ => throw new ArgumentException($"unknown scenario '{args[0]}'"),
}, message => Console.Error.WriteLine(message), options);

internal static class Scenarios
{
    public static int Collectives(DistributedContext ctx)
    {
        int w = ctx.WorldSize, r = ctx.Rank;
        Require(Mpi.IsLoaded == ctx.UsesMpi, "MPI is loaded exactly when launched under mpirun");
        if (ctx.UsesMpi) Require(Mpi.Rank == r && Mpi.Size == w, "context agrees with MPI_Comm_rank/size");
        var triangle = w * (w + 1) / 2; // sum over ranks of (rank + 1)
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64, ScalarType.Int64, ScalarType.BFloat16, ScalarType.Int32 })
        {
            using var t = arange(1000, dtype: ScalarType.Int64).remainder(100).mul(r + 1).to_type(dtype); // [1000]
            ctx.AllReduceSum(t);
            using var expected = arange(1000, dtype: ScalarType.Int64).remainder(100).mul(triangle).to_type(dtype);
            Require(t.eq(expected).all().item<bool>(), $"allreduce sum of {dtype}");
        }
        using (var m = arange(12, dtype: ScalarType.Float32).reshape(3, 4).mul(r + 1)) // [3, 4]
        {
            using var strided = m.t(); // [4, 3], not contiguous: staged through a copy
            ctx.AllReduceSum(strided);
            Require(m.eq(arange(12, dtype: ScalarType.Float32).reshape(3, 4).mul(triangle)).all().item<bool>(), "allreduce of a strided view writes through");
        }
        var sums = ctx.AllReduceSum(1.5 * (r + 1), -r);
        Require(sums[0] == 1.5 * triangle && sums[1] == -(w - 1) * w / 2.0, "allreduce of doubles");
        Require(ctx.AllReduceSum(3_000_000_000L * (r + 1)) == 3_000_000_000L * triangle, "allreduce of a long beyond int range");
        Require(ctx.AllReduceMax(r * 2.5) == (w - 1) * 2.5, "allreduce max");
        var root = w - 1;
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Int64 })
        {
            using var b = full(new long[] { 5, 7 }, r + 10, dtype: dtype);
            ctx.Broadcast(b, root);
            Require(b.eq(full(new long[] { 5, 7 }, root + 10, dtype: dtype)).all().item<bool>(), $"broadcast of {dtype} from rank {root}");
        }
        // A NullReferenceException is a SIGSEGV underneath; with UCX_ERROR_SIGNALS left at UCX's default it kills the rank.
        var missing = Environment.GetEnvironmentVariable($"SHARPTUNE_UNSET_{Guid.NewGuid():N}");
        try
        {
            _ = missing!.Length;
            Require(false, "dereferencing null must throw");
        }
        catch (NullReferenceException)
        {
        }
        ctx.Barrier();
        Console.WriteLine($"collectives ok: rank {r} of {w}" + (ctx.UsesMpi ? $" ({Mpi.Flavor}, {Mpi.LibraryName})" : ""));
        return 0;
    }

    public static int Train(DistributedContext ctx, string optimizer, string outPrefix)
    {
        var s = new TinyTrainingSettings { Optimizer = optimizer };
        // Each rank starts from its own random weights on purpose: the broadcast must replace them with rank 0's.
        Determinism.Seed(s.Seed + 1000 * ctx.Rank);
        using var model = TinyTask.Model();
        ctx.BroadcastModule(model);
        var loader = TinyTask.Loader(s).ForRank(ctx.Rank, ctx.WorldSize);
        using var opt = TinyTask.Optimizer(s, model.parameters());
        using var grads = new DataParallelGradients(ctx, model.parameters(), s.MaxGradNorm);
        var losses = new List<double>();
        var microPerEpoch = TinyTask.StepsPerEpoch(s, loader.BatchesPerEpoch) * s.GradientAccumulation;
        for (var epoch = 0; epoch < s.Epochs; epoch++)
        {
            var micro = 0;
            foreach (var batch in loader.Batches(epoch).Take(microPerEpoch))
            {
                using var scope = NewDisposeScope();
                var (sum, tokens) = TinyTask.Loss(model, batch);
                grads.Backward(sum, tokens);
                if (++micro % s.GradientAccumulation != 0) continue;
                losses.Add(grads.Finish().Loss);
                opt.step();
                opt.zero_grad();
            }
        }
        var weights = TinyTask.Flatten(model);
        var bytes = new byte[weights.Length * sizeof(float)];
        Buffer.BlockCopy(weights, 0, bytes, 0, bytes.Length);
        AtomicFile.WriteAllBytes($"{outPrefix}.rank{ctx.Rank}.bin", bytes);
        ctx.OnMain(() => AtomicFile.WriteAllText($"{outPrefix}.losses.txt",
            string.Join("\n", losses.Select(l => l.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))));
        return 0;
    }

    public static int Fail(DistributedContext ctx, int failingRank)
    {
        for (var step = 0; step < 1000; step++)
        {
            if (ctx.Rank == failingRank && step == 2)
                throw new InvalidOperationException($"deliberate failure at step {step}");
            ctx.AllReduceSum(1.0); // the healthy ranks wait here for the failed one
        }
        return 0;
    }

    public static int Hang(DistributedContext ctx, string pidPrefix)
    {
        AtomicFile.WriteAllText($"{pidPrefix}.rank{ctx.Rank}", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            ctx.AllReduceSum(1.0);
            Thread.Sleep(10);
        }
        return 3; // nobody killed us: the test failed to
    }

    public static int Bench(DistributedContext ctx, int mib, int reps)
    {
        var n = (long)mib * 1024 * 1024 / sizeof(float);
        using var buffer = ones(n, dtype: ScalarType.Float32);
        ctx.AllReduceSum(buffer); // warm-up
        ctx.Barrier();
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < reps; i++) ctx.AllReduceSum(buffer);
        var seconds = ctx.AllReduceMax(clock.Elapsed.TotalSeconds) / reps;
        var bytes = n * sizeof(float);
        var w = ctx.WorldSize;
        if (ctx.IsMain)
            Console.WriteLine($"allreduce {mib} MiB float32 on {w} rank(s): {seconds * 1e3:F1} ms, algorithm {bytes / seconds / 1e9:F2} GB/s, " +
                $"bus {bytes * 2.0 * (w - 1) / w / seconds / 1e9:F2} GB/s (threads/rank {ctx.Threads})");

        // Step time of a 4-layer 1024-wide MLP on a global batch of 64 rows, split over the ranks.
        manual_seed(1);
        using var model = nn.Sequential(Enumerable.Range(0, 4).Select(i => ($"l{i}", (nn.Module<Tensor, Tensor>)nn.Linear(1024, 1024))).ToArray());
        ctx.BroadcastModule(model);
        using var opt = Optimizers.Sgd(model.parameters(), lr: 1e-3);
        using var grads = new DataParallelGradients(ctx, model.parameters());
        var (start, count) = ctx.ShardRange(64);
        using var x = randn(64, 1024).narrow(0, start, count);
        double total = 0;
        for (var step = 0; step < 12; step++)
        {
            using var scope = NewDisposeScope();
            ctx.Barrier();
            var t0 = Stopwatch.GetTimestamp();
            grads.Backward(model.call(x).square().sum(), count * 1024L);
            grads.Finish(computeNorm: false);
            opt.step();
            opt.zero_grad();
            if (step >= 2) total += Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        var stepSeconds = ctx.AllReduceMax(total / 10);
        if (ctx.IsMain)
            Console.WriteLine($"MLP 4x1024, global batch 64 on {w} rank(s): {stepSeconds * 1e3:F1} ms/step (gradient buffer {grads.BufferElements * 4 / 1e6:F1} MB)");
        return 0;
    }

    private static void Require(bool condition, string what)
    {
        if (!condition) throw new InvalidOperationException($"check failed: {what}");
    }
}

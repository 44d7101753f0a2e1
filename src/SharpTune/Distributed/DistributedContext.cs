// The process group of a data-parallel run: who am I (rank), how many are we (world size), and the collectives a
// recipe needs on tensors (in-place sum, broadcast of rank 0's weights), plus the two rules that keep a failing job
// from hanging: a failure on any rank is reported with its rank and ends the whole job with MPI_Abort, and
// MPI_Finalize runs only after every rank succeeded (a finally that finalises after an exception waits forever for
// ranks that are blocked in a collective).
// Without an MPI launcher in the environment the context is a plain one-process group and MPI is never loaded.
// References: torch.distributed (init_process_group, broadcast, all_reduce semantics); torchtune
// recipes/knowledge_distillation_distributed.py; Open MPI mpirun(1) (OMPI_COMM_WORLD_* variables, --bind-to).
using SharpTune.Data;
using SharpTune.Native;
using SharpTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Distributed;

/// <summary>Options of a distributed (or single-process) run.</summary>
public sealed record DistributedOptions
{
    /// <summary>
    /// libtorch intra-op threads per rank; null: SHARPTUNE_THREADS_PER_RANK, else the cores this process may use divided
    /// by the ranks on this node (under mpirun's default binding that is 1; launch with <c>--bind-to none</c>).
    /// </summary>
    public int? ThreadsPerRank { get; init; }
}

/// <summary>Rank, world size and collectives of a data-parallel run over MPI_COMM_WORLD.</summary>
public sealed class DistributedContext : IDisposable
{
    private bool _finished;

    private DistributedContext(int rank, int worldSize, int localSize, bool usesMpi, int threads)
    {
        Rank = rank;
        WorldSize = worldSize;
        LocalSize = localSize;
        UsesMpi = usesMpi;
        Threads = threads;
    }

    /// <summary>This process's rank (0 for a single-process run).</summary>
    public int Rank { get; }

    /// <summary>Number of processes in the job (1 for a single-process run).</summary>
    public int WorldSize { get; }

    /// <summary>Processes of this job on this machine.</summary>
    public int LocalSize { get; }

    /// <summary>True when MPI is in use (started under an MPI launcher, even with one rank).</summary>
    public bool UsesMpi { get; }

    /// <summary>
    /// The context of the job this process runs in: set by <see cref="Run"/> for the duration of its body, so that
    /// code started from it (a recipe run by the CLI) joins the job; null outside <see cref="Run"/>.
    /// </summary>
    public static DistributedContext? Current { get; private set; }

    /// <summary>
    /// <see cref="Current"/>, or a one-process group (rank 0 of 1, no MPI, thread count left as it is) when no job
    /// is running: what a recipe uses, so the same code is a plain run without mpirun.
    /// </summary>
    public static DistributedContext CurrentOrLocal => Current ?? new DistributedContext(0, 1, 1, usesMpi: false, threads: 0);

    /// <summary>True on rank 0, the rank that writes checkpoints, logs and reports.</summary>
    public bool IsMain => Rank == 0;

    /// <summary>The libtorch thread count this rank was set to (0: not set by this context).</summary>
    public int Threads { get; }

    /// <summary>
    /// Creates the context: under an MPI launcher (OMPI_COMM_WORLD_SIZE or PMI_SIZE set) it loads and initialises MPI,
    /// otherwise it is a one-process group. Sets the libtorch thread count either way.
    /// </summary>
    public static DistributedContext Initialize(DistributedOptions? options = null)
    {
        options ??= new DistributedOptions();
        if (options.ThreadsPerRank is < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.ThreadsPerRank, "threads_per_rank must be >= 1");
        var launcher = Mpi.LauncherEnvironment();
        int rank = 0, size = 1, local = 1;
        if (launcher is { } env)
        {
            Mpi.Initialize();
            (rank, size) = (Mpi.Rank, Mpi.Size);
            local = Math.Clamp(env.LocalSize, 1, size);
        }
        var threads = ResolveThreads(options.ThreadsPerRank, Environment.GetEnvironmentVariable(ThreadsVariable), Environment.ProcessorCount, local);
        TorchRuntime.SetThreads(threads);
        return new DistributedContext(rank, size, local, launcher is not null, threads);
    }

    /// <summary>Environment variable that sets the threads per rank when the options do not (pass it with mpirun -x).</summary>
    public const string ThreadsVariable = "SHARPTUNE_THREADS_PER_RANK";

    /// <summary>
    /// The thread count: <paramref name="configured"/>, else the <see cref="ThreadsVariable"/> value, else
    /// <see cref="DefaultThreads"/>.
    /// </summary>
    public static int ResolveThreads(int? configured, string? environmentValue, int usableCores, int ranksOnMachine)
    {
        if (configured is { } c) return c;
        if (!string.IsNullOrWhiteSpace(environmentValue))
            return int.TryParse(environmentValue, out var v) && v >= 1
                ? v
                : throw new ArgumentException($"{ThreadsVariable}='{environmentValue}': expected a whole number >= 1", nameof(environmentValue));
        return DefaultThreads(usableCores, ranksOnMachine);
    }

    /// <summary>The default thread count: usable cores shared evenly by the ranks of one machine, at least 1.</summary>
    public static int DefaultThreads(int usableCores, int ranksOnMachine) => Math.Max(1, usableCores / Math.Max(1, ranksOnMachine));

    /// <summary>
    /// Runs <paramref name="body"/> on every rank. On success MPI is finalised and the body's exit code returned. When
    /// the body throws (or returns non-zero under MPI), <paramref name="reportError"/> gets a message naming the rank and
    /// the job is ended with MPI_Abort, so the other ranks never wait for this one.
    /// </summary>
    /// <param name="body">The work, given the context.</param>
    /// <param name="reportError">Where to write the failing rank's error (the CLI writes to stderr).</param>
    /// <param name="options">Thread settings.</param>
    /// <param name="describeError">
    /// When given, how a failure is written: rank 0 writes <c>describeError(e)</c> as it is (the line a one-process run
    /// prints) and another rank writes <c>rank r of n failed: describeError(e)</c> only after
    /// <see cref="ReportGrace"/>, so that an error every rank hits (a config or input error) is printed once, by rank 0,
    /// whose abort ends the others first. A <see cref="ReportedByMainRankException"/> is never written. Without it,
    /// every failing rank writes <c>rank r of n failed: e</c> (with the stack trace) at once.
    /// </param>
    public static int Run(Func<DistributedContext, int> body, Action<string> reportError, DistributedOptions? options = null,
        Func<Exception, string>? describeError = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        ArgumentNullException.ThrowIfNull(reportError);
        DistributedContext context;
        try
        {
            context = Initialize(options);
        }
        catch (Exception e)
        {
            // No communicator to abort through; exiting non-zero before MPI_Init makes mpirun end the job.
            var where = Mpi.LauncherEnvironment() is { } env ? $"rank {env.Rank} of {env.Size}" : "process";
            reportError(describeError is null ? $"{where} failed to start: {e}" : $"{where} failed to start: {describeError(e)}");
            return 1;
        }
        int code;
        try
        {
            Current = context;
            code = body(context);
        }
        catch (Exception e)
        {
            Current = null;
            if (describeError is null) reportError($"rank {context.Rank} of {context.WorldSize} failed: {e}");
            else if (context.IsMain) reportError(describeError(e));
            else
            {
                // Rank 0 reports what every rank hit; its MPI_Abort normally ends this process during the wait.
                Thread.Sleep(e is ReportedByMainRankException ? 4 * ReportGrace : ReportGrace);
                if (e is not ReportedByMainRankException) reportError($"rank {context.Rank} of {context.WorldSize} failed: {describeError(e)}");
            }
            context.Abort(1);
            return 1;
        }
        Current = null;
        if (code != 0 && context.UsesMpi)
        {
            reportError($"rank {context.Rank} of {context.WorldSize} exited with code {code}");
            context.Abort(code);
            return code;
        }
        context.Dispose();
        return code;
    }

    /// <summary>
    /// How long a failing rank other than 0 waits before it reports and aborts (see <see cref="Run"/>): long enough for
    /// rank 0's MPI_Abort to end it first when rank 0 failed too (measured well under a second with Open MPI 4.1).
    /// </summary>
    public static TimeSpan ReportGrace { get; } = TimeSpan.FromSeconds(3);

    /// <summary>Ends every rank of the job now (MPI_Abort); in a single-process run it only marks the context finished.</summary>
    public void Abort(int errorCode)
    {
        _finished = true;
        if (UsesMpi) Mpi.Abort(errorCode == 0 ? 1 : errorCode);
    }

    /// <summary>Waits for every rank.</summary>
    public void Barrier()
    {
        if (UsesMpi) Mpi.Barrier();
    }

    /// <summary>
    /// Sums <paramref name="tensor"/> over all ranks, in place. CPU contiguous float32/float64/int64 tensors are reduced
    /// in their own memory; anything else (other dtypes, GPU tensors) is staged through a host copy.
    /// </summary>
    public void AllReduceSum(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!UsesMpi) return;
        SumInPlace(tensor);
    }

    /// <summary>Sums each of <paramref name="values"/> over all ranks (one MPI call) and returns the sums.</summary>
    public double[] AllReduceSum(params double[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var result = (double[])values.Clone();
        if (!UsesMpi || result.Length == 0) return result;
        using var t = torch.tensor(result, dtype: ScalarType.Float64);
        Mpi.AllReduceSum(Address(t), result.Length, MpiDataType.Float64);
        return t.data<double>().ToArray();
    }

    /// <summary>Sums a count over all ranks.</summary>
    public long AllReduceSum(long value)
    {
        if (!UsesMpi) return value;
        using var t = torch.tensor(new[] { value }, dtype: ScalarType.Int64);
        Mpi.AllReduceSum(Address(t), 1, MpiDataType.Int64);
        return t.item<long>();
    }

    /// <summary>The largest <paramref name="value"/> over all ranks.</summary>
    public double AllReduceMax(double value)
    {
        if (!UsesMpi) return value;
        using var t = torch.tensor(new[] { value }, dtype: ScalarType.Float64);
        Mpi.AllReduceMax(Address(t), 1, MpiDataType.Float64);
        return t.item<double>();
    }

    /// <summary>Overwrites <paramref name="tensor"/> on every rank with <paramref name="root"/>'s values (any dtype, any device).</summary>
    public void Broadcast(Tensor tensor, int root = 0)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentOutOfRangeException.ThrowIfNegative(root);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(root, WorldSize);
        if (!UsesMpi) return;
        BroadcastInPlace(tensor, root);
    }

    /// <summary>
    /// <paramref name="root"/>'s <paramref name="data"/> on every rank (collective; other ranks' arguments are ignored):
    /// the length travels first, then the bytes.
    /// </summary>
    public byte[] BroadcastBytes(byte[] data, int root = 0)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (!UsesMpi) return data;
        using var length = torch.tensor(new[] { Rank == root ? (long)data.Length : 0L }, dtype: ScalarType.Int64);
        Broadcast(length, root);
        var n = length.item<long>();
        using var buffer = Rank == root ? torch.tensor(data, dtype: ScalarType.Byte) : torch.zeros(n, dtype: ScalarType.Byte);
        Broadcast(buffer, root);
        return buffer.data<byte>().ToArray();
    }

    /// <summary>
    /// Copies rank 0's values of every parameter and buffer of <paramref name="module"/> to all ranks, so every rank
    /// starts from the same weights whatever its own random initialisation was.
    /// </summary>
    public void BroadcastModule(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        if (!UsesMpi) return;
        var seen = new HashSet<nint>();
        foreach (var (_, t) in module.state_dict())
            if (seen.Add(t.is_meta ? t.Handle : Address(t))) Broadcast(t); // a tied weight once
    }

    /// <summary>Runs <paramref name="write"/> on rank 0 only (checkpoints, logs), then waits for every rank.</summary>
    public void OnMain(Action write)
    {
        ArgumentNullException.ThrowIfNull(write);
        if (IsMain) write();
        Barrier();
    }

    /// <summary>
    /// The gradient sync for this process group: <see cref="LocalGradientSync"/> (in place, no host copy) with one
    /// process, <see cref="DataParallelGradients"/> (one all-reduce through a flat buffer) with several.
    /// </summary>
    public IGradientSync GradientSync(IEnumerable<TorchSharp.Modules.Parameter> parameters, double? maxGradNorm) =>
        WorldSize == 1 ? new LocalGradientSync(parameters, maxGradNorm) : new DataParallelGradients(this, parameters, maxGradNorm);

    /// <summary>The range of a global batch of <paramref name="globalCount"/> items this rank processes.</summary>
    public (int Start, int Count) ShardRange(int globalCount) => Sharding.Range(globalCount, Rank, WorldSize);

    /// <summary>MPI_Finalize after a successful run (collective: every rank must call it).</summary>
    public void Dispose()
    {
        if (_finished) return;
        _finished = true;
        if (UsesMpi) Mpi.FinalizeMpi();
    }

    private static MpiDataType? ReducibleType(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => MpiDataType.Float32,
        ScalarType.Float64 => MpiDataType.Float64,
        ScalarType.Int64 => MpiDataType.Int64,
        _ => null,
    };

    private static nint Address(Tensor t) => Native.TensorMemory.Address(t);

    private static bool IsHostContiguous(Tensor t) => t.device_type == DeviceType.CPU && t.is_contiguous();

    // Sums in the tensor's own memory when MPI can; otherwise through a host copy in float32/float64/int64.
    private static void SumInPlace(Tensor tensor)
    {
        if (tensor.numel() == 0) return;
        using var guard = no_grad();
        if (IsHostContiguous(tensor) && ReducibleType(tensor.dtype) is { } type)
        {
            Mpi.AllReduceSum(Address(tensor), tensor.numel(), type);
            return;
        }
        var staging = tensor.dtype switch
        {
            ScalarType.Float64 => ScalarType.Float64,
            ScalarType.Byte or ScalarType.Int8 or ScalarType.Int16 or ScalarType.Int32 or ScalarType.Int64 => ScalarType.Int64,
            _ => ScalarType.Float32,
        };
        using var host = tensor.detach().to(DeviceType.CPU).to_type(staging).contiguous().clone();
        Mpi.AllReduceSum(Address(host), host.numel(), ReducibleType(staging)!.Value);
        tensor.copy_(host);
    }

    // Broadcasts raw bytes, so every dtype (bf16 included) travels exactly; GPU or strided tensors go through a host copy.
    private static void BroadcastInPlace(Tensor tensor, int root)
    {
        if (tensor.numel() == 0) return;
        using var guard = no_grad();
        if (IsHostContiguous(tensor))
        {
            Mpi.Broadcast(Address(tensor), tensor.numel() * tensor.ElementSize, MpiDataType.Byte, root);
            return;
        }
        using var host = tensor.detach().to(DeviceType.CPU).contiguous().clone();
        Mpi.Broadcast(Address(host), host.numel() * host.ElementSize, MpiDataType.Byte, root);
        tensor.copy_(host);
    }
}

/// <summary>
/// A failure every rank detected together (a collective check) and rank 0 reports: the other ranks end without
/// printing it again (<see cref="DistributedContext.Run"/>).
/// </summary>
public sealed class ReportedByMainRankException(string message) : Exception(message);

// Our own binding to the few MPI C functions data-parallel training needs. Everything that knows about MPI's ABI lives
// in this one file: the library is found with NativeLibrary, functions are bound through GetExport, and handles are
// nint. Open MPI's handles are the addresses of exported globals (MPI_COMM_WORLD is &ompi_mpi_comm_world, MPI_FLOAT is
// &ompi_mpi_float ...), MPI_IN_PLACE is (void*)1. MPICH and its ABI family (Intel MPI, MVAPICH) use integer handles
// (MPI_COMM_WORLD = 0x44000000 ...) and MPI_IN_PLACE = (void*)-1; both sets are taken from the two projects' mpi.h.
// An int handle passed as a 64-bit nint is read correctly by the callee on x86-64 and arm64 (low half of a register).
// Counts are C ints, so large buffers go in chunks of at most 2^30 elements.
// MPI.NET is not used: its NuGet build binds msmpi.dll with MS-MPI's integer handles and crashes on Open MPI.
// References: MPI 4.0 standard (MPI_Init_thread, MPI_Allreduce, MPI_Bcast, MPI_Abort, MPI_Get_library_version);
// Open MPI 4.1 mpi.h (OMPI_PREDEFINED_GLOBAL); MPICH 4.0 mpi.h.
using System.Runtime.InteropServices;
using System.Text;

namespace SharpTune.Distributed;

/// <summary>Element types the binding reduces and broadcasts.</summary>
public enum MpiDataType
{
    /// <summary>MPI_FLOAT (4 bytes).</summary>
    Float32,
    /// <summary>MPI_DOUBLE (8 bytes).</summary>
    Float64,
    /// <summary>MPI_LONG_LONG (8 bytes).</summary>
    Int64,
    /// <summary>MPI_BYTE (1 byte): raw memory of any tensor dtype, for broadcasts.</summary>
    Byte,
}

/// <summary>Which MPI ABI the loaded library speaks.</summary>
public enum MpiFlavor
{
    /// <summary>Open MPI: pointer handles to exported globals.</summary>
    OpenMpi,
    /// <summary>MPICH ABI (MPICH, Intel MPI, MVAPICH): integer handles.</summary>
    Mpich,
}

/// <summary>
/// A minimal binding to the MPI C API over MPI_COMM_WORLD. Not thread-safe by design: initialise with
/// MPI_THREAD_SERIALIZED and call from one thread at a time.
/// </summary>
public static class Mpi
{
    /// <summary>The largest element count sent in one MPI call (counts are C ints).</summary>
    public const int MaxChunkElements = 1 << 30;

    private const int ThreadSerialized = 2; // same value in Open MPI's enum and MPICH's #define

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int IntOut(out int value);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int InitThreadFn(nint argc, nint argv, int required, out int provided);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int CommIntOut(nint comm, out int value);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int AllreduceFn(nint send, nint recv, int count, nint type, nint op, nint comm);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int BcastFn(nint buffer, int count, nint type, int root, nint comm);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int CommFn(nint comm);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int AbortFn(nint comm, int code);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int VoidFn();
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int StringFn(byte[] text, out int length);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int ErrorStringFn(int code, byte[] text, out int length);

    private sealed record Api(
        MpiFlavor Flavor, string Library, IntOut Initialized, IntOut Finalized, InitThreadFn InitThread,
        CommIntOut CommRank, CommIntOut CommSize, AllreduceFn Allreduce, BcastFn Bcast, CommFn Barrier, AbortFn Abort,
        VoidFn Finalize, ErrorStringFn ErrorString, nint CommWorld, nint InPlace, nint OpSum, nint OpMax,
        nint Float32, nint Float64, nint Int64, nint Byte);

    private static readonly object Gate = new();
    private static Api? _api;

    /// <summary>True once the MPI library is loaded (it is never loaded for a plain single-process run).</summary>
    public static bool IsLoaded => _api is not null;

    /// <summary>The ABI of the loaded library.</summary>
    public static MpiFlavor Flavor => Loaded.Flavor;

    /// <summary>The file name the library was loaded from.</summary>
    public static string LibraryName => Loaded.Library;

    /// <summary>Environment variables that say the process was started by an MPI launcher (Open MPI, then PMI).</summary>
    public static (int Rank, int Size, int LocalSize)? LauncherEnvironment()
    {
        static int? Read(params string[] names)
        {
            foreach (var n in names)
                if (int.TryParse(Environment.GetEnvironmentVariable(n), out var v)) return v;
            return null;
        }
        var size = Read("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE");
        if (size is null) return null;
        var rank = Read("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK") ?? 0;
        var local = Read("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS") ?? size.Value;
        return (rank, size.Value, local);
    }

    /// <summary>
    /// Sets UCX_ERROR_SIGNALS to empty in the native environment (UCX would otherwise turn the runtime's SIGSEGV-based
    /// NullReferenceException into a crash), loads the library (SHARPTUNE_MPI_LIBRARY, else libmpi.so.40 for Open MPI,
    /// else the MPICH names), and calls MPI_Init_thread(MPI_THREAD_SERIALIZED) unless already initialised.
    /// </summary>
    public static void Initialize()
    {
        lock (Gate)
        {
            if (_api is null)
            {
                // UCX (linked into Open MPI and MPICH) reads its global options when the library is LOADED, so these
                // must be in the native environment before NativeLibrary.TryLoad.
                SetNativeEnv("UCX_ERROR_SIGNALS", "", overwrite: true);
                SetNativeEnv("UCX_WARN_UNUSED_ENV_VARS", "n", overwrite: false);
                _api = Load();
            }
            if (Flag(_api.Initialized) != 0) return;
            if (Flag(_api.Finalized) != 0) throw new InvalidOperationException("MPI was already finalized in this process; it cannot be initialised again");
            Check(_api.InitThread(0, 0, ThreadSerialized, out var provided), "MPI_Init_thread");
            if (provided < ThreadSerialized)
                throw new InvalidOperationException($"{_api.Library} provides MPI thread level {provided}; SharpTune needs MPI_THREAD_SERIALIZED ({ThreadSerialized})");
        }
    }

    /// <summary>MPI_Initialized: whether MPI_Init has run (false when the library is not loaded).</summary>
    public static bool Initialized => _api is { } api && Flag(api.Initialized) != 0;

    /// <summary>This process's rank in MPI_COMM_WORLD.</summary>
    public static int Rank { get { Check(Loaded.CommRank(Loaded.CommWorld, out var r), "MPI_Comm_rank"); return r; } }

    /// <summary>The number of processes in MPI_COMM_WORLD.</summary>
    public static int Size { get { Check(Loaded.CommSize(Loaded.CommWorld, out var s), "MPI_Comm_size"); return s; } }

    /// <summary>Sums <paramref name="count"/> elements at <paramref name="buffer"/> over all ranks, in place.</summary>
    public static void AllReduceSum(nint buffer, long count, MpiDataType type) => AllReduce(buffer, count, type, max: false);

    /// <summary>Element-wise maximum of <paramref name="count"/> elements over all ranks, in place.</summary>
    public static void AllReduceMax(nint buffer, long count, MpiDataType type) => AllReduce(buffer, count, type, max: true);

    /// <summary>Copies <paramref name="count"/> elements at <paramref name="buffer"/> from <paramref name="root"/> to every rank.</summary>
    public static void Broadcast(nint buffer, long count, MpiDataType type, int root = 0)
    {
        var api = Loaded;
        var size = ElementSize(type);
        foreach (var (offset, n) in Chunks(count, MaxChunkElements))
            Check(api.Bcast(buffer + (nint)(offset * size), n, Handle(api, type), root, api.CommWorld), "MPI_Bcast");
    }

    /// <summary>Blocks until every rank reaches the barrier.</summary>
    public static void Barrier() => Check(Loaded.Barrier(Loaded.CommWorld), "MPI_Barrier");

    /// <summary>Ends every process of the job with <paramref name="errorCode"/> (MPI_Abort). Does not return normally.</summary>
    public static void Abort(int errorCode) => Loaded.Abort(Loaded.CommWorld, errorCode);

    /// <summary>MPI_Finalize. Collective: call it only when every rank will (never in a finally that runs after a failure).</summary>
    public static void FinalizeMpi()
    {
        var api = Loaded;
        if (Flag(api.Initialized) != 0 && Flag(api.Finalized) == 0) Check(api.Finalize(), "MPI_Finalize");
    }

    /// <summary>The size in bytes of one element of <paramref name="type"/>.</summary>
    public static int ElementSize(MpiDataType type) => type switch
    {
        MpiDataType.Float32 => 4,
        MpiDataType.Float64 or MpiDataType.Int64 => 8,
        MpiDataType.Byte => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown MPI data type"),
    };

    /// <summary>
    /// Splits <paramref name="count"/> elements into consecutive (offset, count) pieces of at most
    /// <paramref name="maxChunk"/> elements; no piece is empty and zero elements give no piece.
    /// </summary>
    public static IEnumerable<(long Offset, int Count)> Chunks(long count, int maxChunk)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxChunk, 1);
        for (long offset = 0; offset < count; offset += maxChunk)
            yield return (offset, (int)Math.Min(maxChunk, count - offset));
    }

    private static void AllReduce(nint buffer, long count, MpiDataType type, bool max)
    {
        var api = Loaded;
        var size = ElementSize(type);
        foreach (var (offset, n) in Chunks(count, MaxChunkElements))
            Check(api.Allreduce(api.InPlace, buffer + (nint)(offset * size), n, Handle(api, type), max ? api.OpMax : api.OpSum, api.CommWorld),
                "MPI_Allreduce");
    }

    private static Api Loaded => _api ?? throw new InvalidOperationException("MPI is not loaded: call Mpi.Initialize() first (only under mpirun)");

    private static nint Handle(Api api, MpiDataType type) => type switch
    {
        MpiDataType.Float32 => api.Float32,
        MpiDataType.Float64 => api.Float64,
        MpiDataType.Int64 => api.Int64,
        MpiDataType.Byte => api.Byte,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown MPI data type"),
    };

    private static int Flag(IntOut fn)
    {
        Check(fn(out var flag), "MPI_Initialized/MPI_Finalized");
        return flag;
    }

    private static void Check(int code, string function)
    {
        if (code == 0) return;
        var message = $"error code {code}";
        if (_api is { } api)
        {
            var text = new byte[1024];
            if (api.ErrorString(code, text, out var len) == 0) message = Encoding.UTF8.GetString(text, 0, Math.Clamp(len, 0, text.Length));
        }
        throw new InvalidOperationException($"{function} failed: {message}");
    }

    private static Api Load()
    {
        var explicitPath = Environment.GetEnvironmentVariable("SHARPTUNE_MPI_LIBRARY");
        string[] candidates = !string.IsNullOrEmpty(explicitPath)
            ? [explicitPath]
            : Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null
                ? ["libmpi.so.40", "libmpi.so"]
                : ["libmpich.so.12", "libmpi.so.12", "libmpi.so.40", "libmpi.so"];
        nint lib = 0;
        string? name = null;
        foreach (var c in candidates)
            if (NativeLibrary.TryLoad(c, out lib)) { name = c; break; }
        if (name is null)
            throw new DllNotFoundException(
                $"no MPI library could be loaded (tried {string.Join(", ", candidates)}). Install Open MPI " +
                "(Debian: apt-get install openmpi-bin libopenmpi-dev) or set SHARPTUNE_MPI_LIBRARY to the libmpi path.");

        T Fn<T>(string symbol) where T : Delegate =>
            NativeLibrary.TryGetExport(lib, symbol, out var p)
                ? Marshal.GetDelegateForFunctionPointer<T>(p)
                : throw new EntryPointNotFoundException($"{name} does not export {symbol}; is it an MPI-3 library?");

        MpiFlavor flavor;
        nint world, inPlace, sum, max, f32, f64, i64, u8;
        if (NativeLibrary.TryGetExport(lib, "ompi_mpi_comm_world", out world))
        {
            flavor = MpiFlavor.OpenMpi;
            nint G(string symbol) => NativeLibrary.TryGetExport(lib, symbol, out var p)
                ? p : throw new EntryPointNotFoundException($"{name} looks like Open MPI but does not export {symbol}");
            inPlace = 1;
            (sum, max) = (G("ompi_mpi_op_sum"), G("ompi_mpi_op_max"));
            (f32, f64, i64, u8) = (G("ompi_mpi_float"), G("ompi_mpi_double"), G("ompi_mpi_long_long_int"), G("ompi_mpi_byte"));
        }
        else
        {
            var version = LibraryVersion(Fn<StringFn>("MPI_Get_library_version"));
            if (!(version.Contains("MPICH", StringComparison.OrdinalIgnoreCase) || version.Contains("Intel", StringComparison.OrdinalIgnoreCase)))
                throw new NotSupportedException(
                    $"{name} is neither Open MPI (no ompi_mpi_comm_world symbol) nor of the MPICH ABI (version string: '{version.Trim()}')");
            flavor = MpiFlavor.Mpich;
            (world, inPlace) = (0x44000000, -1);
            (sum, max) = (0x58000003, 0x58000001);
            (f32, f64, i64, u8) = (0x4c00040a, 0x4c00080b, 0x4c000809, 0x4c00010d);
        }
        return new Api(flavor, name, Fn<IntOut>("MPI_Initialized"), Fn<IntOut>("MPI_Finalized"), Fn<InitThreadFn>("MPI_Init_thread"),
            Fn<CommIntOut>("MPI_Comm_rank"), Fn<CommIntOut>("MPI_Comm_size"), Fn<AllreduceFn>("MPI_Allreduce"),
            Fn<BcastFn>("MPI_Bcast"), Fn<CommFn>("MPI_Barrier"), Fn<AbortFn>("MPI_Abort"), Fn<VoidFn>("MPI_Finalize"),
            Fn<ErrorStringFn>("MPI_Error_string"), world, inPlace, sum, max, f32, f64, i64, u8);
    }

    private static string LibraryVersion(StringFn fn)
    {
        var text = new byte[8192]; // MPICH's MPI_MAX_LIBRARY_VERSION_STRING; Open MPI's is 256
        return fn(text, out var len) == 0 ? Encoding.UTF8.GetString(text, 0, Math.Clamp(len, 0, text.Length)) : "";
    }

    // .NET's Environment.SetEnvironmentVariable changes only the runtime's managed copy on Unix; MPI reads environ.
    private static void SetNativeEnv(string name, string value, bool overwrite)
    {
        if (OperatingSystem.IsLinux() && setenv(name, value, overwrite ? 1 : 0) != 0)
            throw new InvalidOperationException($"setenv({name}) failed (errno {Marshal.GetLastPInvokeError()})");
    }

    [DllImport("libc.so.6", CharSet = CharSet.Ansi, SetLastError = true)]
    private static extern int setenv(string name, string value, int overwrite);
}

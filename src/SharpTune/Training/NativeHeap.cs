// Keeps a long training run's resident memory flat under glibc's allocator without slowing the step. libtorch frees
// every step's activations and gradients, but glibc keeps the freed memory: (1) its dynamic mmap threshold climbs
// after the first large free (up to 32 MiB on 64-bit), so later large tensors come from the heap, and with batch
// shapes that vary from step to step the heap fragments and grows; (2) each thread that allocates can get its own
// arena (up to 8 x cores), each keeping its own free lists; (3) freed chunks in the middle of a heap are returned
// only by malloc_trim. RSS then grows for hundreds of steps with constant live tensors (issue 6 measured
// 1.4 -> 3.5 GB in 50 steps).
// The fix needs nothing installed: at startup fix the mmap threshold at glibc's maximum (32 MiB; fixing it turns
// off the dynamic climb), raise the automatic trim threshold so free() does not hand the heap top back mid-step,
// cap the arenas, and malloc_trim(0) every 16 steps. Between trims the step reuses resident heap memory.
// Small native objects left to the .NET finalizer: TorchSharp makes a native at::Scalar for each number passed to a
// tensor operation (and for the alpha of every one-argument add) and frees it only in the finalizer. A heap dump of
// the KD benchmark (dotnet-dump, --quick, no collection) held ~460 undisposed Scalars per step (AdamW's coefficients,
// ~8 per parameter; 1 / tokens per gradient; RMSNorm's eps and exponent; ignore indices; loss weights; additions'
// alphas), each a 48-byte chunk carved out of the large blocks libtorch had just freed. The big free blocks so split
// no longer fit the next step's 31 MiB logit chunks, and the heap grew: at the full shape, with no collection, RSS went
// 3.55 -> 7.00 GiB in 8 steps with constant live tensors and constant bytes in use (mallinfo2: all of it free heap).
// The fix is at the source: the step passes shared or disposed Scalars (Native/Scalars.cs, Training/Optimizers.cs'
// ScalarFreeAdamW), none is left per step (checked with the same dump), and the same 8 steps stay at 3.16 -> 3.47 GiB
// with no collection. The step end still runs a collection when RSS has grown by more than `CollectOnRssGrowth`
// (5%) since the last one: a safety net for code that still leaves native objects to the finalizer; a step whose
// memory is flat never collects. (Earlier policies forced a collection after every step or every long step.)
// Both cheaper-looking extremes were measured and rejected (bench/KdStep --profile, bench/Memory): a 256 KiB mmap
// threshold with a trim every step kept RSS flat but made every tensor a fresh mmap, so every step page-faulted its
// whole working set again (KD benchmark step 339 vs 444 tokens/s, medians of 3 alternating runs; elementwise ops
// 4-5x slower); no trimming let peak RSS grow 17% over 1,000 varied-shape steps. With jemalloc/tcmalloc preloaded
// (LD_PRELOAD) we leave the allocator alone.
// References: mallopt(3), malloc_trim(3), glibc malloc/malloc.c (M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD_MAX),
// glibc manual "Memory Allocation Tunables".
using System.Runtime.InteropServices;

namespace SharpTune.Training;

/// <summary>Which allocator serves malloc in this process.</summary>
public enum NativeAllocator
{
    /// <summary>Not Linux, or could not tell.</summary>
    Unknown,
    /// <summary>glibc's ptmalloc (the default on Debian/Ubuntu).</summary>
    Glibc,
    /// <summary>jemalloc (preloaded).</summary>
    Jemalloc,
    /// <summary>tcmalloc (preloaded).</summary>
    Tcmalloc,
}

/// <summary>glibc heap figures from mallinfo2.</summary>
/// <param name="ArenaBytes">Bytes obtained from the OS for the heap arenas (sbrk and arena mmaps).</param>
/// <param name="InUseBytes">Bytes of arena chunks the program holds.</param>
/// <param name="FreeBytes">Bytes of free arena chunks malloc keeps (fragmentation shows here).</param>
/// <param name="MmappedBytes">Bytes in blocks served by their own mmap (returned to the OS on free).</param>
public readonly record struct NativeHeapStatistics(long ArenaBytes, long InUseBytes, long FreeBytes, long MmappedBytes);

/// <summary>Settings for <see cref="NativeHeap.Configure"/>.</summary>
public sealed record NativeHeapOptions
{
    /// <summary>Blocks at least this large are mmapped and unmapped on free (glibc's default is a dynamic 128 KiB..32 MiB;
    /// 32 MiB is glibc's maximum). Smaller blocks are reused from the heap without page faults.</summary>
    public int MmapThresholdBytes { get; init; } = 32 * 1024 * 1024;

    /// <summary>Free memory at the top of a heap beyond this is returned to the OS on free (the periodic
    /// <see cref="TrimEveryNSteps"/> returns the rest).</summary>
    public int TrimThresholdBytes { get; init; } = 1024 * 1024 * 1024;

    /// <summary>Maximum malloc arenas (0 keeps glibc's 8 x cores).</summary>
    public int ArenaMax { get; init; } = 2;

    /// <summary>Call malloc_trim(0) every this many <see cref="NativeHeap.AfterStep"/> calls (0 never). Each trim
    /// hands the free heap back, and the next step faults its working set in again (about 1.4 s on the KD benchmark
    /// step), so trimming every step costs far more than it keeps.</summary>
    public int TrimEveryNSteps { get; init; } = 16;

    /// <summary>At <see cref="NativeHeap.AfterStep"/>, run a full .NET collection (and the finalizers) when the
    /// process's resident memory exceeds the mark by more than this fraction (0 never). The mark is the RSS after the
    /// first step, raised to the RSS after each collection.</summary>
    public double CollectOnRssGrowth { get; init; } = 0.05;
}

/// <summary>Allocator settings and periodic trimming that keep training RSS flat. Recipes call
/// <see cref="Configure"/> once at startup (before the model is built) and <see cref="AfterStep"/> after each
/// optimizer step.</summary>
public static class NativeHeap
{
    private const int MTrimThreshold = -1;
    private const int MMmapThreshold = -3;
    private const int MArenaMax = -8;
    private const string LibC = "libc.so.6";

    private static NativeHeapOptions _options = new() { TrimEveryNSteps = 0, CollectOnRssGrowth = 0 };
    private static long _steps;
    private static long _rssMark;

    /// <summary>Collections <see cref="AfterStep"/> has run since <see cref="Configure"/>.</summary>
    public static int Collections { get; private set; }

    /// <summary>The allocator serving malloc here (reads /proc/self/maps for a preloaded jemalloc/tcmalloc).</summary>
    public static NativeAllocator Allocator { get; } = Detect();

    /// <summary>True after a successful <see cref="Configure"/>.</summary>
    public static bool IsConfigured { get; private set; }

    /// <summary>
    /// Applies <paramref name="options"/> (defaults when null) on glibc. Returns a sentence describing what was done,
    /// for the progress reporter. Setting the environment variable <c>SHARPTUNE_MALLOC_TUNING=0</c> disables it.
    /// </summary>
    public static string Configure(NativeHeapOptions? options = null)
    {
        options ??= new NativeHeapOptions();
        if (options.MmapThresholdBytes <= 0 || options.TrimThresholdBytes < 0 || options.ArenaMax < 0 || options.TrimEveryNSteps < 0 ||
            !(options.CollectOnRssGrowth >= 0))
            throw new ArgumentOutOfRangeException(nameof(options), options, "allocator settings must be positive (arena_max, trim_every_n_steps and collect_on_rss_growth may be 0)");
        if (Environment.GetEnvironmentVariable("SHARPTUNE_MALLOC_TUNING") == "0")
            return "allocator tuning disabled by SHARPTUNE_MALLOC_TUNING=0";
        _options = options with { TrimEveryNSteps = 0 };
        _steps = 0;
        _rssMark = 0;
        Collections = 0;
        IsConfigured = true;
        if (Allocator != NativeAllocator.Glibc)
            return $"allocator is {Allocator}; leaving it as it is";
        var ok = mallopt(MMmapThreshold, options.MmapThresholdBytes) == 1
                 & mallopt(MTrimThreshold, options.TrimThresholdBytes) == 1
                 & (options.ArenaMax == 0 || mallopt(MArenaMax, options.ArenaMax) == 1);
        if (!ok) return "glibc rejected an allocator setting (mallopt returned 0); memory may grow over long runs";
        _options = options;
        return $"glibc malloc: mmap threshold {options.MmapThresholdBytes / 1024} KiB, trim threshold {options.TrimThresholdBytes / 1024} KiB, " +
               $"arena max {(options.ArenaMax == 0 ? "default" : options.ArenaMax)}, trim every {options.TrimEveryNSteps} step(s), " +
               (options.CollectOnRssGrowth > 0 ? $"GC when RSS grows {options.CollectOnRssGrowth:P0}" : "no GC on RSS growth");
    }

    /// <summary>The step-end memory policy, called after each optimizer step (outside its dispose scope): a full .NET
    /// collection when resident memory grew past the mark (<see cref="NativeHeapOptions.CollectOnRssGrowth"/>), and the
    /// heap trimmed as configured.</summary>
    public static void AfterStep()
    {
        if (!IsConfigured) return;
        _steps++;
        if (_options.CollectOnRssGrowth > 0)
        {
            var rss = ProcessMemory.Read().RssBytes;
            if (_rssMark == 0) _rssMark = rss;
            else if (ShouldCollect(rss, _rssMark, _options.CollectOnRssGrowth))
            {
                GC.Collect();
                GC.WaitForPendingFinalizers(); // TorchSharp frees a tensor's or a Scalar's native memory in its finalizer
                GC.Collect();
                Collections++;
                _rssMark = Math.Max(_rssMark, ProcessMemory.Read().RssBytes);
            }
        }
        if (_options.TrimEveryNSteps > 0 && _steps % _options.TrimEveryNSteps == 0) Trim();
    }

    /// <summary>True when <paramref name="rss"/> exceeds <paramref name="mark"/> by more than the fraction
    /// <paramref name="growth"/>.</summary>
    public static bool ShouldCollect(long rss, long mark, double growth) => rss > mark * (1 + growth);

    /// <summary>Returns free heap memory to the OS (malloc_trim(0)); false when nothing was released or not glibc.</summary>
    public static bool Trim() => Allocator == NativeAllocator.Glibc && malloc_trim(0) == 1;

    /// <summary>
    /// glibc's own accounting (mallinfo2): bytes in use by the program and bytes held free by malloc, in the heap
    /// arenas and in mmapped blocks. Null when not glibc (or glibc older than 2.33).
    /// </summary>
    public static NativeHeapStatistics? Statistics()
    {
        if (Allocator != NativeAllocator.Glibc) return null;
        try
        {
            var m = mallinfo2();
            return new NativeHeapStatistics(
                ArenaBytes: (long)m.Arena, InUseBytes: (long)m.Uordblks, FreeBytes: (long)m.Fordblks, MmappedBytes: (long)m.Hblkhd);
        }
        catch (EntryPointNotFoundException)
        {
            return null;
        }
    }

    private static NativeAllocator Detect()
    {
        if (!OperatingSystem.IsLinux()) return NativeAllocator.Unknown;
        try
        {
            var maps = File.ReadAllText("/proc/self/maps");
            if (maps.Contains("jemalloc", StringComparison.Ordinal)) return NativeAllocator.Jemalloc;
            if (maps.Contains("tcmalloc", StringComparison.Ordinal)) return NativeAllocator.Tcmalloc;
            return Marshal.PtrToStringAnsi(gnu_get_libc_version()) is { Length: > 0 } ? NativeAllocator.Glibc : NativeAllocator.Unknown;
        }
        catch (Exception e) when (e is IOException or DllNotFoundException or EntryPointNotFoundException or UnauthorizedAccessException)
        {
            return NativeAllocator.Unknown;
        }
    }

    [DllImport(LibC)] private static extern int mallopt(int param, int value);
    [DllImport(LibC)] private static extern int malloc_trim(nuint pad);
    [DllImport(LibC)] private static extern IntPtr gnu_get_libc_version();
    [DllImport(LibC)] private static extern MallInfo2 mallinfo2();

    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }
}

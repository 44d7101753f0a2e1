// Process-wide libtorch settings and a clear failure when the native shim cannot load.
// See build/NativeLoading.targets for why the shim may need patching on Debian 12.
// OpenMP wait policy: libtorch's bundled libgomp reads OMP_WAIT_POLICY once, when it is loaded; with the default
// (spin, then sleep) idle worker threads keep spinning between parallel regions and steal the cores other threads
// and processes need. On a loaded 2-core machine that made a KD training step up to 30x slower (docs/performance.md),
// so unless the user chose a policy, EnsureLoaded asks for PASSIVE before libtorch loads, as PyTorch's CPU tuning
// guide suggests for shared machines (https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html).
using System.Runtime.InteropServices;
using TorchSharp;

namespace SharpTune.Native;

/// <summary>Initialises libtorch once and explains load failures.</summary>
public static class TorchRuntime
{
    private static readonly object Gate = new();
    private static bool _ready;

    /// <summary>
    /// Touches libtorch so that a missing or unloadable native library fails here, with advice, instead of deep
    /// inside a model. Safe to call many times.
    /// </summary>
    public static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (_ready) return;
            PreferPassiveOpenMpWaiting();
            try
            {
                using var probe = torch.zeros(1);
            }
            catch (TypeInitializationException e)
            {
                throw new InvalidOperationException(
                    "libtorch could not be loaded. If the inner error mentions GLIBCXX_3.4.32, the build step that " +
                    "marks that requirement weak did not run on this output folder (see README, 'Native libraries'). " +
                    $"Inner error: {Innermost(e).Message}", e);
            }
            _ready = true;
        }
    }

    /// <summary>Sets the number of intra-op threads libtorch uses (0 keeps libtorch's choice).</summary>
    public static void SetThreads(int threads)
    {
        EnsureLoaded();
        if (threads > 0) torch.set_num_threads(threads);
    }

    /// <summary>
    /// The OpenMP wait policy in the native environment (what libgomp reads), or null when unset. SharpTune sets
    /// PASSIVE when the user set nothing and libtorch was not yet loaded; set OMP_WAIT_POLICY=ACTIVE to opt out.
    /// </summary>
    public static string? OpenMpWaitPolicy =>
        OperatingSystem.IsWindows() ? Environment.GetEnvironmentVariable(WaitPolicy) : Marshal.PtrToStringUTF8(getenv(WaitPolicy));

    private const string WaitPolicy = "OMP_WAIT_POLICY";

    // Must run before the first torch call loads libgomp; .NET's Environment.SetEnvironmentVariable does not reach
    // the native environment on Unix, so libc's setenv is called directly.
    private static void PreferPassiveOpenMpWaiting()
    {
        if (OperatingSystem.IsWindows() || getenv(WaitPolicy) != IntPtr.Zero) return;
        setenv(WaitPolicy, "PASSIVE", 0);
    }

    [DllImport("libc.so.6", CharSet = CharSet.Ansi)] private static extern IntPtr getenv(string name);
    [DllImport("libc.so.6", CharSet = CharSet.Ansi)] private static extern int setenv(string name, string value, int overwrite);

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e;
    }
}

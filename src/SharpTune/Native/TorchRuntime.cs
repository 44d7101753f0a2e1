// Process-wide libtorch settings and a clear failure when the native shim cannot load.
// See build/NativeLoading.targets for why the shim may need patching on Debian 12.
// OpenMP wait policy: libtorch's bundled libgomp reads OMP_WAIT_POLICY once, when it is loaded; with the default
// (spin, then sleep) idle worker threads keep spinning between parallel regions and steal the cores other threads
// and processes need. On a loaded 2-core machine that made a KD training step up to 30x slower (docs/performance.md),
// so unless the user chose a policy, EnsureLoaded asks for PASSIVE before libtorch loads, as PyTorch's CPU tuning
// guide suggests for shared machines (https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html).
// Denormal floats: x86 arithmetic on subnormal operands takes a microcode assist that costs ~10x; softmax rows of
// badly calibrated logits (random initialisation, large logit scales) are millions of subnormal probabilities, and
// the KD step's loss ran 2-2.5x slower on them. EnsureLoaded turns on flush-to-zero/denormals-are-zero through
// libtorch's own switch (at::Context::setFlushDenormal, torch.set_flush_denormal in Python; TorchSharp does not
// expose it), as TensorFlow does by default on CPU. The switch is per thread (MXCSR): it covers the loading thread
// and the OpenMP workers that thread creates afterwards, which is why it runs before the first torch call.
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
                using var probe = torch.zeros(1); // loads libtorch; too small to start the OpenMP workers
                SetFlushDenormal(Environment.GetEnvironmentVariable("SHARPTUNE_FLUSH_DENORMAL") != "0");
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
    /// Turns flush-to-zero and denormals-are-zero on or off for the calling thread (and the OpenMP worker threads it
    /// creates later). Returns false where the CPU has no such mode (then nothing changes). <see cref="EnsureLoaded"/>
    /// turns it on for the loading thread unless <c>SHARPTUNE_FLUSH_DENORMAL=0</c>.
    /// </summary>
    public static bool SetFlushDenormal(bool on)
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return setFlushDenormal(globalContext(), on);
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false; // a libtorch build without the symbol: keep IEEE subnormals
        }
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
    // at::globalContext() and at::Context::setFlushDenormal(bool) (Itanium C++ ABI: the object is the first argument).
    [DllImport("libtorch_cpu.so", EntryPoint = "_ZN2at13globalContextEv")] private static extern IntPtr globalContext();
    [DllImport("libtorch_cpu.so", EntryPoint = "_ZN2at7Context16setFlushDenormalEb")]
    [return: MarshalAs(UnmanagedType.U1)]
    private static extern bool setFlushDenormal(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool on);
    [DllImport("libc.so.6", CharSet = CharSet.Ansi)] private static extern int setenv(string name, string value, int overwrite);

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e;
    }
}

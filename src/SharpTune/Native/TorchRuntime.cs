// Process-wide libtorch settings and a clear failure when the native shim cannot load.
// See build/NativeLoading.targets for why the shim may need patching on Debian 12.
// OpenMP wait policy: libtorch's bundled libgomp reads OMP_WAIT_POLICY once, when it is loaded; with the default
// (spin, then sleep) idle worker threads keep spinning between parallel regions and steal the cores other threads
// and processes need. On a loaded 2-core machine that made a KD training step up to 30x slower (docs/performance.md),
// so unless the user chose a policy, SharpTune asks for PASSIVE before libtorch loads, as PyTorch's CPU tuning
// guide suggests for shared machines (https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html).
// "Before libtorch loads" is earlier than it looks: the first touch of TorchSharp's `torch` class (even reading the
// field `torch.CPU`, as a recipe's field initialiser does) runs its static constructor, which loads libtorch and
// libgomp. EnsureLoaded, called at the top of a recipe's Setup, came too late for recipes constructed first, and
// libgomp kept its default spinning (GOMP_SPINCOUNT 300000 instead of 0). The policy is therefore set by the
// library's module initialiser, which runs before any code of SharpTune does, and by the CLI as its first statement.
// Denormal floats: x86 arithmetic on subnormal operands takes a microcode assist that costs ~10x; softmax rows of
// badly calibrated logits (random initialisation, large logit scales) are millions of subnormal probabilities, and
// the KD step's loss ran 2-2.5x slower on them. EnsureLoaded turns on flush-to-zero/denormals-are-zero through
// libtorch's own switch (at::Context::setFlushDenormal, torch.set_flush_denormal in Python; TorchSharp does not
// expose it), as TensorFlow does by default on CPU. The switch is per thread (MXCSR): it covers the loading thread
// and the OpenMP workers that thread creates afterwards, which is why it runs before the first torch call.
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
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
            PrepareEnvironment();
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

    /// <summary>What the first <see cref="PrepareEnvironment"/> found and did; null before it ran.</summary>
    public static OpenMpWaitSetup? WaitPolicySetup { get; private set; }

    private const string WaitPolicy = "OMP_WAIT_POLICY";

    /// <summary>
    /// Sets the environment libtorch's libgomp reads once, when it is loaded: OMP_WAIT_POLICY=PASSIVE unless the user
    /// chose a policy. Runs automatically from this library's module initialiser; a program that touches TorchSharp
    /// before any SharpTune type calls it first. Safe to call many times: only the first call acts.
    /// </summary>
    public static void PrepareEnvironment()
    {
        lock (Gate)
        {
            if (WaitPolicySetup is not null) return;
            // libc's setenv, because .NET's Environment.SetEnvironmentVariable does not reach the native environment on Unix.
            var userChoice = OpenMpWaitPolicy;
            var libgompLoaded = LibgompLoaded();
            if (userChoice is null && !OperatingSystem.IsWindows()) setenv(WaitPolicy, "PASSIVE", 0);
            WaitPolicySetup = new OpenMpWaitSetup(OpenMpWaitPolicy, SetBySharpTune: userChoice is null && !OperatingSystem.IsWindows(), libgompLoaded);
        }
    }

    // Whether an OpenMP runtime is mapped into this process already (then it has read its environment).
    private static bool LibgompLoaded() =>
        OperatingSystem.IsLinux() && File.ReadLines("/proc/self/maps").Any(l => l.Contains("libgomp", StringComparison.Ordinal));

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

/// <summary>The OpenMP wait policy SharpTune found or set, and whether libgomp had already read its environment then.</summary>
/// <param name="Policy">OMP_WAIT_POLICY in the native environment afterwards (null: unset).</param>
/// <param name="SetBySharpTune">True when the user set nothing and SharpTune set PASSIVE.</param>
/// <param name="LibgompLoadedFirst">True when libgomp was already mapped, so the value came too late to take effect.</param>
public sealed record OpenMpWaitSetup(string? Policy, bool SetBySharpTune, bool LibgompLoadedFirst)
{
    /// <summary>One line for logs, e.g. <c>OMP_WAIT_POLICY=PASSIVE (set by SharpTune before libgomp loaded)</c>.</summary>
    public override string ToString() =>
        $"OMP_WAIT_POLICY={Policy ?? "(unset)"} ({(SetBySharpTune ? "set by SharpTune" : "from the environment")}" +
        (LibgompLoadedFirst ? ", but libgomp was loaded first: it keeps its default policy)" : " before libgomp loaded)");
}

// Runs before any code of this library, hence before a recipe or model can touch TorchSharp and load libgomp.
internal static class TorchRuntimeModuleInitializer
{
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255:The 'ModuleInitializer' attribute should not be used in libraries",
        Justification = "libgomp reads OMP_WAIT_POLICY once, when any TorchSharp call first loads it; the library's first use is the only point that reliably comes earlier")]
    internal static void Initialize() => TorchRuntime.PrepareEnvironment();
}

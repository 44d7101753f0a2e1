// Process-wide libtorch settings and a clear failure when the native shim cannot load.
// See build/NativeLoading.targets for why the shim may need patching on Debian 12.
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

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e;
    }
}

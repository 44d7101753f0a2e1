// Native Scalars that do not wait for the garbage collector. TorchSharp turns every number given to a tensor operation
// into a native at::Scalar (a small heap allocation) and frees it only in the wrapper's finalizer; its one-argument
// add (so tensor + tensor and tensor + number; subtraction takes none) also makes one for the alpha of 1. A training
// step made hundreds, each splitting one of the large blocks libtorch frees every step, so glibc's heap fragmented and
// resident memory grew between collections (Training/NativeHeap.cs; the open TorchSharp pull requests 1434 and 1496
// dispose them upstream). The hot paths pass these instead: constants live for the process (a bounded set: epsilons,
// loss weights, ignore indices, exponents), and a value that changes per step is disposed by its caller.
using System.Collections.Concurrent;
using TorchSharp;

namespace SharpTune.Native;

/// <summary>Shared native Scalars for the numbers a training step passes to libtorch.</summary>
internal static class Scalars
{
    private static readonly ConcurrentDictionary<double, Scalar> Doubles = new();
    private static readonly ConcurrentDictionary<long, Scalar> Longs = new();

    /// <summary>The integer 1: pass it as the alpha of add/add_ (TorchSharp's one-argument add makes its own).</summary>
    public static Scalar One { get; } = Of(1L);

    /// <summary>A process-lifetime Scalar holding <paramref name="value"/> as a double: for constants (an epsilon, a
    /// loss weight from the config), never for a value that changes per step.</summary>
    public static Scalar Of(double value) => Doubles.GetOrAdd(value, static v => v.ToScalar());

    /// <summary>A process-lifetime Scalar holding the integer <paramref name="value"/> (an ignore index, an exponent).</summary>
    public static Scalar Of(long value) => Longs.GetOrAdd(value, static v => v.ToScalar());

    /// <summary>a + b without TorchSharp's per-call alpha Scalar.</summary>
    public static torch.Tensor Plus(this torch.Tensor a, torch.Tensor b) => a.add(b, One);
}

// The address of a tensor's first element, through TorchSharp's own native export behind data<T>() (storage offset
// included): for code that hands a host tensor's memory to MPI or reads it in place (the CPU decoding kernel).
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace SharpTune.Native;

internal static class TensorMemory
{
    /// <summary>Address of <paramref name="t"/>'s first element; 0 for a tensor without data (meta).</summary>
    public static nint Address(Tensor t) => THSTensor_data(t.Handle);

    [DllImport("LibTorchSharp")]
    private static extern nint THSTensor_data(nint tensor);
}

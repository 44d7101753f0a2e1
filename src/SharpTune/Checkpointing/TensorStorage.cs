// Moves bytes between a file and a tensor's own memory without a managed copy of the tensor: the destination is
// allocated once (torch.empty or the model's parameter) and the file is read straight into it, in slices of at most
// 1 GiB because a Span is int-indexed. This is what keeps loading an 8B checkpoint at ~1x its size in RAM.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace SharpTune.Checkpointing;

internal static class TensorStorage
{
    /// <summary>Largest slice handed to one read/write call (a Span is limited to int.MaxValue bytes).</summary>
    internal const int SliceBytes = 1 << 30;

    /// <summary>
    /// Fills contiguous CPU tensor <paramref name="dst"/> with the <c>dst.numel * element_size</c> bytes found at
    /// <paramref name="fileOffset"/>. Throws on a short read (the file shrank after its header was checked).
    /// </summary>
    internal static void ReadInto(SafeFileHandle file, string path, long fileOffset, Tensor dst)
    {
        ForEachSlice(dst, (span, sliceOffset) =>
        {
            var done = 0;
            while (done < span.Length)
            {
                var n = RandomAccess.Read(file, span[done..], fileOffset + sliceOffset + done);
                if (n == 0)
                    throw new CheckpointFormatException(path,
                        $"unexpected end of file at byte {fileOffset + sliceOffset + done} while reading tensor data");
                done += n;
            }
        });
    }

    /// <summary>Writes the bytes of contiguous CPU tensor <paramref name="src"/> at <paramref name="fileOffset"/>.</summary>
    internal static void WriteFrom(SafeFileHandle file, long fileOffset, Tensor src) =>
        ForEachSlice(src, (span, sliceOffset) => RandomAccess.Write(file, span, fileOffset + sliceOffset));

    /// <summary>The address of the first byte of a contiguous CPU tensor (0 when it is empty); used to find aliases.</summary>
    internal static nint AddressOf(Tensor t)
    {
        if (t.numel() == 0) return 0;
        using var flat = t.reshape(-1);
        using var first = flat.narrow(0, 0, 1);
        var span = first.bytes;
        return Unsafe.ByteOffset(ref Unsafe.NullRef<byte>(), ref MemoryMarshal.GetReference(span));
    }

    private delegate void SliceAction(Span<byte> span, long sliceOffset);

    private static void ForEachSlice(Tensor t, SliceAction action)
    {
        if (t.device_type != DeviceType.CPU || !t.is_contiguous())
            throw new ArgumentException("tensor must be a contiguous CPU tensor", nameof(t));
        var numel = t.numel();
        if (numel == 0) return;
        var elem = t.element_size();
        var perSlice = SliceBytes / elem;
        // Detach so that writing into a parameter's storage is not an autograd operation.
        using var detached = t.detach();
        using var flat = detached.reshape(-1); // [numel], a view of the same storage
        for (long start = 0; start < numel; start += perSlice)
        {
            var count = Math.Min(perSlice, numel - start);
            using var slice = flat.narrow(0, start, count);
            action(slice.bytes, start * elem);
        }
    }
}

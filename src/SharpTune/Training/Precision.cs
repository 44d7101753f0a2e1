// Training dtype selection. fp32 and bf16 are supported (fp16 is refused, as torchtune does: it needs loss scaling).
// On a CPU without native bf16 instructions (x86 flags avx512_bf16 or amx_bf16) libtorch emulates bf16 matmuls
// through fp32 conversions and they run far slower than fp32 (issue 6 measured ~56x on the development machine;
// bench/Precision measures it here), so we warn through the progress reporter and continue as asked.
// References: torchtune training/precision.py (get_dtype, verify_bf16_support); Linux /proc/cpuinfo flags.
using TorchSharp;

namespace SharpTune.Training;

/// <summary>Parses the <c>dtype</c> config value and checks the hardware supports it well.</summary>
public static class Precision
{
    /// <summary>
    /// Maps <paramref name="dtype"/> (<c>fp32</c>/<c>float32</c>, <c>bf16</c>/<c>bfloat16</c>) to a scalar type.
    /// Warns through <paramref name="reporter"/> when bf16 is asked for on a CPU without native bf16.
    /// </summary>
    /// <param name="dtype">The config value.</param>
    /// <param name="device">The training device (<c>cpu</c> or <c>cuda[:n]</c>).</param>
    /// <param name="reporter">Receives the warning, if any.</param>
    public static torch.ScalarType Resolve(string dtype, string device, IProgressReporter reporter)
    {
        ArgumentNullException.ThrowIfNull(dtype);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(reporter);
        var type = dtype.Trim().ToLowerInvariant() switch
        {
            "fp32" or "float32" or "float" => torch.ScalarType.Float32,
            "bf16" or "bfloat16" => torch.ScalarType.BFloat16,
            "fp16" or "float16" or "half" => throw new NotSupportedException(
                $"dtype '{dtype}' is not supported: fp16 training needs loss scaling; use bf16 or fp32"),
            _ => throw new ArgumentException($"dtype: expected one of fp32, bf16; got '{dtype}'", nameof(dtype)),
        };
        if (type == torch.ScalarType.BFloat16 && device.StartsWith("cpu", StringComparison.OrdinalIgnoreCase) && !CpuHasNativeBf16())
            reporter.Warn("dtype bf16 on a CPU without native bf16 support (no avx512_bf16 or amx_bf16 in /proc/cpuinfo): " +
                          "libtorch emulates bf16 matmuls and they run many times slower than fp32 " +
                          "(see bench/Precision). Continuing in bf16 as requested; use dtype fp32 for speed.");
        return type;
    }

    /// <summary>True when the CPU advertises native bf16 arithmetic (x86 avx512_bf16 or amx_bf16; Arm bf16).</summary>
    public static bool CpuHasNativeBf16() => CpuHasNativeBf16(ReadCpuInfo());

    /// <summary>Checks a /proc/cpuinfo text for native bf16 flags.</summary>
    public static bool CpuHasNativeBf16(string cpuInfo)
    {
        ArgumentNullException.ThrowIfNull(cpuInfo);
        foreach (var line in cpuInfo.Split('\n'))
        {
            var colon = line.IndexOf(':');
            if (colon < 0) continue;
            var key = line[..colon].Trim();
            if (key != "flags" && key != "Features") continue;
            var flags = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (flags.Contains("avx512_bf16") || flags.Contains("amx_bf16") || flags.Contains("bf16")) return true;
        }
        return false;
    }

    private static string ReadCpuInfo()
    {
        try
        {
            return File.Exists("/proc/cpuinfo") ? File.ReadAllText("/proc/cpuinfo") : string.Empty;
        }
        catch (IOException)
        {
            return string.Empty;
        }
    }
}

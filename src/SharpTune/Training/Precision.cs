// Training dtype selection. fp32 and bf16 are supported (fp16 is refused, as torchtune does: it needs loss scaling).
// On a CPU without native bf16 instructions (x86 flags avx512_bf16 or amx_bf16) libtorch emulates bf16 matmuls
// through fp32 conversions and they run far slower than fp32 (~56x measured on the development machine;
// bench/Precision measures it here), so we warn through the caller's reporter and continue as asked.
// `dtype: auto` decides per machine, measured: bf16 only where the CPU has native bf16 AND a matmul probe runs bf16
// faster than fp32 by a margin (a CPU with the flags can still be slower in bf16, e.g. a libtorch without the
// kernels); fp32 otherwise. On a GPU auto is bf16, torchtune's default there.
// References: torchtune training/precision.py (get_dtype, verify_bf16_support); Linux /proc/cpuinfo flags.
using System.Diagnostics;
using TorchSharp;
using DeviceType = TorchSharp.DeviceType;

namespace SharpTune.Training;

/// <summary>Parses the <c>dtype</c> config value and checks the hardware supports it well.</summary>
public static class Precision
{
    /// <summary>
    /// Maps <paramref name="dtype"/> (<c>fp32</c>/<c>float32</c>, <c>bf16</c>/<c>bfloat16</c>, <c>auto</c>) to the
    /// training scalar type on <paramref name="device"/>. <c>auto</c> is bf16 on a GPU; on a CPU it is
    /// <see cref="ProbeCpu"/>'s measured choice, or with <paramref name="flagsOnly"/> the CPU flags alone (ranks under
    /// mpirun must agree, and timings differ between them). bf16 on a CPU without native bf16 is allowed with a warning.
    /// </summary>
    /// <param name="dtype">The config value.</param>
    /// <param name="device">The training device.</param>
    /// <param name="info">Receives what auto chose and why.</param>
    /// <param name="warn">Receives the slow-bf16 warning, if any.</param>
    /// <param name="flagsOnly">Decide auto from the CPU flags, without a timing.</param>
    public static torch.ScalarType Resolve(string dtype, torch.Device device, Action<string> info, Action<string> warn, bool flagsOnly = false)
    {
        ArgumentNullException.ThrowIfNull(dtype);
        ArgumentNullException.ThrowIfNull(device);
        var cpu = device.type == DeviceType.CPU;
        if (dtype.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            if (!cpu) return torch.ScalarType.BFloat16;
            if (flagsOnly)
            {
                var native = CpuHasNativeBf16();
                info($"dtype auto -> {(native ? "bf16" : "fp32")}: {(native ? "native bf16" : "no native bf16")} (under mpirun the CPU flags decide, not a timing)");
                return native ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32;
            }
            var probe = ProbeCpu();
            info(probe.ToString());
            return probe.Choice;
        }
        var type = dtype.Trim().ToLowerInvariant() switch
        {
            "fp32" or "float32" or "float" => torch.ScalarType.Float32,
            "bf16" or "bfloat16" => torch.ScalarType.BFloat16,
            "fp16" or "float16" or "half" => throw new NotSupportedException(
                $"dtype '{dtype}' is not supported: fp16 training needs loss scaling; use bf16 or fp32"),
            _ => throw new ArgumentException($"dtype: expected one of fp32, bf16, auto; got '{dtype}'", nameof(dtype)),
        };
        if (type == torch.ScalarType.BFloat16 && cpu && !CpuHasNativeBf16())
            warn("dtype bf16 on a CPU without native bf16 support (no avx512_bf16 or amx_bf16 in /proc/cpuinfo): " +
                 "libtorch emulates bf16 matmuls and they run tens of times slower than fp32 " +
                 "(see bench/Precision). Continuing in bf16 as requested; use dtype fp32 for speed.");
        return type;
    }

    /// <summary>bf16 must beat fp32 by this factor in the probe before auto picks it (the probe's noise on a busy machine is ~10%).</summary>
    public const double AutoBf16MinSpeedup = 1.2;

    private static readonly Lock ProbeGate = new();
    private static DtypeProbe? _cpuProbe;

    /// <summary>
    /// What <c>dtype: auto</c> means on the CPU: native bf16 flags, fp32 and bf16 GEMM rates of a 1024^3 matmul (bf16
    /// measured only where the flags are present, unless <paramref name="measureBf16Always"/>), and the choice.
    /// Measured once per process (about a quarter of a second) and cached.
    /// </summary>
    public static DtypeProbe ProbeCpu(bool measureBf16Always = false)
    {
        lock (ProbeGate)
        {
            if (_cpuProbe is { } cached && (!measureBf16Always || !double.IsNaN(cached.Bf16Gflops))) return cached;
            var native = CpuHasNativeBf16();
            var fp32 = GemmGflops(torch.ScalarType.Float32);
            var bf16 = native || measureBf16Always ? GemmGflops(torch.ScalarType.BFloat16) : double.NaN;
            return _cpuProbe = new DtypeProbe(native, fp32, bf16, ChooseAuto(native, fp32, bf16));
        }
    }

    /// <summary>The <c>dtype: auto</c> rule on a CPU: bf16 when it is native and measured at least <see cref="AutoBf16MinSpeedup"/>x fp32.</summary>
    public static torch.ScalarType ChooseAuto(bool nativeBf16, double fp32Gflops, double bf16Gflops) =>
        nativeBf16 && bf16Gflops >= AutoBf16MinSpeedup * fp32Gflops ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32;

    /// <summary>Median GFLOP/s of a [n, n] x [n, n] matmul in <paramref name="dtype"/> (2 n^3 FLOPs each) after one warm-up.</summary>
    public static double GemmGflops(torch.ScalarType dtype, int n = 1024, int repeats = 5)
    {
        using var scope = torch.NewDisposeScope();
        using var generator = new torch.Generator(0);
        var a = torch.randn(n, n, generator: generator).to(dtype); // [n, n]
        var b = torch.randn(n, n, generator: generator).to(dtype); // [n, n]
        torch.matmul(a, b).Dispose(); // warm-up: packs, thread pool
        var seconds = new double[repeats];
        for (var i = 0; i < repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            torch.matmul(a, b).Dispose();
            seconds[i] = watch.Elapsed.TotalSeconds;
        }
        Array.Sort(seconds);
        return 2.0 * n * n * n / seconds[repeats / 2] / 1e9;
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

/// <summary>The measurement behind <c>dtype: auto</c> on a CPU.</summary>
/// <param name="NativeBf16">avx512_bf16/amx_bf16 (or Arm bf16) in /proc/cpuinfo.</param>
/// <param name="Fp32Gflops">fp32 matmul rate.</param>
/// <param name="Bf16Gflops">bf16 matmul rate (NaN when not measured: no native bf16).</param>
/// <param name="Choice">What auto picks.</param>
public sealed record DtypeProbe(bool NativeBf16, double Fp32Gflops, double Bf16Gflops, torch.ScalarType Choice)
{
    /// <summary>The choice as a config value, <c>bf16</c> or <c>fp32</c>.</summary>
    public string ChoiceName => Choice == torch.ScalarType.BFloat16 ? "bf16" : "fp32";

    /// <summary>One line, e.g. <c>dtype auto -> bf16: native bf16, matmul fp32 70 GFLOP/s, bf16 280 GFLOP/s (4.0x)</c>.</summary>
    public override string ToString() =>
        FormattableString.Invariant($"dtype auto -> {ChoiceName}: {(NativeBf16 ? "native bf16" : "no native bf16 (avx512_bf16/amx_bf16)")}, matmul fp32 {Fp32Gflops:F1} GFLOP/s") +
        (double.IsNaN(Bf16Gflops) ? "" : FormattableString.Invariant($", bf16 {Bf16Gflops:F1} GFLOP/s ({Bf16Gflops / Fp32Gflops:F1}x; bf16 needs {Precision.AutoBf16MinSpeedup}x)"));
}

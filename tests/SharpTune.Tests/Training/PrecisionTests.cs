using SharpTune.Training;
using TorchSharp;

namespace SharpTune.Tests.Training;

public sealed class PrecisionTests
{
    private const string Skylake = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n";
    private const string SapphireRapids = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n";

    [Fact]
    public void CpuHasNativeBf16_Flags_Detected()
    {
        Assert.False(Precision.CpuHasNativeBf16(Skylake));
        Assert.True(Precision.CpuHasNativeBf16(SapphireRapids));
        Assert.True(Precision.CpuHasNativeBf16("Features\t: fp asimd bf16 i8mm\n"));
        Assert.False(Precision.CpuHasNativeBf16("model name\t: avx512_bf16 in a name only\n"));
    }

    [Fact]
    public void Resolve_Bf16OnCpuWithoutNativeSupport_WarnsAndContinues()
    {
        var reporter = new RecordingProgressReporter();
        var type = Precision.Resolve("bf16", "cpu", reporter);
        Assert.Equal(torch.ScalarType.BFloat16, type);
        if (Precision.CpuHasNativeBf16()) Assert.Empty(reporter.Warnings);
        else Assert.Contains("slower than fp32", Assert.Single(reporter.Warnings));
    }

    [Fact]
    public void Resolve_Fp32_NoWarning()
    {
        var reporter = new RecordingProgressReporter();
        Assert.Equal(torch.ScalarType.Float32, Precision.Resolve("fp32", "cpu", reporter));
        Assert.Empty(reporter.Warnings);
    }

    [Fact]
    public void Resolve_Fp16_RefusedWithReason() =>
        Assert.Contains("loss scaling", Assert.Throws<NotSupportedException>(() => Precision.Resolve("fp16", "cpu", NullProgressReporter.Instance)).Message);

    [Fact]
    public void Resolve_Unknown_NamesKeyAndValue() =>
        Assert.Contains("'int8'", Assert.Throws<ArgumentException>(() => Precision.Resolve("int8", "cpu", NullProgressReporter.Instance)).Message);
}

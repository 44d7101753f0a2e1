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
        var warnings = new List<string>();
        var type = Precision.Resolve("bf16", torch.CPU, _ => { }, warnings.Add);
        Assert.Equal(torch.ScalarType.BFloat16, type);
        if (Precision.CpuHasNativeBf16()) Assert.Empty(warnings);
        else Assert.Contains("slower than fp32", Assert.Single(warnings));
    }

    [Fact]
    public void Resolve_Fp32_NoWarning()
    {
        var warnings = new List<string>();
        Assert.Equal(torch.ScalarType.Float32, Precision.Resolve("fp32", torch.CPU, _ => { }, warnings.Add));
        Assert.Empty(warnings);
    }

    [Fact]
    public void Resolve_Fp16_RefusedWithReason() =>
        Assert.Contains("loss scaling", Assert.Throws<NotSupportedException>(() => Precision.Resolve("fp16", torch.CPU, _ => { }, _ => { })).Message);

    [Fact]
    public void Resolve_Unknown_NamesKeyAndValue() =>
        Assert.Contains("'int8'", Assert.Throws<ArgumentException>(() => Precision.Resolve("int8", torch.CPU, _ => { }, _ => { })).Message);

    [Theory]
    [InlineData(false, 100, 400, "fp32")] // emulated bf16 never, whatever a probe says
    [InlineData(true, 100, 400, "bf16")]  // native and 4x
    [InlineData(true, 100, 119, "fp32")]  // native but within the margin: not worth the precision
    [InlineData(true, 100, 50, "fp32")]   // native flags, slow kernels
    [InlineData(true, 100, double.NaN, "fp32")]
    public void ChooseAuto_FlagsAndRates_PicksBf16OnlyWhenNativeAndFaster(bool native, double fp32, double bf16, string expected)
    {
        var choice = Precision.ChooseAuto(native, fp32, bf16);
        Assert.Equal(expected == "bf16" ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32, choice);
    }

    [Fact]
    public void ProbeCpu_OnThisMachine_MeasuresBothRatesAndAppliesTheRule()
    {
        SharpTune.Native.TorchRuntime.EnsureLoaded();
        var probe = Precision.ProbeCpu(measureBf16Always: true);
        Assert.Equal(Precision.CpuHasNativeBf16(), probe.NativeBf16);
        Assert.True(probe.Fp32Gflops > 0 && probe.Bf16Gflops > 0, probe.ToString());
        Assert.Equal(Precision.ChooseAuto(probe.NativeBf16, probe.Fp32Gflops, probe.Bf16Gflops), probe.Choice);
        Assert.StartsWith($"dtype auto -> {probe.ChoiceName}: ", probe.ToString());
        Assert.Same(probe, Precision.ProbeCpu()); // measured once per process
    }
}

// The default thread count under load: the idle cores, never zero, never more than the cores; and the measurement
// sees a busy process beside us (a shell spinning in a loop).
using System.Diagnostics;
using SharpTune.Native;

namespace SharpTune.Tests.Native;

public sealed class CpuLoadTests
{
    [Theory]
    [InlineData(2, 0.0, 2)]
    [InlineData(2, 1.0, 1)]   // another run on one core of two: take the other
    [InlineData(2, 1.9, 1)]   // everything busy: one thread, not zero
    [InlineData(8, 2.4, 6)]
    [InlineData(8, 2.6, 5)]
    [InlineData(4, -0.2, 4)]  // a negative sample (counter skew) is no load
    public void ChooseThreads_OtherLoad_TakesTheIdleCores(int cores, double busy, int expected) =>
        Assert.Equal(expected, CpuLoad.ChooseThreads(cores, busy));

    [Fact]
    public void ChooseThreads_UnknownLoad_AllCores() => Assert.Equal(4, CpuLoad.ChooseThreads(4, null));

    [Fact]
    public void OtherBusyCores_SpinningChildProcess_IsCounted()
    {
        if (!OperatingSystem.IsLinux()) return; // /proc only
        // On a shared machine others may add load, so only the direction is checked: a child process spinning in a
        // loop keeps at least part of a core busy, and the measurement must see it.
        using var child = Process.Start(new ProcessStartInfo("sh", ["-c", "while :; do :; done"]) { UseShellExecute = false })!;
        try
        {
            Thread.Sleep(100);
            var busy = CpuLoad.OtherBusyCores(TimeSpan.FromMilliseconds(400));
            Assert.NotNull(busy);
            Assert.True(busy >= 0.3, $"a spinning child should count as busy: measured {busy:F2} cores");
        }
        finally
        {
            child.Kill();
            child.WaitForExit();
        }
    }
}

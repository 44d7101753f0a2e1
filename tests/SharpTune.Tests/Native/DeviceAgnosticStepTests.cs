// The training step's device-side code (modules and losses) must not copy tensors to the host: on a GPU a .cpu() or
// .to(CPU) in a forward or a loss stalls the stream every step and moves the whole tensor over PCIe. A meta-device run
// cannot check this in libtorch's C++ build (aten::index_select and aten::max have no meta kernels there, checked
// with TorchSharp 0.107 / libtorch 2.10), so this test reads the sources: a host copy added to Modules/ or Losses/
// fails it. Scalar reads for validation and logging (.item) are listed in docs/gpu.md.
namespace SharpTune.Tests.Native;

public sealed class DeviceAgnosticStepTests
{
    private static readonly string[] HostCopies = [".cpu()", ".to(CPU", ".to(torch.CPU", ".to(DeviceType.CPU", ".to(\"cpu\"", ".data<"];

    [Theory]
    [InlineData("src/SharpTune/Modules")]
    [InlineData("src/SharpTune/Losses")]
    public void HotPathSources_HaveNoHostCopies(string folder)
    {
        var offenders = Directory.EnumerateFiles(Path.Combine(SharedData.RepoRoot, folder), "*.cs", SearchOption.AllDirectories)
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (File: Path.GetRelativePath(SharedData.RepoRoot, f), Line: i + 1, Text: line)))
            .Where(l => !l.Text.TrimStart().StartsWith("//", StringComparison.Ordinal))
            .Where(l => HostCopies.Any(h => l.Text.Contains(h, StringComparison.Ordinal)))
            .Select(l => $"{l.File}:{l.Line}: {l.Text.Trim()}")
            .ToList();
        Assert.True(offenders.Count == 0, "host copies on the training hot path:\n" + string.Join("\n", offenders));
    }
}

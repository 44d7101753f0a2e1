// Which libtorch natives package this program was built with (CPU or CUDA, and its version), read from the
// program's .deps.json, where NuGet records every package the build resolved. Used by `--version`, the torch_info
// recipe and the error a `device: cuda` run gets on a CPU build. Reading a file, it needs libtorch not to be loaded.
using System.Text.Json;

namespace SharpTune.Native;

/// <summary>A libtorch natives package (<c>libtorch-cpu-linux-x64</c> 2.10.0, <c>libtorch-cuda-12.8-linux-x64</c> ...).</summary>
public sealed record LibTorchNatives(string Package, string Version)
{
    /// <summary><c>cuda</c>, <c>cpu</c> or <c>unknown</c>, from the package name.</summary>
    public string Kind => Package.Contains("cuda", StringComparison.OrdinalIgnoreCase) ? "cuda"
        : Package.Contains("cpu", StringComparison.OrdinalIgnoreCase) ? "cpu" : "unknown";

    /// <summary>The natives package named in the .deps.json files of <paramref name="directory"/> (default: the program's folder), or null.</summary>
    public static LibTorchNatives? Find(string? directory = null)
    {
        directory ??= AppContext.BaseDirectory;
        if (!Directory.Exists(directory)) return null;
        foreach (var deps in Directory.EnumerateFiles(directory, "*.deps.json"))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(deps));
            if (!doc.RootElement.TryGetProperty("libraries", out var libs)) continue;
            foreach (var lib in libs.EnumerateObject())
            {
                // Keys are "<package>/<version>".
                var slash = lib.Name.IndexOf('/', StringComparison.Ordinal);
                if (slash > 0 && lib.Name.StartsWith("libtorch-", StringComparison.Ordinal))
                    return new LibTorchNatives(lib.Name[..slash], lib.Name[(slash + 1)..]);
            }
        }
        return null;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Package}/{Version}";

    /// <summary>
    /// Why <paramref name="device"/> (a CUDA device) cannot be used, and what to do, given the natives this program
    /// has (<paramref name="natives"/>, from <see cref="Find"/>): CPU natives name the three ways to get CUDA ones
    /// (the SharpTune.Cuda package, the SharpTune.Cli.Cuda tool, the source build's switch); CUDA natives without a GPU
    /// say that no driver is visible.
    /// </summary>
    public static string CudaUnavailable(string device, LibTorchNatives? natives) => natives?.Kind == "cuda"
        ? $"device '{device}': this build has libtorch's CUDA natives ({natives}), but CUDA is not available: no NVIDIA " +
          "GPU or driver is visible to this process (check nvidia-smi), or set device=cpu (docs/gpu.md)"
        : $"device '{device}': this build has libtorch's CPU natives ({natives?.ToString() ?? "libtorch-cpu-linux-x64"}), which " +
          "cannot use a GPU. For CUDA natives (libtorch-cuda-12.8-linux-x64, as TorchSharp-cuda-linux), reference the package " +
          "SharpTune.Cuda instead of SharpTune, install the tool SharpTune.Cli.Cuda instead of SharpTune.Cli, or build from " +
          "source with -p:SharpTuneNatives=cuda (./sharptune: SHARPTUNE_NATIVES=cuda), on a machine with an NVIDIA driver " +
          "(README, 'CUDA'; docs/gpu.md); or set device=cpu";
}

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
}

// What `sharptune --version` prints: this program's version and the git commit it was built from (both from the
// assembly's informational version, "0.1.0+<sha>", which the SDK's Source Link writes from Directory.Build.props'
// Version and the checkout's HEAD), TorchSharp's version, and the libtorch natives package (version and cpu/cuda).
using System.Reflection;
using SharpTune.Native;

namespace SharpTune.Cli;

/// <summary>Version facts of this build.</summary>
internal static class BuildInfo
{
    /// <summary>The version and commit parts of an informational version (<c>"0.1.0+abc"</c> -> 0.1.0, abc).</summary>
    public static (string Version, string Commit) Split(string? informationalVersion)
    {
        if (string.IsNullOrWhiteSpace(informationalVersion)) return ("unknown", "unknown");
        var plus = informationalVersion.IndexOf('+', StringComparison.Ordinal);
        return plus < 0 ? (informationalVersion, "unknown") : (informationalVersion[..plus], informationalVersion[(plus + 1)..]);
    }

    /// <summary>The lines `--version` prints.</summary>
    public static string Text()
    {
        var (version, commit) = Split(InformationalVersion(typeof(BuildInfo).Assembly));
        var torchSharp = Split(InformationalVersion(typeof(TorchSharp.torch).Assembly)).Version;
        var natives = LibTorchNatives.Find();
        return string.Join(Environment.NewLine,
            $"sharptune {version}",
            $"commit: {commit}",
            $"torchsharp: {torchSharp}",
            $"libtorch: {natives?.Version ?? "unknown"} ({natives?.Package ?? "no natives package found"})",
            $"natives: {natives?.Kind ?? "unknown"}");
    }

    private static string? InformationalVersion(Assembly assembly) =>
        assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
}

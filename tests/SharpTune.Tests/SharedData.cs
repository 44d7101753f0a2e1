// Locates the read-only reference data (../shared/data beside the repository) and skips tests when it is absent,
// as it is in a user's clone. SHARPTUNE_SHARED_DATA overrides the location.
namespace SharpTune.Tests;

/// <summary>Paths to the reference data and the repository root.</summary>
public static class SharedData
{
    /// <summary>The repository root (the folder holding SharpTune.slnx).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The shared data folder, or null when it is not there.</summary>
    public static string? Root { get; } = FindShared();

    /// <summary>Full path of <paramref name="relative"/> inside the shared data folder (may not exist).</summary>
    public static string PathOf(string relative) =>
        System.IO.Path.Combine(Root ?? throw new InvalidOperationException("shared data folder is absent"), relative);

    /// <summary>True when <paramref name="relative"/> exists inside the shared data folder.</summary>
    public static bool Has(string relative) =>
        Root is not null && (File.Exists(System.IO.Path.Combine(Root, relative)) || Directory.Exists(System.IO.Path.Combine(Root, relative)));

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "SharpTune.slnx"))) return dir.FullName;
        throw new InvalidOperationException($"cannot find SharpTune.slnx above {AppContext.BaseDirectory}");
    }

    private static string? FindShared()
    {
        var env = Environment.GetEnvironmentVariable("SHARPTUNE_SHARED_DATA");
        if (!string.IsNullOrEmpty(env)) return Directory.Exists(env) ? env : null;
        var candidate = System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared", "data"));
        return Directory.Exists(candidate) ? candidate : null;
    }
}

/// <summary>A fact that is skipped, with a clear message, when a piece of the shared reference data is absent.</summary>
public sealed class SharedDataFactAttribute : FactAttribute
{
    /// <param name="relativePaths">Paths inside ../shared/data the test reads.</param>
    public SharedDataFactAttribute(params string[] relativePaths)
    {
        foreach (var p in relativePaths)
            if (!SharedData.Has(p))
            {
                Skip = $"reference data '{p}' not found (expected ../shared/data beside the repository, or SHARPTUNE_SHARED_DATA)";
                break;
            }
    }
}

/// <summary>A theory variant of <see cref="SharedDataFactAttribute"/>.</summary>
public sealed class SharedDataTheoryAttribute : TheoryAttribute
{
    /// <param name="relativePaths">Paths inside ../shared/data the test reads.</param>
    public SharedDataTheoryAttribute(params string[] relativePaths)
    {
        foreach (var p in relativePaths)
            if (!SharedData.Has(p))
            {
                Skip = $"reference data '{p}' not found (expected ../shared/data beside the repository, or SHARPTUNE_SHARED_DATA)";
                break;
            }
    }
}

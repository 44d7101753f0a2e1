// The renames and deletes of the checkpoint commit path (AtomicFile, RecipeStateStore, HfCheckpointer.Prune,
// CheckpointCommit), in one place, so that a test can stop them at the N-th call and so simulate a kill -9 at every
// point where the output folder changes (tests/.../Recipes/CheckpointKillPointTests.cs). Writes of new files are not
// routed here: they only ever go to hidden temporary names, which no reader looks at, so a kill during a write leaves
// the same visible state as a kill just before the next rename or delete.
namespace SharpTune.Checkpointing;

/// <summary>File-system mutations of the checkpoint commit path, each one an operation a test may stop at.</summary>
internal static class CommitFs
{
    // AsyncLocal, not a plain static: an armed switch affects only the test that armed it, not tests running beside it.
    private static readonly AsyncLocal<KillSwitch?> Armed = new();

    /// <summary>Routes this execution flow's operations through <paramref name="killSwitch"/> until disposed.</summary>
    internal static IDisposable Arm(KillSwitch killSwitch)
    {
        var previous = Armed.Value;
        Armed.Value = killSwitch;
        return new Disarm(previous);
    }

    /// <summary>rename(2) of a folder.</summary>
    public static void MoveDirectory(string from, string to)
    {
        Before("rename", from, to);
        Directory.Move(from, to);
    }

    /// <summary>rename(2) of a file, replacing <paramref name="to"/> when <paramref name="overwrite"/>.</summary>
    public static void MoveFile(string from, string to, bool overwrite)
    {
        Before("rename", from, to);
        File.Move(from, to, overwrite);
    }

    /// <summary>unlink(2).</summary>
    public static void DeleteFile(string path)
    {
        Before("unlink", path, null);
        File.Delete(path);
    }

    /// <summary>
    /// Deletes a folder and everything in it, one unlink per file and one rmdir per folder, deepest first (what
    /// <c>Directory.Delete(path, recursive: true)</c> does), so a kill part-way leaves a partly emptied folder.
    /// </summary>
    public static void DeleteDirectory(string path)
    {
        foreach (var sub in Directory.GetDirectories(path))
        {
            if (new DirectoryInfo(sub).LinkTarget is null) DeleteDirectory(sub);
            else
            {
                Before("unlink", sub, null); // a link to a folder: remove the link, never what it points to
                Directory.Delete(sub, recursive: false);
            }
        }
        foreach (var file in Directory.GetFiles(path)) DeleteFile(file);
        Before("rmdir", path, null);
        Directory.Delete(path, recursive: false);
    }

    private static void Before(string kind, string path, string? to)
    {
        if (Armed.Value is { } killSwitch) killSwitch.Next(kind, path, to);
    }

    private sealed class Disarm(KillSwitch? previous) : IDisposable
    {
        public void Dispose() => Armed.Value = previous;
    }
}

/// <summary>
/// Counts <see cref="CommitFs"/> operations and, from operation number <see cref="KillAt"/> (0-based) on, performs
/// none of them: each throws <see cref="SimulatedKillException"/> instead, so no cleanup code (catch or finally
/// blocks that rename or delete) gets to do what a killed process could not.
/// </summary>
internal sealed class KillSwitch
{
    /// <summary>Index of the first operation not performed; <see cref="int.MaxValue"/> records without killing.</summary>
    public int KillAt { get; init; } = int.MaxValue;

    /// <summary>The operations performed, as "kind path [-> to]".</summary>
    public List<string> Performed { get; } = [];

    /// <summary>True once an operation was refused.</summary>
    public bool Killed { get; private set; }

    internal void Next(string kind, string path, string? to)
    {
        if (Killed || Performed.Count >= KillAt)
        {
            Killed = true;
            throw new SimulatedKillException($"simulated kill before operation {Performed.Count}: {kind} {path}");
        }
        Performed.Add(to is null ? $"{kind} {path}" : $"{kind} {path} -> {to}");
    }
}

/// <summary>Thrown by an armed <see cref="KillSwitch"/>; not an IOException, so no best-effort cleanup swallows it.</summary>
internal sealed class SimulatedKillException(string message) : Exception(message);

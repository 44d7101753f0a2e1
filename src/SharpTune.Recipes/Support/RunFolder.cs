// A run's output folder, owned by one run at a time. Two runs writing one folder mix their checkpoints (epoch_0 of one
// beside epoch_1 and recipe_state of the other, both exiting 0), so a run takes an exclusive lock on
// `output_dir/.sharptune.lock` for its lifetime: an OS file lock (flock(2), which .NET takes for FileShare.None on Linux
// and macOS; LockFileEx on Windows), released by the OS when the process exits or is killed, so a killed run never
// leaves a stale lock. The holder's PID goes in `.sharptune.lock.pid` beside it (the locked file itself cannot be read
// by another .NET process). Under mpirun only rank 0 writes the folder, so only rank 0 takes the lock, and every rank
// waits for it (a second job's rank 0 fails and its abort ends the job before any rank writes).
// Also: the folder path is checked before use (an empty output_dir, or one under a regular file, is a clear error
// naming the key), and sharptune_config.yaml is written last in setup, atomically, so a run refused at setup (a resume
// with a changed config) leaves the saved run's config as it was.
using System.Globalization;
using SharpTune.Config;
using SharpTune.Distributed;

namespace SharpTune.Recipes.Support;

/// <summary>The locked output folder of a run.</summary>
public sealed class RunFolder : IDisposable
{
    /// <summary>The lock file's name inside the output folder.</summary>
    public const string LockFileName = ".sharptune.lock";

    /// <summary>The file beside the lock naming its holder's PID.</summary>
    public const string OwnerFileName = ".sharptune.lock.pid";

    /// <summary>The resolved config written into the folder.</summary>
    public const string ConfigFileName = "sharptune_config.yaml";

    private readonly FileStream? _lock;
    private readonly DistributedContext _dist;

    private RunFolder(string path, FileStream? heldLock, DistributedContext dist)
    {
        Path = path;
        _lock = heldLock;
        _dist = dist;
    }

    /// <summary>The folder (full path).</summary>
    public string Path { get; }

    /// <summary>
    /// Checks the folder named by <paramref name="key"/>, creates it and takes its lock (rank 0 only under MPI; every
    /// rank waits for rank 0).
    /// </summary>
    /// <exception cref="ConfigException">The key is empty, or the path lies under a regular file.</exception>
    /// <exception cref="IOException">Another run holds the folder; names its PID.</exception>
    public static RunFolder Open(SharpTuneConfig config, DistributedContext dist, string key = "output_dir")
    {
        var full = CheckPath(config, key);
        FileStream? held = null;
        if (dist.IsMain)
        {
            Directory.CreateDirectory(full);
            held = Acquire(full, key);
        }
        dist.Barrier();
        return new RunFolder(full, held, dist);
    }

    /// <summary>The full path of the folder at <paramref name="key"/>, refusing an empty value or a path under a file.</summary>
    /// <exception cref="ConfigException">The key is empty, or the path (or a folder above it) is a regular file.</exception>
    public static string CheckPath(SharpTuneConfig config, string key)
    {
        var location = config.Find(key)?.Location ?? new SourceLocation(config.SourcePath ?? "<config>", 0, 0);
        var value = config.Get<string?>(key, null);
        if (string.IsNullOrWhiteSpace(value))
            throw new ConfigException(location, key, $"must name a folder, got {(value is null ? "null" : $"'{value}'")}");
        string full;
        try { full = System.IO.Path.GetFullPath(value); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new ConfigException(location, key, $"'{value}' is not a usable path: {e.Message}");
        }
        for (var p = full; !string.IsNullOrEmpty(p); p = System.IO.Path.GetDirectoryName(p))
        {
            if (Directory.Exists(p)) break;
            if (File.Exists(p))
                throw new ConfigException(location, key,
                    p == full.TrimEnd(System.IO.Path.DirectorySeparatorChar)
                        ? $"'{value}' is a regular file, not a folder"
                        : $"'{value}' cannot be created: '{p}' is a regular file, not a folder");
        }
        return full;
    }

    /// <summary>Writes the resolved config as <c>sharptune_config.yaml</c> (rank 0, atomically); call it after every setup check.</summary>
    public void SaveConfig(SharpTuneConfig config) => _dist.OnMain(() => config.Save(System.IO.Path.Combine(Path, ConfigFileName)));

    /// <summary>Releases the lock (the OS also releases it when the process ends).</summary>
    public void Dispose()
    {
        if (_lock is null) return;
        try { File.Delete(System.IO.Path.Combine(Path, OwnerFileName)); }
        catch (IOException) { } // the owner file only informs; the lock is what counts
        catch (UnauthorizedAccessException) { }
        _lock.Dispose(); // the lock file stays: deleting it would let two later runs lock two different files
    }

    private static FileStream Acquire(string folder, string key)
    {
        var lockPath = System.IO.Path.Combine(folder, LockFileName);
        var ownerPath = System.IO.Path.Combine(folder, OwnerFileName);
        FileStream held;
        try { held = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException e) when (File.Exists(lockPath) && e is not FileNotFoundException and not DirectoryNotFoundException)
        {
            string owner;
            try { owner = $"process {File.ReadAllText(ownerPath).Trim()}"; }
            catch (Exception x) when (x is IOException or UnauthorizedAccessException) { owner = "another process"; }
            throw new IOException(
                $"{key} '{folder}' is in use by another run ({owner} holds {lockPath}): two runs writing one folder would " +
                "mix their checkpoints. Wait for that run to end, or choose another output_dir", e);
        }
        try
        {
            // Written in place, not through the checkpoint commit path: it only informs a refused second run, and a torn
            // write (a kill mid-write) costs nothing but a garbled PID in that message.
            File.WriteAllText(ownerPath, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        }
        catch
        {
            held.Dispose(); // a run that fails here must not keep the folder locked for the rest of the process
            throw;
        }
        return held;
    }
}

// Crash-safe file and folder replacement: write beside the target under a temporary name, flush to disk, then
// rename over the target. rename(2) within one folder is atomic on POSIX file systems, so a reader sees either the
// old file or the complete new one, never a prefix.
namespace SharpTune.Checkpointing;

/// <summary>Temp-file-then-rename helpers.</summary>
public static class AtomicFile
{
    /// <summary>
    /// Creates <paramref name="path"/> by running <paramref name="write"/> on a temporary file in the same folder,
    /// flushing it to disk and renaming it over <paramref name="path"/>. On any failure the temporary file is deleted
    /// and an existing <paramref name="path"/> is left untouched.
    /// </summary>
    public static void Write(string path, Action<FileStream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var temp = Path.Combine(dir, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            CommitFs.MoveFile(temp, full, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/> atomically.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        Write(path, fs => fs.Write(copy));
    }

    /// <summary>Writes UTF-8 <paramref name="text"/> (no BOM) to <paramref name="path"/> atomically.</summary>
    public static void WriteAllText(string path, string text) =>
        WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(text));

    /// <summary>
    /// Builds a folder by running <paramref name="fill"/> on a temporary sibling folder, then renames it to
    /// <paramref name="folder"/>. An existing <paramref name="folder"/> is replaced only after the new one is complete
    /// (it is renamed to the hidden <c>.{name}.trash-{guid}</c>, the new one renamed in, and the trash deleted; a kill
    /// between the two renames leaves no <paramref name="folder"/>, so never replace a folder something committed
    /// still names). On failure nothing visible changes.
    /// </summary>
    public static void WriteFolder(string folder, Action<string> fill)
    {
        var full = Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar);
        var parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        var name = Path.GetFileName(full);
        var temp = Path.Combine(parent, $".{name}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            fill(temp);
            if (Directory.Exists(full))
            {
                var trash = Path.Combine(parent, $".{name}.trash-{Guid.NewGuid():N}");
                CommitFs.MoveDirectory(full, trash);
                try
                {
                    CommitFs.MoveDirectory(temp, full);
                }
                catch
                {
                    CommitFs.MoveDirectory(trash, full); // put the previous checkpoint back
                    throw;
                }
                TryDeleteFolder(trash);
            }
            else
            {
                CommitFs.MoveDirectory(temp, full);
            }
        }
        catch
        {
            TryDeleteFolder(temp);
            throw;
        }
    }

    internal static void TryDelete(string path)
    {
        try
        {
            if (File.Exists(path)) CommitFs.DeleteFile(path);
        }
        catch (IOException)
        {
            // Best effort: the original exception matters more than a leftover temp file.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    internal static void TryDeleteFolder(string path)
    {
        try
        {
            if (Directory.Exists(path)) CommitFs.DeleteDirectory(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

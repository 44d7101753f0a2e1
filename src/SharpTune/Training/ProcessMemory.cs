// Process memory figures for the `peak_memory` metric on CPU and for the flat-memory checks: resident set size
// (VmRSS) and its high-water mark (VmHWM) from /proc/self/status (Linux; proc(5)). Writing "5" to
// /proc/self/clear_refs resets the high-water mark so a peak can be measured per interval.
using System.Globalization;

namespace SharpTune.Training;

/// <summary>Resident memory of this process.</summary>
/// <param name="RssBytes">Current resident set size.</param>
/// <param name="PeakRssBytes">Highest resident set size since start (or since the last reset).</param>
public readonly record struct MemorySnapshot(long RssBytes, long PeakRssBytes)
{
    /// <summary>Bytes in a GiB.</summary>
    public const double GiB = 1024.0 * 1024.0 * 1024.0;
}

/// <summary>Reads the process's resident memory from /proc/self/status.</summary>
public static class ProcessMemory
{
    /// <summary>Current and peak RSS. On systems without /proc, falls back to the runtime's working set for both.</summary>
    public static MemorySnapshot Read()
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status))
        {
            using var p = System.Diagnostics.Process.GetCurrentProcess();
            return new MemorySnapshot(p.WorkingSet64, p.PeakWorkingSet64);
        }
        return Parse(File.ReadAllText(status));
    }

    /// <summary>Parses the VmRSS and VmHWM lines (values in kB) of a /proc/[pid]/status text.</summary>
    public static MemorySnapshot Parse(string statusText)
    {
        long? rss = null, hwm = null;
        foreach (var line in statusText.Split('\n'))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = KiloBytes(line);
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = KiloBytes(line);
        }
        if (rss is null || hwm is null)
            throw new InvalidDataException("/proc/self/status: expected 'VmRSS:' and 'VmHWM:' lines");
        return new MemorySnapshot(rss.Value * 1024, hwm.Value * 1024);
    }

    /// <summary>Resets the peak (VmHWM) to the current RSS; returns false where the kernel does not allow it.</summary>
    public static bool TryResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static long KiloBytes(string line)
    {
        var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length < 2 || !long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var kb))
            throw new InvalidDataException($"/proc/self/status: cannot read a kB value from '{line.Trim()}'");
        return kb;
    }
}

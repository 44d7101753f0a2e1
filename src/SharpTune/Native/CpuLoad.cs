// How busy the machine is with work other than this process, for the default thread count. libtorch's default (one
// thread per core) collapses under oversubscription: two runs on two cores each spinning two OpenMP threads ran a
// KD student 30-50x slower than with one thread each (docs/performance.md). So, unless the config or the environment
// says otherwise, a run takes the cores that were idle when it started: /proc/stat's busy time of the whole machine
// over a short sample, minus this process's own CPU time (/proc/self/stat) over the same interval (proc(5)).
using System.Diagnostics;
using System.Globalization;

namespace SharpTune.Native;

/// <summary>Measures the CPU load of other processes and picks a thread count that leaves it room.</summary>
public static class CpuLoad
{
    /// <summary>
    /// Cores kept busy by other processes over <paramref name="sample"/> (e.g. 1.0 = one core's worth), or null where
    /// /proc cannot be read (not Linux).
    /// </summary>
    public static double? OtherBusyCores(TimeSpan sample)
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            var (busy0, total0) = MachineJiffies();
            var self0 = SelfJiffies();
            var watch = Stopwatch.StartNew();
            Thread.Sleep(sample);
            var (busy1, total1) = MachineJiffies();
            var self1 = SelfJiffies();
            var cores = Math.Max(1, CoresInStat());
            var totalDelta = total1 - total0;
            if (totalDelta <= 0) return 0;
            // /proc/stat counts every core: total jiffies over the interval are about cores x elapsed.
            var otherBusyFraction = Math.Max(0, (busy1 - busy0) - (self1 - self0)) / (double)totalDelta;
            return otherBusyFraction * cores;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    /// <summary>
    /// Threads for a run on <paramref name="cores"/> usable cores when <paramref name="otherBusyCores"/> are busy with
    /// other work: the idle cores, rounded to the nearest core, at least one.
    /// </summary>
    public static int ChooseThreads(int cores, double? otherBusyCores)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(cores, 1);
        var busy = otherBusyCores is { } b && double.IsFinite(b) ? (int)Math.Round(Math.Max(0, b), MidpointRounding.AwayFromZero) : 0;
        return Math.Clamp(cores - busy, 1, cores);
    }

    // "cpu  user nice system idle iowait irq softirq steal ...": busy is everything but idle and iowait.
    private static (long Busy, long Total) MachineJiffies()
    {
        using var reader = new StreamReader("/proc/stat");
        var line = reader.ReadLine() ?? throw new FormatException("/proc/stat is empty");
        var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (f[0] != "cpu") throw new FormatException($"/proc/stat starts with '{f[0]}', expected 'cpu'");
        long total = 0;
        for (var i = 1; i < Math.Min(f.Length, 9); i++) total += long.Parse(f[i], CultureInfo.InvariantCulture); // guest time is inside user
        var idle = long.Parse(f[4], CultureInfo.InvariantCulture) + (f.Length > 5 ? long.Parse(f[5], CultureInfo.InvariantCulture) : 0);
        return (total - idle, total);
    }

    private static int CoresInStat() => File.ReadLines("/proc/stat").Count(l => l.StartsWith("cpu", StringComparison.Ordinal) && l.Length > 3 && char.IsAsciiDigit(l[3]));

    // Fields 14 and 15 of /proc/self/stat (utime, stime), counted after the parenthesised command name.
    private static long SelfJiffies()
    {
        var stat = File.ReadAllText("/proc/self/stat");
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture);
    }
}

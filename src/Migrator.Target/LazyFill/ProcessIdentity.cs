using System.Globalization;

namespace Migration.Target.LazyFill;

/// <summary>
/// A process named by pid and start time (field 22 of /proc/PID/stat, clock ticks after boot): a pid alone may have
/// been reused by the time a state file is read again.
/// </summary>
internal static class ProcessIdentity
{
    /// <summary>The start time of <paramref name="pid"/>, or 0 when it does not exist (or is a zombie being reaped).</summary>
    public static ulong StartTime(int pid)
    {
        if (pid <= 0)
        {
            return 0;
        }

        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return 0; // gone
        }

        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields count from the last ')'.
        int close = stat.LastIndexOf(')');
        if (close < 0)
        {
            return 0;
        }

        var fields = stat[(close + 2)..].Split(' ');
        // fields[0] is field 3 (state); start time is field 22.
        return fields.Length > 19 && ulong.TryParse(fields[19], NumberStyles.None, CultureInfo.InvariantCulture, out var start) ? start : 0;
    }

    /// <summary>Whether <paramref name="pid"/> is still the process that started at <paramref name="start"/> and has not exited.</summary>
    public static bool IsSame(int pid, ulong start) => start != 0 && StartTime(pid) == start && Engine.Processes.ProcessTree.IsAlive(pid);
}

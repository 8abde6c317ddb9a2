using System.Globalization;

namespace Migration.Engine.Processes;

/// <summary>One end of a pipe a task of a tree holds, whose other end no task of the tree holds.</summary>
public sealed record OutsidePipe(int Pid, int Fd, ulong Inode, bool Writes)
{
    /// <summary>What happens to it after a migration: CRIU restores the pipe, but nobody is at its other end there.</summary>
    public override string ToString() => Writes
        ? $"pid {Pid} fd {Fd} writes to pipe {Inode}, which no process of the tree reads: after the migration its writes fail (EPIPE)"
        : $"pid {Pid} fd {Fd} reads pipe {Inode}, which no process of the tree writes: after the migration it reads end-of-file";
}

/// <summary>
/// Finds the pipes that join a tree to a process outside it (typically stdout or stderr captured by whoever started
/// the tree): CRIU carries them, but their other end stays behind, so a server that logs to one fails after the move.
/// From <c>/proc/PID/fd</c> ("pipe:[INODE]") and <c>/proc/PID/fdinfo</c> (its access mode).
/// </summary>
public static class TreePipes
{
    public static IReadOnlyList<OutsidePipe> Outside(IReadOnlyList<int> pids)
    {
        var ends = new List<OutsidePipe>();
        foreach (int pid in pids)
        {
            string[] entries;
            try
            {
                entries = Directory.GetFileSystemEntries($"/proc/{pid}/fd");
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                continue; // the task is gone
            }

            foreach (var entry in entries)
            {
                var target = new FileInfo(entry).LinkTarget;
                if (target is null || !target.StartsWith("pipe:[", StringComparison.Ordinal) || !target.EndsWith(']')
                    || !ulong.TryParse(target.AsSpan(6, target.Length - 7), NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode)
                    || !int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int fd)
                    || AccessMode(pid, fd) is not { } mode)
                {
                    continue;
                }

                ends.Add(new OutsidePipe(pid, fd, inode, Writes: mode != 0));
            }
        }

        // A pipe whose both directions are held inside the tree moves whole.
        var whole = ends.GroupBy(e => e.Inode).Where(g => g.Any(e => e.Writes) && g.Any(e => !e.Writes)).Select(g => g.Key).ToHashSet();
        return ends.Where(e => !whole.Contains(e.Inode)).ToArray();
    }

    /// <summary>O_ACCMODE of a descriptor from fdinfo's "flags:\t0100001" (octal): 0 read, 1 write, 2 both; null if gone.</summary>
    internal static int? AccessMode(int pid, int fd)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/fdinfo/{fd}"))
            {
                if (line.StartsWith("flags:", StringComparison.Ordinal))
                {
                    return ParseAccessMode(line);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Closed meanwhile.
        }

        return null;
    }

    internal static int? ParseAccessMode(string flagsLine)
    {
        var octal = flagsLine.AsSpan(6).Trim();
        if (octal.IsEmpty)
        {
            return null;
        }

        int flags = 0;
        foreach (char c in octal)
        {
            if (c is < '0' or > '7')
            {
                return null;
            }

            flags = (flags << 3) | (c - '0');
        }

        return flags & 3;
    }
}

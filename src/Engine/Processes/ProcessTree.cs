using System.Globalization;
using System.Runtime.InteropServices;
using Migration.Engine.Native;

namespace Migration.Engine.Processes;

/// <summary>Reads a process tree from /proc and signals it.</summary>
public static class ProcessTree
{
    /// <summary>A tree deeper or wider than this is refused rather than walked forever.</summary>
    public const int MaxTasks = 65536;

    public static bool Exists(int pid) => pid > 0 && Directory.Exists($"/proc/{pid}");

    /// <summary>State letter from /proc/PID/stat (R, S, D, T, t, Z, X), or null when gone.</summary>
    public static char? State(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length ? stat[close + 2] : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Is the process alive and not a zombie?</summary>
    public static bool IsAlive(int pid) => State(pid) is { } s && s != 'Z' && s != 'X';

    public static string? Command(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>The pids of the tree rooted at <paramref name="root"/> (root first), from each thread's children list.</summary>
    public static IReadOnlyList<int> Enumerate(int root)
    {
        var result = new List<int>();
        var queue = new Queue<int>();
        queue.Enqueue(root);
        var seen = new HashSet<int>();
        while (queue.Count > 0)
        {
            int pid = queue.Dequeue();
            if (!seen.Add(pid) || !Exists(pid))
            {
                continue;
            }

            result.Add(pid);
            if (result.Count > MaxTasks)
            {
                throw new InvalidOperationException($"process tree of {root} has more than {MaxTasks} tasks");
            }

            foreach (var child in Children(pid))
            {
                queue.Enqueue(child);
            }
        }

        return result;
    }

    /// <summary>Resident memory of the tree in bytes (sum of VmRSS; shared pages counted per process).</summary>
    public static ulong ResidentBytes(int root)
    {
        ulong total = 0;
        foreach (var pid in Enumerate(root))
        {
            total += StatusKiB(pid, "VmRSS") * 1024;
        }

        return total;
    }

    /// <summary>
    /// Each process of the tree with its resident private anonymous memory (RssAnon: what CRIU dumps into the task's
    /// own pagemap), named by its pid in its innermost pid namespace as CRIU names it; largest first, at most
    /// <paramref name="max"/>, none without such memory. A process that exits meanwhile is left out.
    /// </summary>
    public static IReadOnlyList<TaskMemory> TaskMemory(int root, int max)
    {
        var tasks = new List<TaskMemory>();
        foreach (var pid in Enumerate(root))
        {
            ulong bytes = StatusKiB(pid, "RssAnon") * 1024;
            if (bytes == 0)
            {
                continue;
            }

            try
            {
                tasks.Add(new TaskMemory(ProcessMemory.VirtualPid(pid), bytes));
            }
            catch (IOException)
            {
                // Exited while we looked: nothing of it will be dumped.
            }
        }

        tasks.Sort((a, b) => b.Bytes.CompareTo(a.Bytes));
        return tasks.Count > max ? tasks.GetRange(0, max) : tasks;
    }

    /// <summary>SIGKILL to each of <paramref name="pids"/>; see <see cref="SignalAll"/>.</summary>
    public static int KillAll(IEnumerable<int> pids) => SignalAll(pids, Libc.SIGKILL);

    /// <summary>SIGCONT to each of <paramref name="pids"/>; see <see cref="SignalAll"/>.</summary>
    public static int ContinueAll(IEnumerable<int> pids) => SignalAll(pids, Libc.SIGCONT);

    /// <summary>Sends <paramref name="signal"/> to every process of the tree; returns how many got it.</summary>
    public static int SignalAll(IEnumerable<int> pids, int signal)
    {
        int n = 0;
        foreach (var pid in pids)
        {
            if (Libc.kill(pid, signal) == 0)
            {
                n++;
            }
            else if (Marshal.GetLastPInvokeError() != Libc.ESRCH)
            {
                throw new IOException($"kill({pid}, {signal}) failed: {Libc.Describe(Marshal.GetLastPInvokeError())}");
            }
        }

        return n;
    }

    private static IEnumerable<int> Children(int pid)
    {
        string[] tasks;
        try
        {
            tasks = Directory.GetDirectories($"/proc/{pid}/task");
        }
        catch (DirectoryNotFoundException)
        {
            yield break;
        }

        foreach (var task in tasks)
        {
            string text;
            try
            {
                text = File.ReadAllText(Path.Combine(task, "children"));
            }
            catch (IOException)
            {
                continue;
            }

            foreach (var part in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                if (int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var child))
                {
                    yield return child;
                }
            }
        }
    }

    private static ulong StatusKiB(int pid, string field) => ProcFields.KiB($"/proc/{pid}/status", field);
}

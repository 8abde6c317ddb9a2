using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using Migration.Engine.Native;

namespace Migration.Engine.Processes;

/// <summary>Reads another process's memory (process_vm_readv) and which of its pages are resident (/proc/PID/pagemap).</summary>
public static unsafe partial class ProcessMemory
{
    private const int PageSize = 4096;

    /// <summary>pagemap bits (Documentation/admin-guide/mm/pagemap.rst): 63 present, 62 swapped.</summary>
    private const ulong PagePresent = 1UL << 63;
    private const ulong PageSwapped = 1UL << 62;

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint process_vm_readv(int pid, IoVec* local, nuint liovcnt, IoVec* remote, nuint riovcnt, nuint flags);

    /// <summary>
    /// Copies memory of <paramref name="pid"/> at <paramref name="address"/> into <paramref name="destination"/>.
    /// Returns the bytes read: fewer than asked when the range runs into an unmapped page (it stops there).
    /// </summary>
    public static int Read(int pid, ulong address, Span<byte> destination)
    {
        fixed (byte* p = destination)
        {
            var local = new IoVec { Base = p, Length = (nuint)destination.Length };
            var remote = new IoVec { Base = (void*)address, Length = (nuint)destination.Length };
            nint n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
            if (n >= 0)
            {
                return (int)n;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno == 14) // EFAULT: the first page is not mapped (any more)
            {
                return 0;
            }

            throw new IOException($"process_vm_readv({pid}, 0x{address:x}, {destination.Length}) failed: {Libc.Describe(errno)}");
        }
    }

    /// <summary>Runs of resident (present or swapped) pages of <paramref name="pid"/> within [start, end).</summary>
    public static List<(ulong Start, ulong Pages)> ResidentRanges(int pid, ulong start, ulong end)
    {
        var result = new List<(ulong, ulong)>();
        using var pagemap = new FileStream($"/proc/{pid}/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 0);
        var buffer = new byte[8 * 4096];
        ulong runStart = 0, runPages = 0;
        for (ulong page = start / PageSize; page < end / PageSize;)
        {
            int want = (int)Math.Min((ulong)(buffer.Length / 8), end / PageSize - page);
            int got = RandomAccess.Read(pagemap.SafeFileHandle, buffer.AsSpan(0, want * 8), (long)(page * 8));
            if (got <= 0)
            {
                break;
            }

            for (int i = 0; i < got / 8; i++, page++)
            {
                ulong e = BinaryPrimitives.ReadUInt64LittleEndian(buffer.AsSpan(i * 8));
                if ((e & (PagePresent | PageSwapped)) != 0)
                {
                    if (runPages > 0 && runStart + runPages * PageSize == page * PageSize)
                    {
                        runPages++;
                    }
                    else
                    {
                        if (runPages > 0)
                        {
                            result.Add((runStart, runPages));
                        }

                        runStart = page * PageSize;
                        runPages = 1;
                    }
                }
            }
        }

        if (runPages > 0)
        {
            result.Add((runStart, runPages));
        }

        return result;
    }

    /// <summary>The pid of <paramref name="pid"/> in its own (innermost) pid namespace: what CRIU names its images by.</summary>
    /// <summary>
    /// [arg_start, env_end) of a task: its command line and environment (/proc/PID/stat fields 48 to 51), or null when
    /// the task is gone or the kernel hides them.
    /// </summary>
    public static (ulong Start, ulong End)? ArgsAndEnvironment(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // Fields after the command (which may hold spaces and parentheses) start with field 3, the state.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        const int argStart = 48 - 3, envEnd = 51 - 3;
        if (fields.Length <= envEnd
            || !ulong.TryParse(fields[argStart], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong start)
            || !ulong.TryParse(fields[envEnd], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong end)
            || start == 0 || end <= start)
        {
            return null;
        }

        return (start, end);
    }

    public static int VirtualPid(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("NSpid:", StringComparison.Ordinal))
            {
                var last = line[6..].Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries)[^1];
                return int.Parse(last, NumberStyles.None, CultureInfo.InvariantCulture);
            }
        }

        return pid;
    }
}

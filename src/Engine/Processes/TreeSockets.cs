using System.Globalization;
using System.Net;

namespace Migration.Engine.Processes;

/// <summary>The protocol family of a socket a tree holds, as far as /proc tells it.</summary>
public enum SocketFamily
{
    Tcp,
    Udp,
    Unix,
    Packet,
    Raw,
    Netlink,

    /// <summary>A socket /proc's tables do not list (another family, or gone meanwhile).</summary>
    Other,
}

/// <summary>
/// One socket descriptor of a task: its family, and for TCP its state and both ends. <paramref name="Peer"/> is the
/// pid inside the tree that holds the other end of a local TCP connection, or null.
/// </summary>
public sealed record TreeSocket(int Pid, int Fd, ulong Inode, SocketFamily Family, string State, IPEndPoint? Local, IPEndPoint? Remote)
{
    public int? Peer { get; init; }

    /// <summary>For a connected unix socket, the inode of its other end (from sock_diag, through <c>ss</c>); 0 if unknown or none.</summary>
    public ulong PeerInode { get; init; }

    /// <summary>A connected unix socket whose other end no task of the tree holds: CRIU dumps it only with --ext-unix-sk.</summary>
    public bool HasOutsideUnixPeer { get; init; }

    /// <summary>A TCP socket that is neither listening nor closed: CRIU dumps it only in repair mode (--tcp-established).</summary>
    public bool IsConnectedTcp => Family == SocketFamily.Tcp && State is not ("LISTEN" or "CLOSE");

    public override string ToString() => Family == SocketFamily.Tcp
        ? $"pid {Pid} fd {Fd}: tcp {State.ToLowerInvariant()} {Local}{(IsConnectedTcp ? $" -> {Remote}" : "")}"
        : HasOutsideUnixPeer ? $"pid {Pid} fd {Fd}: unix connected to socket {PeerInode} outside the tree"
        : $"pid {Pid} fd {Fd}: {Family.ToString().ToLowerInvariant()}";
}

/// <summary>
/// Lists the sockets a process tree holds, from <c>/proc/PID/fd</c> and the tables of each task's network namespace
/// (<c>/proc/PID/net/tcp</c>, <c>tcp6</c>, <c>udp</c>, <c>udp6</c>, <c>unix</c>, <c>packet</c>, <c>raw</c>,
/// <c>raw6</c>, <c>netlink</c>), so that a preflight can say, before anything is frozen, what the dump would meet.
/// </summary>
public static class TreeSockets
{
    /// <summary>/proc/net/tcp's "st" column (include/net/tcp_states.h).</summary>
    private static readonly string[] TcpStates =
        ["?", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"];

    public static IReadOnlyList<TreeSocket> List(IReadOnlyList<int> pids)
    {
        // One table set per network namespace (tasks of a tree may sit in several).
        var tables = new Dictionary<string, Dictionary<ulong, TreeSocket>>(StringComparer.Ordinal);
        var found = new List<TreeSocket>();
        foreach (int pid in pids)
        {
            string ns;
            try
            {
                ns = new FileInfo($"/proc/{pid}/ns/net").LinkTarget ?? "";
            }
            catch (IOException)
            {
                continue; // the task is gone: it holds nothing
            }
            catch (UnauthorizedAccessException)
            {
                continue;
            }

            if (!tables.TryGetValue(ns, out var table))
            {
                table = ReadTables(pid);
                tables[ns] = table;
            }

            foreach (var (fd, inode) in SocketFds(pid))
            {
                found.Add(table.TryGetValue(inode, out var known)
                    ? known with { Pid = pid, Fd = fd }
                    : new TreeSocket(pid, fd, inode, SocketFamily.Other, "", null, null));
            }
        }

        // A local connection whose other end the tree holds too moves with it; one whose other end stays is named.
        var byEnds = found.Where(s => s.IsConnectedTcp).ToLookup(s => (s.Local!.ToString(), s.Remote!.ToString()));
        var held = found.Select(s => s.Inode).ToHashSet();
        return found.Select(s => s.IsConnectedTcp && byEnds[(s.Remote!.ToString(), s.Local!.ToString())].FirstOrDefault() is { } other
            ? s with { Peer = other.Pid }
            : s.Family == SocketFamily.Unix && s.PeerInode != 0 && !held.Contains(s.PeerInode) ? s with { HasOutsideUnixPeer = true } : s).ToArray();
    }

    /// <summary>The socket descriptors of one task: (fd, inode) from the "socket:[INODE]" links in /proc/PID/fd.</summary>
    private static IEnumerable<(int Fd, ulong Inode)> SocketFds(int pid)
    {
        string[] entries;
        try
        {
            entries = Directory.GetFileSystemEntries($"/proc/{pid}/fd");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            yield break; // the task is gone
        }

        foreach (var entry in entries)
        {
            string? target;
            try
            {
                target = new FileInfo(entry).LinkTarget;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                continue; // closed meanwhile
            }

            if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal) && target.EndsWith(']')
                && ulong.TryParse(target.AsSpan(8, target.Length - 9), NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode)
                && int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
            {
                yield return (fd, inode);
            }
        }
    }

    private static Dictionary<ulong, TreeSocket> ReadTables(int pid)
    {
        var table = new Dictionary<ulong, TreeSocket>();
        foreach (var (file, family) in new[]
        {
            ("tcp", SocketFamily.Tcp), ("tcp6", SocketFamily.Tcp), ("udp", SocketFamily.Udp), ("udp6", SocketFamily.Udp),
            ("raw", SocketFamily.Raw), ("raw6", SocketFamily.Raw),
        })
        {
            foreach (var line in ReadLines($"/proc/{pid}/net/{file}").Skip(1))
            {
                if (TryParseInetLine(line, family) is { } s)
                {
                    table.TryAdd(s.Inode, s);
                }
            }
        }

        // unix: "Num RefCount Protocol Flags Type St Inode Path"; packet: "sk RefCnt Type Proto Iface R Rmem User Inode";
        // netlink: "sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode".
        foreach (var (file, family, column) in new[] { ("unix", SocketFamily.Unix, 6), ("packet", SocketFamily.Packet, 8), ("netlink", SocketFamily.Netlink, 9) })
        {
            foreach (var line in ReadLines($"/proc/{pid}/net/{file}").Skip(1))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length > column && ulong.TryParse(f[column], NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode))
                {
                    table.TryAdd(inode, new TreeSocket(pid, -1, inode, family, "", null, null));
                }
            }
        }

        foreach (var (inode, peer) in UnixPeers(pid))
        {
            if (table.TryGetValue(inode, out var unix) && unix.Family == SocketFamily.Unix)
            {
                table[inode] = unix with { PeerInode = peer };
            }
        }

        return table;
    }

    /// <summary>
    /// The other end of each connected unix socket in <paramref name="pid"/>'s network namespace: /proc/net/unix does not
    /// say it, sock_diag does; iproute2's <c>ss -xanH</c> prints it as the last column ("u_str ESTAB 0 0 * 375206 * 375207").
    /// Nothing when ss is missing or fails: the check is then CRIU's own, at the dump.
    /// </summary>
    private static IEnumerable<(ulong Inode, ulong Peer)> UnixPeers(int pid)
    {
        string output;
        try
        {
            var start = new System.Diagnostics.ProcessStartInfo("nsenter", [$"--net=/proc/{pid}/ns/net", "ss", "-xanH"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var ss = System.Diagnostics.Process.Start(start);
            if (ss is null)
            {
                return [];
            }

            var read = ss.StandardOutput.ReadToEndAsync();
            if (!ss.WaitForExit(5000))
            {
                ss.Kill();
                return [];
            }

            output = read.GetAwaiter().GetResult();
            if (ss.ExitCode != 0)
            {
                return [];
            }
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return [];
        }

        return ParseUnixPeers(output);
    }

    internal static IEnumerable<(ulong Inode, ulong Peer)> ParseUnixPeers(string ssOutput)
    {
        foreach (var line in ssOutput.Split('\n'))
        {
            // From the end: a local path may hold spaces; "... LOCAL-INODE PEER-ADDRESS PEER-INODE".
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 6 && ulong.TryParse(f[^1], NumberStyles.None, CultureInfo.InvariantCulture, out ulong peer) && peer != 0
                && ulong.TryParse(f[^3], NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode))
            {
                yield return (inode, peer);
            }
        }
    }

    private static IEnumerable<string> ReadLines(string path)
    {
        try
        {
            return File.ReadAllLines(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return []; // a table this kernel does not have (raw6 without IPv6)
        }
    }

    /// <summary>
    /// One line of /proc/net/{tcp,tcp6,udp,udp6,raw,raw6}:
    /// "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...".
    /// </summary>
    internal static TreeSocket? TryParseInetLine(string line, SocketFamily family)
    {
        var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (f.Length < 10 || !TryParseEndpoint(f[1], out var local) || !TryParseEndpoint(f[2], out var remote)
            || !int.TryParse(f[3], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int st)
            || !ulong.TryParse(f[9], NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode))
        {
            return null;
        }

        string state = family == SocketFamily.Tcp && st > 0 && st < TcpStates.Length ? TcpStates[st] : st.ToString("X2", CultureInfo.InvariantCulture);
        return new TreeSocket(0, -1, inode, family, state, local, remote);
    }

    /// <summary>
    /// "0100007F:1F90" (IPv4) or 32 hex digits (IPv6), each 32-bit word in host (little-endian) order, then the port as
    /// the kernel prints it (4 hex digits). IPv4-mapped IPv6 comes back as IPv4.
    /// </summary>
    internal static bool TryParseEndpoint(string text, out IPEndPoint endpoint)
    {
        endpoint = null!;
        int colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon is not (8 or 32) || text.Length - colon - 1 != 4
            || !ushort.TryParse(text.AsSpan(colon + 1), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ushort port))
        {
            return false;
        }

        var bytes = new byte[colon / 2];
        for (int word = 0; word < colon / 8; word++)
        {
            if (!uint.TryParse(text.AsSpan(word * 8, 8), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint v))
            {
                return false;
            }

            // The kernel prints each word as a host-order integer: on little-endian machines the bytes come reversed.
            if (!BitConverter.IsLittleEndian)
            {
                v = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);
            }

            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(word * 4), v);
        }

        var address = new IPAddress(bytes);
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        endpoint = new IPEndPoint(address, port);
        return true;
    }
}

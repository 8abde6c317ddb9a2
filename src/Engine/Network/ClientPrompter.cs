using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Migration.Engine.Native;

namespace Migration.Engine.Network;

/// <summary>A restored TCP connection on a service address, and the next sequence number it expects from its client.</summary>
public sealed record RestoredConnection(IPEndPoint Local, IPEndPoint Remote, uint ClientNext);

/// <summary>
/// Makes the clients of a moved service retransmit at once instead of when their backed-off timer says. While the
/// tree is frozen a client's segments are dropped (CRIU's lock on the source, <see cref="AddressLock"/> here), and
/// each retransmission timeout doubles the next (200 ms, 400 ms, 800 ms ...): after the restore it may wait a whole
/// one before it retransmits. A duplicate ACK or a window update does not help: in loss recovery a Linux sender
/// retransmits only on its timer (or on SACKs of data sent after the hole, which a client that waits for its answer
/// never sends). What does is RFC 6069 (TCP-LD): an ICMP "host unreachable" (IPv4) or "no route" (IPv6) quoting a
/// segment whose sequence number is the sender's oldest unacknowledged one undoes one doubling of that sender's
/// timeout, and if the undone timeout has already passed, the sender retransmits now (Linux: <c>tcp_ld_RTO_revert</c>,
/// net/ipv4/tcp_ipv4.c, since 2.6.34; IPv6 since 5.8). It is not a reset and not an error on a connection: a sender
/// that is not retransmitting ignores it (it keeps it as a soft error, reported only if the connection times out). A
/// client socket with IP_RECVERR set is the exception: it reports the error once to its reader.
/// <para>
/// The sequence number is the restored socket's <c>rcv_nxt</c>, read in TCP repair mode (as CRIU does) while the tree
/// is still stopped: <see cref="Collect"/> before the commit, <see cref="Prompt"/> once the lock is gone and the
/// neighbours know the address is here.
/// </para>
/// </summary>
public sealed partial class ClientPrompter(ILogger logger)
{
    /// <summary>
    /// Messages sent per connection: each undoes one doubling, so 8 bring back a timeout backed off for 50 s (200 ms ×
    /// 2^8); a sender already back at its base timeout ignores the rest.
    /// </summary>
    public const int DefaultRounds = 8;

    // include/uapi/linux/tcp.h.
    private const int SolTcp = 6;
    private const int TcpRepair = 19;
    private const int TcpRepairQueue = 20;
    private const int TcpQueueSeq = 21;
    private const int TcpRecvQueue = 1;
    private const int TcpRepairOn = 1;
    private const int TcpRepairOff = 0;
    private const int TcpRepairOffNoWindowProbe = -1; // Linux 4.14; older kernels take only TcpRepairOff

    // RFC 792 and RFC 4443.
    private const byte IcmpDestinationUnreachable = 3;
    private const byte IcmpHostUnreachable = 1;
    private const byte Icmp6DestinationUnreachable = 1;
    private const byte Icmp6NoRoute = 0;
    private const byte ProtocolTcp = 6;
    private const byte InnerTtl = 64;

    /// <summary>
    /// The established TCP connections of the tasks <paramref name="pids"/> whose local address is one of
    /// <paramref name="addresses"/>, each once, with the sequence number each expects next. The tasks must be stopped:
    /// a socket in repair mode refuses its owner's sends. A connection that cannot be read is logged and left out.
    /// </summary>
    public IReadOnlyList<RestoredConnection> Collect(IReadOnlyList<int> pids, IReadOnlyList<ServiceAddress> addresses)
    {
        var found = new List<RestoredConnection>();
        var seen = new HashSet<ulong>();
        foreach (int pid in pids)
        {
            Dictionary<ulong, TcpSocketEntry> table;
            Dictionary<ulong, int> fds;
            try
            {
                table = ReadTables(pid)
                    .Where(e => e.State == ProcNetTcp.Established && addresses.Any(a => a.Address.Equals(e.Local.Address)))
                    .GroupBy(e => e.Inode).ToDictionary(g => g.Key, g => g.First());
                fds = table.Count == 0 ? [] : SocketFds(pid);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                continue; // the task is gone, or not ours to read: it holds no connection we could prompt for
            }

            foreach (var (inode, fd) in fds)
            {
                if (table.TryGetValue(inode, out var entry) && seen.Add(inode))
                {
                    try
                    {
                        found.Add(new RestoredConnection(entry.Local, entry.Remote, ReceiveNext(pid, fd)));
                    }
                    catch (IOException ex)
                    {
                        LogUnreadable(entry.Local.ToString(), entry.Remote.ToString(), pid, ex.Message);
                    }
                }
            }
        }

        return found;
    }

    /// <summary>
    /// Sends each connection's client <paramref name="rounds"/> messages (1 to 16); returns how many connections
    /// were prompted. Never throws for a send that fails: prompting only shortens a wait, the connection lives without it.
    /// </summary>
    public int Prompt(IReadOnlyList<RestoredConnection> connections, int rounds = DefaultRounds)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(rounds, 16);
        int prompted = 0;
        foreach (var c in connections)
        {
            try
            {
                bool v4 = c.Local.AddressFamily == AddressFamily.InterNetwork;
                using var socket = new Socket(c.Local.AddressFamily, SocketType.Raw, v4 ? ProtocolType.Icmp : ProtocolType.IcmpV6);
                // From the service address: the client sees it come from the host it talks to.
                socket.Bind(new IPEndPoint(c.Local.Address, 0));
                byte[] message = v4 ? HostUnreachable(c) : NoRoute(c);
                for (int i = 0; i < rounds; i++)
                {
                    socket.SendTo(message, new IPEndPoint(c.Remote.Address, 0));
                }

                prompted++;
            }
            catch (SocketException ex)
            {
                LogPromptFailed(c.Local.ToString(), c.Remote.ToString(), ex.Message);
            }
        }

        LogPrompted(prompted, connections.Count, rounds);
        return prompted;
    }

    /// <summary>ICMP destination unreachable, host unreachable, quoting the client's segment: its IPv4 header and the first 8 bytes of TCP.</summary>
    internal static byte[] HostUnreachable(RestoredConnection c)
    {
        var m = new byte[8 + 20 + 8];
        m[0] = IcmpDestinationUnreachable;
        m[1] = IcmpHostUnreachable;
        var ip = m.AsSpan(8, 20);
        ip[0] = 0x45;                                        // version 4, header of 5 words
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], 40);  // total length: header and a bare TCP header
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000); // don't fragment
        ip[8] = InnerTtl;
        ip[9] = ProtocolTcp;
        c.Remote.Address.GetAddressBytes().CopyTo(ip[12..16]); // the client sent it ...
        c.Local.Address.GetAddressBytes().CopyTo(ip[16..20]);  // ... to the service
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip));
        WriteQuotedTcp(m.AsSpan(28), c);
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(2), Checksum(m));
        return m;
    }

    /// <summary>ICMPv6 destination unreachable, no route, quoting the client's segment (the kernel sums ICMPv6 itself).</summary>
    internal static byte[] NoRoute(RestoredConnection c)
    {
        var m = new byte[8 + 40 + 8];
        m[0] = Icmp6DestinationUnreachable;
        m[1] = Icmp6NoRoute;
        var ip = m.AsSpan(8, 40);
        ip[0] = 0x60;                                        // version 6
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], 20);  // payload: a bare TCP header
        ip[6] = ProtocolTcp;
        ip[7] = InnerTtl;
        c.Remote.Address.GetAddressBytes().CopyTo(ip[8..24]);
        c.Local.Address.GetAddressBytes().CopyTo(ip[24..40]);
        WriteQuotedTcp(m.AsSpan(48), c);
        return m;
    }

    /// <summary>The client's source and destination ports and its sequence number: all the kernel matches the socket and the segment by.</summary>
    private static void WriteQuotedTcp(Span<byte> tcp, RestoredConnection c)
    {
        BinaryPrimitives.WriteUInt16BigEndian(tcp, (ushort)c.Remote.Port);
        BinaryPrimitives.WriteUInt16BigEndian(tcp[2..], (ushort)c.Local.Port);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], c.ClientNext);
    }

    /// <summary>The Internet checksum (RFC 1071) of <paramref name="data"/>, whose checksum field is zero.</summary>
    internal static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (int i = 0; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if (data.Length % 2 == 1)
        {
            sum += (uint)data[^1] << 8;
        }

        while (sum > 0xffff)
        {
            sum = (sum & 0xffff) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    private static IEnumerable<TcpSocketEntry> ReadTables(int pid) =>
        ProcNetTcp.Parse(File.ReadAllText($"/proc/{pid}/net/tcp")).Concat(ProcNetTcp.Parse(File.ReadAllText($"/proc/{pid}/net/tcp6")));

    /// <summary>Socket inode → one of the task's descriptors for it ("socket:[12345]" links in /proc/PID/fd).</summary>
    private static Dictionary<ulong, int> SocketFds(int pid)
    {
        var fds = new Dictionary<ulong, int>();
        foreach (var path in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(path).LinkTarget;
            }
            catch (IOException)
            {
                continue; // closed while we looked
            }

            if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal) && target.EndsWith(']')
                && ulong.TryParse(target.AsSpan(8, target.Length - 9), NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode)
                && int.TryParse(Path.GetFileName(path), NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
            {
                fds.TryAdd(inode, fd);
            }
        }

        return fds;
    }

    /// <summary>
    /// rcv_nxt of socket <paramref name="fd"/> of task <paramref name="pid"/>: a duplicate taken with pidfd_getfd, put in
    /// repair mode just long enough to read TCP_QUEUE_SEQ of its receive queue, and left without a window probe.
    /// </summary>
    private static unsafe uint ReceiveNext(int pid, int fd)
    {
        int pidfd = Libc.pidfd_open(pid);
        if (pidfd < 0)
        {
            throw new IOException($"pidfd_open({pid}): {Libc.Describe(Marshal.GetLastPInvokeError())}");
        }

        int sock;
        try
        {
            sock = Libc.pidfd_getfd(pidfd, fd);
            if (sock < 0)
            {
                throw new IOException($"pidfd_getfd({pid}, {fd}): {Libc.Describe(Marshal.GetLastPInvokeError())}");
            }
        }
        finally
        {
            Libc.close(pidfd);
        }

        try
        {
            int on = TcpRepairOn;
            if (Libc.setsockopt(sock, SolTcp, TcpRepair, &on, sizeof(int)) != 0)
            {
                throw new IOException($"TCP_REPAIR on fd {fd} of {pid}: {Libc.Describe(Marshal.GetLastPInvokeError())}");
            }

            try
            {
                int queue = TcpRecvQueue;
                uint seq = 0;
                int length = sizeof(uint);
                if (Libc.setsockopt(sock, SolTcp, TcpRepairQueue, &queue, sizeof(int)) != 0
                    || Libc.getsockopt(sock, SolTcp, TcpQueueSeq, &seq, &length) != 0 || length != sizeof(uint))
                {
                    throw new IOException($"TCP_QUEUE_SEQ of fd {fd} of {pid}: {Libc.Describe(Marshal.GetLastPInvokeError())}");
                }

                return seq;
            }
            finally
            {
                int off = TcpRepairOffNoWindowProbe;
                if (Libc.setsockopt(sock, SolTcp, TcpRepair, &off, sizeof(int)) != 0)
                {
                    // An older kernel: leaving repair mode the plain way also sends a window probe, as CRIU's restore did.
                    off = TcpRepairOff;
                    Libc.setsockopt(sock, SolTcp, TcpRepair, &off, sizeof(int));
                }
            }
        }
        finally
        {
            Libc.close(sock); // our duplicate only: the task's descriptor and its connection stay
        }
    }

    [LoggerMessage(EventId = 1210, Level = LogLevel.Information, Message = "prompted the clients of {Prompted} of {Connections} restored connections to retransmit ({Rounds} ICMP messages each, RFC 6069)")]
    private partial void LogPrompted(int prompted, int connections, int rounds);

    [LoggerMessage(EventId = 1211, Level = LogLevel.Warning, Message = "cannot read restored connection {Local} - {Remote} of pid {Pid}: {Reason}; its client is not prompted and retransmits on its own timer")]
    private partial void LogUnreadable(string local, string remote, int pid, string reason);

    [LoggerMessage(EventId = 1212, Level = LogLevel.Warning, Message = "cannot prompt the client {Remote} of restored connection {Local}: {Reason}; it retransmits on its own timer")]
    private partial void LogPromptFailed(string local, string remote, string reason);
}

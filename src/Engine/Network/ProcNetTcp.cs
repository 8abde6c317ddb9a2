using System.Globalization;
using System.Net;

namespace Migration.Engine.Network;

/// <summary>One line of <c>/proc/PID/net/tcp</c> or <c>tcp6</c>: the socket's ends, its state and its inode.</summary>
public readonly record struct TcpSocketEntry(IPEndPoint Local, IPEndPoint Remote, int State, ulong Inode);

/// <summary>
/// Reads the kernel's TCP socket tables (net/ipv4/tcp_ipv4.c <c>get_tcp4_sock</c>, net/ipv6/tcp_ipv6.c
/// <c>get_tcp6_sock</c>): "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...",
/// addresses as the hex of each 32-bit word in host byte order, ports in hex, the state as the kernel's number.
/// </summary>
public static class ProcNetTcp
{
    /// <summary>TCP_ESTABLISHED (include/net/tcp_states.h).</summary>
    public const int Established = 1;

    private const int InodeField = 9;

    /// <summary>The entries of one table's text; lines that do not parse (the header) are skipped.</summary>
    public static IReadOnlyList<TcpSocketEntry> Parse(string text)
    {
        var entries = new List<TcpSocketEntry>();
        foreach (var line in text.Split('\n'))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length <= InodeField || !f[0].EndsWith(':')
                || !TryEndpoint(f[1], out var local) || !TryEndpoint(f[2], out var remote)
                || !int.TryParse(f[3], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int state)
                || !ulong.TryParse(f[InodeField], NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode))
            {
                continue;
            }

            entries.Add(new TcpSocketEntry(local, remote, state, inode));
        }

        return entries;
    }

    /// <summary>One endpoint of a /proc/net/tcp line (<see cref="Processes.TreeSockets.TryParseEndpoint"/>: the one parser of that format).</summary>
    internal static bool TryEndpoint(string text, out IPEndPoint endpoint) => Processes.TreeSockets.TryParseEndpoint(text, out endpoint);
}

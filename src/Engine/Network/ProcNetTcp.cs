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

    /// <summary>"0100007F:1F90" (127.0.0.1:8080) or 32 hex digits and a port for IPv6; IPv4-mapped IPv6 comes back as IPv4.</summary>
    internal static bool TryEndpoint(string text, out IPEndPoint endpoint)
    {
        endpoint = null!;
        int colon = text.IndexOf(':');
        if (colon is not (8 or 32) || text.Length - colon - 1 != 4
            || !ushort.TryParse(text.AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ushort port))
        {
            return false;
        }

        var bytes = new byte[colon / 2];
        for (int word = 0; word < colon / 8; word++)
        {
            if (!uint.TryParse(text.AsSpan(word * 8, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out uint v))
            {
                return false;
            }

            // The kernel printed the word as it lies in memory, read as a host-order number.
            if (!BitConverter.IsLittleEndian)
            {
                v = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);
            }

            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(word * 4), v);
        }

        var address = new IPAddress(bytes);
        endpoint = new IPEndPoint(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address, port);
        return true;
    }
}

using System.Buffers.Binary;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Migration.Engine.Native;

namespace Migration.Engine.Network;

/// <summary>
/// Tells the neighbours on a link that an address now lives at this interface's hardware address, so that a client
/// sends to it at once instead of to the old host until its cache entry expires: a gratuitous ARP request for IPv4
/// (RFC 5227 section 3, "ARP announcement"), an unsolicited neighbour advertisement with the override flag to all
/// nodes for IPv6 (RFC 4861 section 7.2.6). Both are sent a few times, as the RFCs advise, without waiting.
/// </summary>
public static class NeighbourAnnouncer
{
    private const ushort EthPArp = 0x0806;

    /// <summary>Sends <paramref name="count"/> announcements of <paramref name="address"/> on <paramref name="interfaceName"/>, <paramref name="gap"/> apart.</summary>
    /// <exception cref="IOException">The interface is missing, has no hardware address, or the send failed.</exception>
    public static async Task AnnounceAsync(IPAddress address, string interfaceName, int count = 3, TimeSpan? gap = null, CancellationToken ct = default)
    {
        var nic = NetworkInterface.GetAllNetworkInterfaces().FirstOrDefault(n => n.Name == interfaceName)
            ?? throw new IOException($"no interface {interfaceName} in this network namespace");
        byte[] mac = nic.GetPhysicalAddress().GetAddressBytes();
        if (mac.Length != 6)
        {
            throw new IOException($"{interfaceName} has no Ethernet address to announce {address} with");
        }

        int index = address.AddressFamily == AddressFamily.InterNetwork ? nic.GetIPProperties().GetIPv4Properties().Index : nic.GetIPProperties().GetIPv6Properties().Index;
        for (int i = 0; i < count; i++)
        {
            if (i > 0)
            {
                await Task.Delay(gap ?? TimeSpan.FromMilliseconds(50), ct).ConfigureAwait(false);
            }

            if (address.AddressFamily == AddressFamily.InterNetwork)
            {
                SendGratuitousArp(address, mac, index);
            }
            else
            {
                SendUnsolicitedAdvertisement(address, mac, index);
            }
        }
    }

    /// <summary>An ARP request from and for <paramref name="address"/> (sender = target protocol address), to broadcast.</summary>
    internal static byte[] GratuitousArpFrame(IPAddress address, byte[] mac)
    {
        var frame = new byte[42];
        var f = frame.AsSpan();
        f[..6].Fill(0xff);                                   // destination: broadcast
        mac.CopyTo(f[6..12]);                                // source
        BinaryPrimitives.WriteUInt16BigEndian(f[12..], EthPArp);
        BinaryPrimitives.WriteUInt16BigEndian(f[14..], 1);   // hardware type: Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(f[16..], 0x0800); // protocol type: IPv4
        f[18] = 6;                                           // hardware address length
        f[19] = 4;                                           // protocol address length
        BinaryPrimitives.WriteUInt16BigEndian(f[20..], 1);   // operation: request
        mac.CopyTo(f[22..28]);                               // sender hardware address
        address.GetAddressBytes().CopyTo(f[28..32]);         // sender protocol address
        // target hardware address: zero (unknown)
        address.GetAddressBytes().CopyTo(f[38..42]);         // target protocol address: the same
        return frame;
    }

    /// <summary>ICMPv6 type 136, flags O (override), the target, and the target link-layer address option; the kernel sums it.</summary>
    internal static byte[] AdvertisementMessage(IPAddress address, byte[] mac)
    {
        var m = new byte[32];
        m[0] = 136;                                          // neighbour advertisement
        m[4] = 0x20;                                         // R=0 S=0 O=1
        address.GetAddressBytes().CopyTo(m, 8);
        m[24] = 2;                                           // option: target link-layer address
        m[25] = 1;                                           // length in units of 8 bytes
        mac.CopyTo(m, 26);
        return m;
    }

    private static unsafe void SendGratuitousArp(IPAddress address, byte[] mac, int ifindex)
    {
        byte[] frame = GratuitousArpFrame(address, mac);
        int fd = Libc.socket(Libc.AF_PACKET, Libc.SOCK_RAW | Libc.SOCK_CLOEXEC, BinaryPrimitives.ReverseEndianness((short)EthPArp));
        if (fd < 0)
        {
            throw new IOException($"AF_PACKET socket: {Libc.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }

        try
        {
            // struct sockaddr_ll: family, protocol (network order), ifindex, hatype, pkttype, halen, addr[8].
            var sll = new byte[20];
            BinaryPrimitives.WriteUInt16LittleEndian(sll, Libc.AF_PACKET);
            BinaryPrimitives.WriteUInt16BigEndian(sll.AsSpan(2), EthPArp);
            BinaryPrimitives.WriteInt32LittleEndian(sll.AsSpan(4), ifindex);
            sll[11] = 6;
            Array.Fill(sll, (byte)0xff, 12, 6);
            fixed (byte* buf = frame)
            fixed (byte* addr = sll)
            {
                if (Libc.sendto(fd, buf, (nuint)frame.Length, 0, addr, sll.Length) != frame.Length)
                {
                    throw new IOException($"gratuitous ARP for {address}: {Libc.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
                }
            }
        }
        finally
        {
            Libc.close(fd);
        }
    }

    private static void SendUnsolicitedAdvertisement(IPAddress address, byte[] mac, int ifindex)
    {
        using var socket = new Socket(AddressFamily.InterNetworkV6, SocketType.Raw, ProtocolType.IcmpV6);
        // Hop limit 255 is what makes a receiver accept it (RFC 4861 7.1.2); sent from the address it announces.
        socket.SetSocketOption(SocketOptionLevel.IPv6, SocketOptionName.MulticastTimeToLive, 255);
        socket.SetSocketOption(SocketOptionLevel.IPv6, SocketOptionName.MulticastInterface, ifindex);
        socket.Bind(new IPEndPoint(address, 0));
        var allNodes = new IPAddress(IPAddress.Parse("ff02::1").GetAddressBytes(), ifindex);
        socket.SendTo(AdvertisementMessage(address, mac), new IPEndPoint(allNodes, 0));
    }
}

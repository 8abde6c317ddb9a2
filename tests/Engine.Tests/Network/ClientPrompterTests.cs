using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Network;
using Migration.Tests.Common;
using Xunit;

namespace Migration.Engine.Tests.Network;

/// <summary>The kernel's TCP tables as read, the ICMP messages byte by byte, and reading a live connection's sequence number.</summary>
public sealed class ClientPrompterTests
{
    private static readonly RestoredConnection s_v4 = new(IPEndPoint.Parse("10.0.0.100:7100"), IPEndPoint.Parse("10.0.0.3:45000"), 0x01020304);
    private static readonly RestoredConnection s_v6 = new(IPEndPoint.Parse("[fd00::100]:7100"), IPEndPoint.Parse("[fd00::3]:45000"), 0xfffffffe);

    [Fact]
    public void ReadsTheTcpTables()
    {
        const string tcp = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 6400000A:1BBC 0300000A:AFC8 01 00000000:00000000 00:00000000 00000000     0        0 41235 1 0000000000000000 20 4 30 10 -1
               1: 00000000:1BBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
            """;
        var entries = ProcNetTcp.Parse(tcp);
        Assert.Equal(2, entries.Count);
        Assert.Equal(IPEndPoint.Parse("10.0.0.100:7100"), entries[0].Local);
        Assert.Equal(IPEndPoint.Parse("10.0.0.3:45000"), entries[0].Remote);
        Assert.Equal(ProcNetTcp.Established, entries[0].State);
        Assert.Equal(41235UL, entries[0].Inode);
        Assert.Equal(10, entries[1].State); // listening

        // tcp6: fd00::100 and an IPv4-mapped peer (::ffff:10.0.0.3), each 32-bit word in host order.
        const string tcp6 = "   0: 000000FD000000000000000000010000:1BBC 0000000000000000FFFF00000300000A:AFC8 01 00000000:00000000 00:00000000 00000000     0        0 777 1";
        var e6 = Assert.Single(ProcNetTcp.Parse(tcp6));
        Assert.Equal(IPEndPoint.Parse("[fd00::100]:7100"), e6.Local);
        Assert.Equal(IPEndPoint.Parse("10.0.0.3:45000"), e6.Remote);
    }

    [Theory]
    [InlineData("6400000A:1BB")]
    [InlineData("6400000A1BBC")]
    [InlineData("6400000G:1BBC")]
    [InlineData("6400000A:1BBCD")]
    public void RejectsMalformedEndpoints(string text) => Assert.False(ProcNetTcp.TryEndpoint(text, out _));

    [Fact]
    public void HostUnreachableQuotesTheClientsSegment()
    {
        byte[] m = ClientPrompter.HostUnreachable(s_v4);
        Assert.Equal(36, m.Length);
        Assert.Equal([3, 1], m[..2]);                             // destination unreachable, host unreachable
        Assert.Equal(0, ClientPrompter.Checksum(m));              // the ICMP checksum holds
        Assert.Equal(0, ClientPrompter.Checksum(m.AsSpan(8, 20))); // and the quoted IPv4 header's
        Assert.Equal(0x45, m[8]);
        Assert.Equal(6, m[17]);                                   // TCP
        Assert.Equal(IPAddress.Parse("10.0.0.3"), new IPAddress(m[20..24]));   // from the client
        Assert.Equal(IPAddress.Parse("10.0.0.100"), new IPAddress(m[24..28])); // to the service
        Assert.Equal(45000, BinaryPrimitives.ReadUInt16BigEndian(m.AsSpan(28)));
        Assert.Equal(7100, BinaryPrimitives.ReadUInt16BigEndian(m.AsSpan(30)));
        Assert.Equal(0x01020304u, BinaryPrimitives.ReadUInt32BigEndian(m.AsSpan(32)));
    }

    [Fact]
    public void NoRouteQuotesTheClientsSegment()
    {
        byte[] m = ClientPrompter.NoRoute(s_v6);
        Assert.Equal(56, m.Length);
        Assert.Equal([1, 0], m[..2]);                             // destination unreachable, no route
        Assert.Equal(0x60, m[8]);
        Assert.Equal(6, m[14]);                                   // next header: TCP
        Assert.Equal(IPAddress.Parse("fd00::3"), new IPAddress(m[16..32]));
        Assert.Equal(IPAddress.Parse("fd00::100"), new IPAddress(m[32..48]));
        Assert.Equal(45000, BinaryPrimitives.ReadUInt16BigEndian(m.AsSpan(48)));
        Assert.Equal(7100, BinaryPrimitives.ReadUInt16BigEndian(m.AsSpan(50)));
        Assert.Equal(0xfffffffeu, BinaryPrimitives.ReadUInt32BigEndian(m.AsSpan(52)));
    }

    [Fact]
    public void ChecksumOfAnOddLengthPadsWithZero() => Assert.Equal(0xfbfd, ClientPrompter.Checksum([0x01, 0x02, 0x03])); // ~(0x0102 + 0x0300)

    [Fact]
    public void RoundsAreBounded()
    {
        var prompter = new ClientPrompter(NullLogger.Instance);
        Assert.Throws<ArgumentOutOfRangeException>(() => prompter.Prompt([], 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => prompter.Prompt([], 17));
        Assert.Equal(0, prompter.Prompt([]));
    }

    /// <summary>
    /// A real connection of this process: its sequence number is read in repair mode (root: CAP_NET_ADMIN), moves by
    /// exactly the bytes the peer sends, and the connection works on afterwards in both directions.
    /// </summary>
    [RequiresRootFact]
    public async Task ReadsTheNextSequenceNumberOfALiveConnectionAndLeavesItWorking()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!).WaitAsync(TimeSpan.FromSeconds(10));
        using var server = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(10));
        int serverPort = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var prompter = new ClientPrompter(NullLogger.Instance);
        var loopback = new[] { new ServiceAddress(IPAddress.Loopback, 8) };

        uint Next() => prompter.Collect([Environment.ProcessId], loopback).Single(c => c.Local.Port == serverPort).ClientNext;

        uint before = Next();
        await client.SendAsync(new byte[5]).WaitAsync(TimeSpan.FromSeconds(10));
        var buffer = new byte[16];
        Assert.Equal(5, await server.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(before + 5, Next());

        // Out of repair mode: both ends send and receive as before.
        Assert.Equal(3, await server.SendAsync(new byte[3]).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(3, await client.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(2, await client.SendAsync(new byte[2]).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(2, await server.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(10)));
    }
}

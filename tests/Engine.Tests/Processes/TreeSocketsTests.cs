using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Migration.Engine.Processes;
using Migration.Tests.Common;
using Xunit;

namespace Migration.Engine.Tests.Processes;

/// <summary>The sockets a tree holds, as preflight sees them: parsed from /proc's tables, and read from real processes.</summary>
public sealed class TreeSocketsTests
{
    [Theory]
    [InlineData("0100007F:1F90", "127.0.0.1", 8080)]
    [InlineData("00000000:0000", "0.0.0.0", 0)]
    [InlineData("0202000A:D431", "10.0.2.2", 54321)]
    [InlineData("00000000000000000000000001000000:0050", "::1", 80)]
    [InlineData("0000000000000000FFFF00000100007F:1F90", "127.0.0.1", 8080)] // IPv4-mapped
    [InlineData("B80D0120000000000000000001000000:01BB", "2001:db8::1", 443)]
    public void Endpoint_ParsesTheKernelsHex(string text, string address, int port)
    {
        Assert.True(TreeSockets.TryParseEndpoint(text, out var ep));
        Assert.Equal(IPAddress.Parse(address), ep.Address);
        Assert.Equal(port, ep.Port);
    }

    [Theory]
    [InlineData("")]
    [InlineData("0100007F")]
    [InlineData("0100007F:")]
    [InlineData("0100007F:FFFFF")]
    [InlineData("0100007G:1F90")]
    [InlineData("01007F:1F90")]
    public void Endpoint_RefusesWhatIsNotOne(string text) => Assert.False(TreeSockets.TryParseEndpoint(text, out _));

    [Fact]
    public void InetLine_GivesStateEndsAndInode()
    {
        var s = TreeSockets.TryParseInetLine(
            "   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 48213 1 0000000000000000 20 4 30 10 -1",
            SocketFamily.Tcp);
        Assert.NotNull(s);
        Assert.Equal("ESTABLISHED", s.State);
        Assert.Equal(48213UL, s.Inode);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 8080), s.Local);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 54321), s.Remote);
        Assert.True(s.IsConnectedTcp);
        Assert.Null(TreeSockets.TryParseInetLine("  sl  local_address rem_address   st tx_queue", SocketFamily.Tcp));
    }

    [RequiresRootFact]
    public async Task RealTree_ListenerConnectionsAndTheirPeers()
    {
        using var outside = new TcpListener(IPAddress.Loopback, 0);
        outside.Start();
        int outsidePort = ((IPEndPoint)outside.LocalEndpoint).Port;
        // A process holding a listener, a connection to itself (both ends inside) and one to us (the other end outside).
        var script = $$"""
            import socket, sys, time
            l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
            a = socket.create_connection(l.getsockname()); b, _ = l.accept()
            c = socket.create_connection(("127.0.0.1", {{outsidePort}}))
            print(l.getsockname()[1], flush=True)
            time.sleep(60)
            """;
        using var p = Process.Start(new ProcessStartInfo("python3", ["-c", script]) { RedirectStandardOutput = true })!;
        try
        {
            using var accepted = await outside.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(20));
            int port = int.Parse(await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(20)) ?? "0", System.Globalization.CultureInfo.InvariantCulture);

            var sockets = TreeSockets.List([p.Id]);

            var listener = Assert.Single(sockets, s => s.Family == SocketFamily.Tcp && s.State == "LISTEN");
            Assert.Equal(port, listener.Local!.Port);
            Assert.False(listener.IsConnectedTcp);
            var connected = sockets.Where(s => s.IsConnectedTcp).ToArray();
            Assert.Equal(3, connected.Length);
            Assert.Equal(2, connected.Count(s => s.Peer == p.Id));
            var toOutside = Assert.Single(connected, s => s.Peer is null);
            Assert.Equal(outsidePort, toOutside.Remote!.Port);
            Assert.All(sockets, s => Assert.Equal(p.Id, s.Pid));
            Assert.Contains("tcp established", toOutside.ToString(), StringComparison.Ordinal);
        }
        finally
        {
            p.Kill();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));
        }
    }

    [Fact]
    public void SsOutput_GivesEachUnixSocketsPeer()
    {
        var peers = TreeSockets.ParseUnixPeers("""
            u_str ESTAB  0      0                * 375206 * 375207
            u_str LISTEN 0      1      /tmp/x.sock 375205 * 0
            u_str ESTAB  0      0      /tmp/a b.sock 375207 * 375206
            garbage
            """).ToArray();
        Assert.Equal([(375206UL, 375207UL), (375207UL, 375206UL)], peers);
    }

    [RequiresRootFact]
    public async Task RealTree_UnixSocketWithItsPeerOutside_IsNamed()
    {
        string path = Path.Combine(Path.GetTempPath(), $"treesockets-{Environment.ProcessId}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        // One pair inside the process, one connection to us.
        var script = $$"""
            import socket, time
            a, b = socket.socketpair()
            c = socket.socket(socket.AF_UNIX); c.connect("{{path}}")
            print("ready", flush=True)
            time.sleep(60)
            """;
        using var p = Process.Start(new ProcessStartInfo("python3", ["-c", script]) { RedirectStandardOutput = true })!;
        try
        {
            using var accepted = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal("ready", await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(20)));

            var unix = TreeSockets.List([p.Id]).Where(s => s.Family == SocketFamily.Unix).ToArray();

            Assert.Equal(3, unix.Length);
            var outside = Assert.Single(unix, s => s.HasOutsideUnixPeer);
            Assert.Contains("outside the tree", outside.ToString(), StringComparison.Ordinal);
            Assert.All(unix, s => Assert.NotEqual(0UL, s.PeerInode));
        }
        finally
        {
            p.Kill();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));
            File.Delete(path);
        }
    }

    [Fact]
    public void GoneProcess_HoldsNothing() => Assert.Empty(TreeSockets.List([int.MaxValue]));
}

using System.Net;
using System.Net.Sockets;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Xunit;
using static Migration.PageServer.Tests.Criu.CriuWire;

namespace Migration.PageServer.Tests.Criu;

/// <summary>The listener over real loopback TCP, with the test playing CRIU.</summary>
public class CriuPageServerListenerTests
{
    private static readonly IPEndPoint Loopback = new(IPAddress.Loopback, 0);

    [Fact]
    public async Task Start_OnPortZero_ExposesTheBoundPort()
    {
        await using var listener = CriuPageServerListener.Start(Loopback);

        Assert.NotEqual(0, listener.Port);
        Assert.Equal(IPAddress.Loopback, listener.LocalEndPoint.Address);
        Assert.Equal(listener.Port, listener.LocalEndPoint.Port);
    }

    [Fact]
    public async Task OneDumpConnection_IsServed_AndAcknowledged()
    {
        await using var listener = CriuPageServerListener.Start(Loopback);
        var sink = new RecordingPageSink { KeepPages = true };
        var serving = listener.ServeAsync(sink, CancellationToken.None);

        using var criu = new TcpClient();
        await Within.Await(criu.ConnectAsync(IPAddress.Loopback, listener.Port), "connecting to the page server");
        var stream = criu.GetStream();
        await stream.WriteAsync(Open2(Pid(7)));
        Assert.Equal(new byte[] { 0 }, await Within.Await(ReadExactlyAsync(stream, 1), "the OPEN2 answer"));
        await stream.WriteAsync(Concat(AddF(Pid(7), 0x10000, 300, PagemapFlags.Present), Close()));
        Assert.Equal(Int32(0), await Within.Await(ReadExactlyAsync(stream, 4), "the CLOSE answer"));
        criu.Close();

        var result = await Within.Await(serving, "the session");
        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(300, result.Counters.PagesPresent);
        Assert.Equal(300, sink.Pages.Count);
        Assert.Equal(PatternPages(0x10000 + (299 * Page), 1), sink.Pages[(Pid(7), 0x10000 + (299 * Page))]);
        Assert.Empty(sink.Violations);
    }

    [Fact]
    public async Task LazyConnection_GetsItsPages()
    {
        await using var listener = CriuPageServerListener.Start(Loopback);
        var serving = listener.ServeLazyAsync(new PatternPageSource(1024), CancellationToken.None);

        using var daemon = new TcpClient();
        await Within.Await(daemon.ConnectAsync(IPAddress.Loopback, listener.Port), "connecting to the lazy page server");
        var stream = daemon.GetStream();
        await stream.WriteAsync(Concat(Get(42, 0x7000, 3), Close()));
        var answer = await Within.Await(ReadExactlyAsync(stream, 32 + (3 * Page) + 4), "the GET and CLOSE answers");

        Assert.Equal(Concat(Header(PageServerCommand.AddF, PagemapFlags.Present, 3, 0x7000, 42), PatternPages(0x7000, 3), Int32(0)), answer);
        Assert.True((await Within.Await(serving, "the lazy session")).IsCompleted);
    }

    [Fact]
    public async Task NoConnection_WithinTheAcceptTimeout_IsNoConnection()
    {
        await using var listener = CriuPageServerListener.Start(Loopback, new CriuPageServerOptions { AcceptTimeout = TimeSpan.FromMilliseconds(200) });

        var result = await Within.Await(listener.ServeAsync(new RecordingPageSink(), CancellationToken.None), "the accept timeout");

        Assert.Equal(PageServerOutcome.NoConnection, result.Outcome);
        Assert.Contains($"127.0.0.1:{listener.Port}", result.Error, StringComparison.Ordinal);
        Assert.Contains("criu did not connect", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AcceptTimeout_RunsOnTheInjectedClock()
    {
        var time = new ManualTimeProvider();
        await using var listener = CriuPageServerListener.Start(Loopback, new CriuPageServerOptions { AcceptTimeout = TimeSpan.FromMinutes(5) }, time: time);
        var serving = listener.ServeAsync(new RecordingPageSink(), CancellationToken.None);
        await CriuPageServerSessionTests.WaitUntil(() => time.PendingTimers == 1, "the accept timeout to be armed");

        time.Advance(TimeSpan.FromMinutes(4));
        await Task.Delay(50);
        Assert.False(serving.IsCompleted, "the accept gave up before its timeout");
        time.Advance(TimeSpan.FromMinutes(1));

        var result = await Within.Await(serving, "the accept timeout");
        Assert.Equal(PageServerOutcome.NoConnection, result.Outcome);
        Assert.Contains("within 00:05:00", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ListeningSocket_IsClosedOnceTheConnectionIsAccepted()
    {
        await using var listener = CriuPageServerListener.Start(Loopback);
        var serving = listener.ServeAsync(new RecordingPageSink(), CancellationToken.None);
        using var criu = new TcpClient();
        await Within.Await(criu.ConnectAsync(IPAddress.Loopback, listener.Port), "connecting to the page server");
        await criu.GetStream().WriteAsync(Open2(Pid(7)));
        await Within.Await(ReadExactlyAsync(criu.GetStream(), 1), "the OPEN2 answer"); // the session runs: accepted

        using var second = new TcpClient();
        var refused = await Assert.ThrowsAsync<SocketException>(() => Within.Await(second.ConnectAsync(IPAddress.Loopback, listener.Port), "a second connect"));

        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
        criu.Close();
        Assert.Equal(PageServerOutcome.PeerClosed, (await Within.Await(serving, "the session")).Outcome);
    }

    [Fact]
    public async Task Dispose_WhileWaitingForTheConnection_EndsServeWithCancellation_AndFreesThePort()
    {
        var listener = CriuPageServerListener.Start(Loopback);
        int port = listener.Port;
        var serving = listener.ServeAsync(new RecordingPageSink(), CancellationToken.None);

        await Within.Await(listener.DisposeAsync().AsTask(), "disposing the listener");

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(serving, "the disposed listener's serve"));
        using var probe = new TcpClient();
        var refused = await Assert.ThrowsAsync<SocketException>(() => Within.Await(probe.ConnectAsync(IPAddress.Loopback, port), "connecting to a closed port"));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
    }

    [Fact]
    public async Task Dispose_DuringASession_StopsIt()
    {
        var listener = CriuPageServerListener.Start(Loopback);
        var sink = new RecordingPageSink();
        var serving = listener.ServeAsync(sink, CancellationToken.None);
        using var criu = new TcpClient();
        await Within.Await(criu.ConnectAsync(IPAddress.Loopback, listener.Port), "connecting to the page server");
        await criu.GetStream().WriteAsync(Open2(Pid(7)));
        await Within.Await(ReadExactlyAsync(criu.GetStream(), 1), "the OPEN2 answer");

        await Within.Await(listener.DisposeAsync().AsTask(), "disposing the listener");

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(serving, "the disposed session"));
        Assert.Equal(0, await Within.Await(criu.GetStream().ReadAsync(new byte[1]).AsTask(), "the connection to close"));
        Assert.Equal([SinkCall.Open(Pid(7))], sink.Calls);
    }

    [Fact]
    public async Task CancelingServe_StopsIt()
    {
        await using var listener = CriuPageServerListener.Start(Loopback);
        using var cts = new CancellationTokenSource();
        var serving = listener.ServeAsync(new RecordingPageSink(), cts.Token);

        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(serving, "the canceled serve"));
    }

    [Fact]
    public async Task Serve_IsOnce()
    {
        await using var listener = CriuPageServerListener.Start(Loopback, new CriuPageServerOptions { AcceptTimeout = TimeSpan.FromMilliseconds(50) });
        await Within.Await(listener.ServeAsync(new RecordingPageSink(), CancellationToken.None), "the first serve");

        Assert.Throws<InvalidOperationException>(() => { _ = listener.ServeAsync(new RecordingPageSink(), CancellationToken.None); });
    }

    [Fact]
    public async Task ServeAfterDispose_IsObjectDisposed()
    {
        var listener = CriuPageServerListener.Start(Loopback);
        await listener.DisposeAsync();

        Assert.Throws<ObjectDisposedException>(() => { _ = listener.ServeAsync(new RecordingPageSink(), CancellationToken.None); });
    }

    private static async Task<byte[]> ReadExactlyAsync(NetworkStream stream, int count)
    {
        var buffer = new byte[count];
        await stream.ReadExactlyAsync(buffer);
        return buffer;
    }
}

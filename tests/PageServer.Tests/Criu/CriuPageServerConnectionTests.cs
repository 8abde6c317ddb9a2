using System.Net.Sockets;
using Migration.Engine.Images;
using Migration.Engine.Native;
using Migration.PageServer.Criu;
using Xunit;
using static Migration.PageServer.Tests.Criu.CriuWire;

namespace Migration.PageServer.Tests.Criu;

/// <summary>The page server on a real socket pair (the way CRIU's dump gets it: ps.fd), with the test playing CRIU.</summary>
public class CriuPageServerConnectionTests
{
    [Fact]
    public async Task ADump_OverASocketPair_IsServedAcknowledged_AndTheConnectionClosed()
    {
        var (ours, theirs) = SocketPair.Connected();
        using var criu = new NetworkStream(theirs, ownsSocket: true);
        var sink = new RecordingPageSink { KeepPages = true };
        var serving = CriuPageServerConnection.ServeAsync(ours, sink);

        await criu.WriteAsync(Open2(Pid(7)));
        Assert.Equal(new byte[] { 0 }, await Within.Await(ReadExactlyAsync(criu, 1), "the OPEN2 answer"));

        // With ps-socket, CRIU ends with FORCE_CLOSE (it may still hold its end) and waits for the answer.
        await criu.WriteAsync(Concat(AddF(Pid(7), 0x10000, 300, PagemapFlags.Present), ForceClose()));
        Assert.Equal(Int32(0), await Within.Await(ReadExactlyAsync(criu, 4), "the FORCE_CLOSE answer"));

        var result = await Within.Await(serving, "the session");
        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(300, result.Counters.PagesPresent);
        Assert.Equal(PatternPages(0x10000 + (299 * Page), 1), sink.Pages[(Pid(7), 0x10000 + (299 * Page))]);
        Assert.Equal(SinkCall.Complete, sink.Calls[^1]);
        Assert.Equal(0, await Within.Await(criu.ReadAsync(new byte[1]).AsTask(), "our end to close"));
    }

    [Fact]
    public async Task CriuDying_InsidePageData_EndsTheSession_WithoutAcknowledgingTheRound()
    {
        var (ours, theirs) = SocketPair.Connected();
        var sink = new RecordingPageSink();
        var serving = CriuPageServerConnection.ServeAsync(ours, sink);
        using (var criu = new NetworkStream(theirs, ownsSocket: true))
        {
            await criu.WriteAsync(Open2(Pid(7)));
            await Within.Await(ReadExactlyAsync(criu, 1), "the OPEN2 answer");
            var add = AddF(Pid(7), 0x10000, 8, PagemapFlags.Present);
            await criu.WriteAsync(add.AsMemory(0, add.Length - 100));
        }

        // The last copy of CRIU's end is gone: the session sees the end of the stream, not a hang.
        var result = await Within.Await(serving, "the session");
        Assert.False(result.IsCompleted);
        Assert.Equal(PageServerOutcome.PeerClosed, result.Outcome);
        Assert.Contains("7 of 8 pages", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(SinkCall.Complete, sink.Calls);
    }

    [Fact]
    public async Task Canceling_EndsTheSession_AndClosesOurEnd()
    {
        var (ours, theirs) = SocketPair.Connected();
        using var criu = new NetworkStream(theirs, ownsSocket: true);
        using var cts = new CancellationTokenSource();
        var serving = CriuPageServerConnection.ServeAsync(ours, new RecordingPageSink(), ct: cts.Token);

        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(serving, "the canceled session"));
        Assert.Equal(0, await Within.Await(criu.ReadAsync(new byte[1]).AsTask(), "our end to close"));
    }

    private static async Task<byte[]> ReadExactlyAsync(NetworkStream stream, int count)
    {
        var buffer = new byte[count];
        await stream.ReadExactlyAsync(buffer);
        return buffer;
    }
}

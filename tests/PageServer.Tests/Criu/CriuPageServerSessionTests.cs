using System.Buffers;
using System.IO.Pipelines;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;
using Xunit;
using static Migration.PageServer.Tests.Criu.CriuWire;

namespace Migration.PageServer.Tests.Criu;

public class CriuPageServerSessionTests
{
    private static readonly PageTarget Task7 = Pid(7);
    private static readonly PageTarget Task8 = Pid(8);

    internal static async Task<(PageServerResult Result, byte[] Replies)> RunAsync(byte[] stream, IPageSink sink, CriuPageServerOptions? options = null)
    {
        var connection = new InMemoryConnection();
        await connection.SendAndEndAsync(stream);
        var session = new CriuPageServerSession(connection.ServerSide, sink, options);
        var result = await Within.Await(session.RunAsync(CancellationToken.None), "the session");
        return (result, await Within.Await(connection.RepliesAsync(), "the replies"));
    }

    [Fact]
    public async Task DumpSequence_ProducesTheSinkCallsAndExactReplies()
    {
        var sink = new RecordingPageSink { HasParent = t => t == Task7 };
        var stream = Concat(
            Open2(Task7),
            Parent(Task7),
            Parent(Task8), // never opened
            AddF(Task7, 0x10000, 2, PagemapFlags.Present),
            AddF(Task7, 0x20000, 3, PagemapFlags.Parent),
            AddF(Task7, 0x30000, 1, PagemapFlags.Lazy),
            AddF(Task7, 0x31000, 1, PagemapFlags.Present | PagemapFlags.Lazy),
            Header(PageServerCommand.Add, 0, 1, 0x40000, Task7.DstId), PatternPages(0x40000, 1),
            Header(PageServerCommand.Hole, 0, 4, 0x50000, Task7.DstId),
            Close());

        var (result, replies) = await RunAsync(stream, sink);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Null(result.Error);
        Assert.Equal(
            [
                SinkCall.Open(Task7),
                SinkCall.Write(Task7, 0x10000, 2, PagemapFlags.Present),
                SinkCall.Write(Task7, 0x20000, 3, PagemapFlags.Parent),
                SinkCall.Write(Task7, 0x30000, 1, PagemapFlags.Lazy),
                SinkCall.Write(Task7, 0x31000, 1, PagemapFlags.Present | PagemapFlags.Lazy),
                SinkCall.Write(Task7, 0x40000, 1, PagemapFlags.Present),
                SinkCall.Write(Task7, 0x50000, 4, PagemapFlags.Parent),
                SinkCall.Complete,
            ],
            sink.Calls);
        byte[] expected =
        [
            0x01,                   // OPEN2 pid 7: has_parent, one byte
            0x01, 0x00, 0x00, 0x00, // PARENT pid 7: int32 1
            0x00, 0x00, 0x00, 0x00, // PARENT pid 8 (not opened): int32 0
            0x00, 0x00, 0x00, 0x00, // CLOSE: int32 0, everything durable
        ];
        Assert.Equal(expected, replies);
        Assert.Equal(new PageServerCounters(Commands: 10, PagesPresent: 4, PagesParent: 7, PagesLazy: 1, Bytes: 4 * Page), result.Counters);
        Assert.Empty(sink.Violations);
    }

    [Fact]
    public async Task PresentData_ReachesTheSinkIntact()
    {
        var seen = new List<bool>();
        var sink = new RecordingPageSink { OnPresent = (_, vaddr, _, data) => seen.Add(HasPattern(vaddr, data)), KeepPages = true };

        var (result, _) = await RunAsync(Concat(Open2(Task7), AddF(Task7, 0x7f0000000000, 3, PagemapFlags.Present), Close()), sink);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.All(seen, Assert.True);
        Assert.Equal(PatternPages(0x7f0000001000, 1), sink.Pages[(Task7, 0x7f0000001000)]);
    }

    [Fact]
    public async Task LegacyOpen_HasNoReply_Open2OfShmemRepliesZero()
    {
        var sink = new RecordingPageSink();
        var shm = Shmem(0x42);

        var (result, replies) = await RunAsync(Concat(Open(Task7), AddF(Task7, 0x1000, 1, PagemapFlags.Present), Open2(shm),
            AddF(shm, 0, 2, PagemapFlags.Present), Close()), sink);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(new byte[] { 0x00, 0, 0, 0, 0 }, replies); // OPEN: nothing; OPEN2 shmem: 0; CLOSE: int32 0
        Assert.Equal([SinkCall.Open(Task7), SinkCall.Write(Task7, 0x1000, 1, PagemapFlags.Present), SinkCall.Open(shm),
            SinkCall.Write(shm, 0, 2, PagemapFlags.Present), SinkCall.Complete], sink.Calls);
    }

    [Fact]
    public async Task ForceClose_CompletesLikeClose()
    {
        var sink = new RecordingPageSink();

        var (result, replies) = await RunAsync(Concat(Open2(Task7), ForceClose()), sink);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(new byte[] { 0x00, 0, 0, 0, 0 }, replies);
        Assert.Equal([SinkCall.Open(Task7), SinkCall.Complete], sink.Calls);
    }

    [Fact]
    public async Task SeveralTargets_EachInAscendingOrder_AreAccepted()
    {
        var sink = new RecordingPageSink();

        var (result, _) = await RunAsync(Concat(
            Open2(Task7), AddF(Task7, 0x5000, 1, PagemapFlags.Present), AddF(Task7, 0x6000, 1, PagemapFlags.Lazy),
            Open2(Task8), AddF(Task8, 0x1000, 1, PagemapFlags.Present), // lower than pid 7's, but another target
            Close()), sink);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(6, sink.Calls.Count);
    }

    [Theory]
    [InlineData(true)]  // default Pipe: the writer pauses at 64 KiB unconsumed, so the session must not wait for a whole chunk
    [InlineData(false)] // no backpressure
    public async Task SeventyThousandPageRun_ArrivesInChunksOfAtMost256Pages_InOrder_Intact(bool backpressure)
    {
        const ulong Base = 0x7f1200000000;
        const int Pages = 70000;
        int badChunks = 0;
        var sink = new RecordingPageSink
        {
            OnPresent = (_, vaddr, _, data) =>
            {
                if (!HasPattern(vaddr, data))
                {
                    badChunks++;
                }
            },
        };
        var connection = new InMemoryConnection(backpressure ? new PipeOptions(useSynchronizationContext: false) : null);
        var session = new CriuPageServerSession(connection.ServerSide, sink);
        var running = session.RunAsync(CancellationToken.None);

        // CRIU's side: the header, then the data in 64 KiB writes, as splice would push it.
        var writer = connection.ToServer.Writer;
        await writer.WriteAsync(Concat(Open2(Task7), Header(PageServerCommand.AddF, PagemapFlags.Present, Pages, Base, Task7.DstId)));
        var piece = new byte[16 * Page];
        for (int p = 0; p < Pages; p += 16)
        {
            int n = Math.Min(16, Pages - p);
            FillPattern(Base + ((ulong)p * Page), piece.AsSpan(0, n * Page));
            await Within.Await(writer.WriteAsync(piece.AsMemory(0, n * Page)).AsTask(), $"the session to take page {p}");
        }

        await writer.WriteAsync(Close());
        await writer.CompleteAsync();
        var result = await Within.Await(running, "the session to finish");

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Empty(sink.Violations);
        Assert.Equal(0, badChunks);
        var writes = sink.Calls.Where(c => c.Kind == "write").ToList();
        Assert.All(writes, w => Assert.InRange(w.NrPages, 1u, 256u));
        Assert.True(writes.Count >= Pages / 256, $"{writes.Count} chunks");
        ulong expectedVaddr = Base;
        foreach (var w in writes)
        {
            Assert.Equal(expectedVaddr, w.Vaddr);
            Assert.Equal(PagemapFlags.Present, w.Flags);
            expectedVaddr += (ulong)w.NrPages * Page;
        }

        Assert.Equal(Base + ((ulong)Pages * Page), expectedVaddr);
        Assert.Equal(Pages, result.Counters.PagesPresent);
        Assert.Equal((long)Pages * Page, result.Counters.Bytes);
    }

    [Fact]
    public async Task RunAllBufferedAtOnce_IsCutIntoFullChunks()
    {
        var sink = new RecordingPageSink(maxChunkPages: 3);

        var (result, _) = await RunAsync(Concat(Open2(Task7), AddF(Task7, 0x10000, 8, PagemapFlags.Present), Close()), sink,
            new CriuPageServerOptions { ChunkPages = 3 });

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal([SinkCall.Open(Task7), SinkCall.Write(Task7, 0x10000, 3, PagemapFlags.Present),
            SinkCall.Write(Task7, 0x13000, 3, PagemapFlags.Present), SinkCall.Write(Task7, 0x16000, 2, PagemapFlags.Present),
            SinkCall.Complete], sink.Calls);
    }

    [Fact]
    public async Task StreamArrivingOneByteAtATime_GivesTheSameCallsAndReplies()
    {
        var stream = Concat(Open2(Task7), AddF(Task7, 0x10000, 2, PagemapFlags.Present), AddF(Task7, 0x12000, 1, PagemapFlags.Lazy),
            Parent(Task7), AddF(Task7, 0x20000, 1, PagemapFlags.Present), Close());
        var whole = new RecordingPageSink { HasParent = _ => true };
        var (expected, expectedReplies) = await RunAsync(stream, whole);

        int badChunks = 0;
        var checking = new RecordingPageSink
        {
            HasParent = _ => true,
            OnPresent = (_, vaddr, _, data) => badChunks += HasPattern(vaddr, data) ? 0 : 1,
        };
        var connection = new InMemoryConnection();
        var running = new CriuPageServerSession(connection.ServerSide, checking).RunAsync(CancellationToken.None);
        foreach (var b in stream)
        {
            await Within.Await(connection.ToServer.Writer.WriteAsync(new[] { b }).AsTask(), "a one-byte write");
        }

        await connection.ToServer.Writer.CompleteAsync();
        var result = await Within.Await(running, "the trickled session");
        var replies = await Within.Await(connection.RepliesAsync(), "the replies");

        Assert.True(expected.IsCompleted, expected.ToString());
        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(expectedReplies, replies);
        Assert.Equal(0, badChunks);
        Assert.Empty(checking.Violations);

        // The same pages at the same addresses, possibly in smaller pieces.
        Assert.Equal(Expand(whole.Calls), Expand(checking.Calls));
    }

    [Fact]
    public async Task SinkFailsOnOpen_SessionFails_NoOpen2ReplyIsSent()
    {
        var sink = new RecordingPageSink { FailAtCall = 0 };

        var (result, replies) = await RunAsync(Concat(Open2(Task7), AddF(Task7, 0x1000, 1, PagemapFlags.Present), Close()), sink);

        Assert.Equal(PageServerOutcome.SinkFailed, result.Outcome);
        Assert.StartsWith("sink failed opening pid 7: InjectedFault: injected fault at sink call 0", result.Error, StringComparison.Ordinal);
        Assert.Empty(replies);
        Assert.Single(sink.Calls);
    }

    [Fact]
    public async Task SinkFailsInsideARun_SessionFails_NothingMoreReachesTheSink()
    {
        var sink = new RecordingPageSink(maxChunkPages: 2) { FailAtCall = 2 }; // open, chunk 0, chunk 1 throws

        var (result, replies) = await RunAsync(Concat(Open2(Task7), AddF(Task7, 0x10000, 6, PagemapFlags.Present), Close()), sink,
            new CriuPageServerOptions { ChunkPages = 2 });

        Assert.Equal(PageServerOutcome.SinkFailed, result.Outcome);
        Assert.Contains("writing 2 pages at 0x12000 for pid 7", result.Error, StringComparison.Ordinal);
        Assert.Equal(3, sink.Calls.Count);
        Assert.Equal(new byte[] { 0x00 }, replies); // the OPEN2 answer only: no CLOSE acknowledgement
        Assert.Equal(2, result.Counters.PagesPresent);
    }

    [Fact]
    public async Task SinkFailsToCompleteTheRound_CloseIsNotAcknowledged()
    {
        var sink = new RecordingPageSink { FailAtCall = 2 }; // open, write, complete throws

        var (result, replies) = await RunAsync(Concat(Open2(Task7), AddF(Task7, 0x1000, 1, PagemapFlags.Present), Close()), sink);

        Assert.Equal(PageServerOutcome.SinkFailed, result.Outcome);
        Assert.Contains("completing the round at CLOSE", result.Error, StringComparison.Ordinal);
        Assert.Equal(new byte[] { 0x00 }, replies);
    }

    [Fact]
    public async Task Cancellation_WhileWaitingForCriu_Propagates()
    {
        var connection = new InMemoryConnection();
        var sink = new RecordingPageSink();
        using var cts = new CancellationTokenSource();
        await connection.ToServer.Writer.WriteAsync(Open2(Task7));
        var running = new CriuPageServerSession(connection.ServerSide, sink).RunAsync(cts.Token);
        await WaitUntil(() => sink.Calls.Count == 1, "the OPEN2 to reach the sink");

        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(running, "the canceled session"));
    }

    [Fact]
    public async Task CancelPendingRead_ByThePipesOwner_EndsInCancellation()
    {
        var connection = new InMemoryConnection();
        var sink = new RecordingPageSink();
        await connection.ToServer.Writer.WriteAsync(Open2(Task7));
        var running = new CriuPageServerSession(connection.ServerSide, sink).RunAsync(CancellationToken.None);
        await WaitUntil(() => sink.Calls.Count == 1, "the OPEN2 to reach the sink");

        connection.ToServer.Reader.CancelPendingRead();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(running, "the session after CancelPendingRead"));
    }

    [Fact]
    public async Task Cancellation_InsideTheSink_Propagates()
    {
        using var cts = new CancellationTokenSource();
        var connection = new InMemoryConnection();
        await connection.SendAndEndAsync(Concat(Open2(Task7), Close()));
        var session = new CriuPageServerSession(connection.ServerSide, new CancelingSink(cts));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(session.RunAsync(cts.Token), "the canceled session"));
    }

    [Fact]
    public async Task SinkThrowingCancellationOfItsOwn_IsASinkFailure()
    {
        using var cts = new CancellationTokenSource();
        var (result, _) = await RunAsync(Concat(Open2(Task7), Close()), new CancelingSink(cts));

        Assert.Equal(PageServerOutcome.SinkFailed, result.Outcome);
        Assert.Contains("OperationCanceledException", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_RunsOnce()
    {
        var connection = new InMemoryConnection();
        await connection.SendAndEndAsync(Close());
        var session = new CriuPageServerSession(connection.ServerSide, new RecordingPageSink());
        await Within.Await(session.RunAsync(CancellationToken.None), "the session");

        await Assert.ThrowsAsync<InvalidOperationException>(() => session.RunAsync(CancellationToken.None));
    }

    [Fact]
    public void Options_OutOfRange_AreRefusedOnConstruction()
    {
        var pipe = new InMemoryConnection().ServerSide;
        var sink = new RecordingPageSink();

        Assert.Throws<ArgumentOutOfRangeException>(() => new CriuPageServerSession(pipe, sink, new CriuPageServerOptions { ChunkPages = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CriuPageServerSession(pipe, sink, new CriuPageServerOptions { MaxPagesPerIov = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CriuPageServerSession(pipe, sink, new CriuPageServerOptions { MaxPagesPerIov = 1UL << 32 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CriuPageServerSession(pipe, sink, new CriuPageServerOptions { MaxTargets = 0 }));
    }

    /// <summary>Sink calls with present runs split into single pages, so differently chunked streams compare equal.</summary>
    private static List<SinkCall> Expand(IEnumerable<SinkCall> calls)
    {
        var result = new List<SinkCall>();
        foreach (var c in calls)
        {
            if (c.Kind == "write" && (c.Flags & PagemapFlags.Present) != 0)
            {
                for (uint i = 0; i < c.NrPages; i++)
                {
                    result.Add(SinkCall.Write(c.Target, c.Vaddr + ((ulong)i * Page), 1, c.Flags));
                }
            }
            else
            {
                result.Add(c);
            }
        }

        return result;
    }

    internal static async Task WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Within.Default;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out waiting for {what}");
            }

            await Task.Delay(5);
        }
    }

    private sealed class CancelingSink(CancellationTokenSource cts) : IPageSink
    {
        public async ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct)
        {
            await cts.CancelAsync();
            cts.Token.ThrowIfCancellationRequested();
            return false;
        }

        public ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct) =>
            ValueTask.CompletedTask;

        public ValueTask CompleteRoundAsync(CancellationToken ct) => ValueTask.CompletedTask;
    }
}

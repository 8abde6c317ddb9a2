using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;
using Xunit;
using static Migration.PageServer.Tests.Criu.CriuWire;

namespace Migration.PageServer.Tests.Criu;

/// <summary>
/// Each malformed input ends the session with an outcome naming the offending value, and the sink sees exactly what
/// the valid prefix gave it: nothing of the bad command, nothing of the valid commands behind it.
/// </summary>
public class CriuPageServerSessionMalformedTests
{
    private static readonly PageTarget Task7 = Pid(7);
    private static readonly PageTarget Task8 = Pid(8);

    /// <summary>pid 7 opened (no parent) and one run at 0x10000-0x12000.</summary>
    private static readonly byte[] Opened = Concat(Open2(Task7), AddF(Task7, 0x10000, 2, PagemapFlags.Present));

    /// <summary>Valid after <see cref="Opened"/>: must never be processed once something before it was bad.</summary>
    private static readonly byte[] ValidTail = Concat(AddF(Task7, 0x100000, 1, PagemapFlags.Present), AddF(Task7, 0x200000, 1, PagemapFlags.Lazy), Close());

    public static TheoryData<string, byte[], byte[], string> Violations() => new()
    {
        { "unknown command", Opened, Header(9, 0, 1, 0x20000, Task7.DstId), "unknown command 9 (cmd 0x00000009)" },
        { "unknown command with flags", Opened, new PageServerIov(0x00040063, 1, 0x20000, Task7.DstId).ToBytes(), "unknown command 99 (cmd 0x00040063)" },
        { "command 0", Opened, Header(0, 0, 0, 0, 0), "unknown command 0" },
        { "unknown flag bit", Opened, Header(PageServerCommand.AddF, (PagemapFlags)8, 1, 0x20000, Task7.DstId), "unknown flags 0x8 on ADD_F" },
        { "high flag bits", Opened, new PageServerIov(0x80040006, 1, 0x20000, Task7.DstId).ToBytes(), "unknown flags 0x8004 on ADD_F" },
        { "PARENT|PRESENT", Opened, Header(PageServerCommand.AddF, PagemapFlags.Parent | PagemapFlags.Present, 1, 0x20000, Task7.DstId), "(0x5)" },
        { "no flags", Opened, Header(PageServerCommand.AddF, 0, 1, 0x20000, Task7.DstId), "ADD_F with flags None (0x0)" },
        { "PARENT|LAZY", Opened, Header(PageServerCommand.AddF, PagemapFlags.Parent | PagemapFlags.Lazy, 1, 0x20000, Task7.DstId), "(0x3)" },
        { "flags on OPEN2", [], Header(PageServerCommand.Open2, PagemapFlags.Present, 0, 0, Task7.DstId), "flags 0x4 on OPEN2" },
        { "flags on ADD", Opened, Header(PageServerCommand.Add, PagemapFlags.Lazy, 1, 0x20000, Task7.DstId), "flags 0x2 on ADD" },
        { "flags on CLOSE", Opened, Header(PageServerCommand.Close, PagemapFlags.Parent, 0, 0, 0), "flags 0x1 on CLOSE" },
        { "dst_id of unknown type", [], Open2(new PageTarget(7, (PageImageType)3)), "dst_id 0x703 (type 3, id 7)" },
        { "dst_id of id 0", [], Header(PageServerCommand.Open2, 0, 0, 0, 0x01), "dst_id 0x1 (type 1, id 0)" },
        { "dst_id id beyond 32 bits", [], Header(PageServerCommand.Open2, 0, 0, 0, (1UL << 40) | 1), "dst_id 0x10000000001 (type 1, id 4294967296)" },
        { "dst_id bad on ADD_F", Opened, Header(PageServerCommand.AddF, PagemapFlags.Present, 1, 0x20000, 0x7ff), "dst_id 0x7ff" },
        { "ADD_F before OPEN2", [], AddF(Task7, 0x1000, 1, PagemapFlags.Present), "ADD_F for pid 7 before OPEN2 for it" },
        { "ADD before OPEN2", [], Header(PageServerCommand.Add, 0, 1, 0x1000, Task7.DstId), "ADD for pid 7 before OPEN2 for it" },
        { "HOLE before OPEN2", [], Header(PageServerCommand.Hole, 0, 1, 0x1000, Task7.DstId), "HOLE for pid 7 before OPEN2 for it" },
        { "ADD_F for another target", Opened, AddF(Task8, 0x1000, 1, PagemapFlags.Present), "ADD_F for pid 8 before OPEN2 for it" },
        { "ADD_F for a target no longer open", Concat(Opened, Open2(Task8)), AddF(Task7, 0x20000, 1, PagemapFlags.Present), "ADD_F for pid 7 while pid 8 is open" },
        { "GET", Opened, Get(7, 0x10000, 1), "GET (GET flags 0x0 nr_pages 1 vaddr 0x10000 dst_id 0x7)" },
        { "unaligned vaddr", Opened, AddF(Task7, 0x12001, 1, PagemapFlags.Lazy), "vaddr 0x12001, nr_pages 1" },
        { "zero pages", Opened, AddF(Task7, 0x20000, 0, PagemapFlags.Lazy), "vaddr 0x20000, nr_pages 0" },
        { "vaddr past user space", Opened, AddF(Task7, 1UL << 57, 1, PagemapFlags.Lazy), "vaddr 0x200000000000000, nr_pages 1" },
        { "run crossing the top of user space", Opened, AddF(Task7, (1UL << 57) - 0x1000, 2, PagemapFlags.Lazy), "vaddr 0x1fffffffffff000, nr_pages 2" },
        { "nr_pages over the limit", Opened, AddF(Task7, 0x20000, (1UL << 22) + 1, PagemapFlags.Lazy), "nr_pages 4194305 at 0x20000 for pid 7, more than the limit of 4194304" },
        { "nr_pages absurd", Opened, Header(PageServerCommand.AddF, PagemapFlags.Present, 1UL << 63, 0x20000, Task7.DstId), "nr_pages 9223372036854775808" },
        { "run going backwards", Opened, AddF(Task7, 0x8000, 1, PagemapFlags.Present), "ADD_F at 0x8000 for pid 7, below the end of its previous run at 0x12000" },
        { "run overlapping the previous", Opened, AddF(Task7, 0x11000, 1, PagemapFlags.Lazy), "ADD_F at 0x11000 for pid 7, below the end of its previous run at 0x12000" },
        { "parent hole without parent", Opened, AddF(Task7, 0x20000, 3, PagemapFlags.Parent), "a parent hole at 0x20000 (3 pages) for pid 7" },
        { "legacy HOLE without parent", Opened, Header(PageServerCommand.Hole, 0, 1, 0x20000, Task7.DstId), "a parent hole at 0x20000 (1 pages) for pid 7" },
        { "OPEN2 twice", Opened, Open2(Task7), "OPEN2 for pid 7 a second time" },
        { "OPEN2 with fields", [], Header(PageServerCommand.Open2, 0, 0, 0x1000, Task7.DstId), "OPEN2 for pid 7 with nr_pages 0 and vaddr 0x1000" },
        { "PARENT with fields", Opened, Header(PageServerCommand.Parent, 0, 5, 0, Task7.DstId), "PARENT for pid 7 with nr_pages 5" },
        { "PARENT with bad dst_id", Opened, Header(PageServerCommand.Parent, 0, 0, 0, 0x09), "PARENT with dst_id 0x9" },
        { "CLOSE with dst_id", Opened, Header(PageServerCommand.Close, 0, 0, 0, Task7.DstId), "CLOSE with nr_pages 0, vaddr 0x0, dst_id 0x701" },
        { "FORCE_CLOSE with vaddr", Opened, Header(PageServerCommand.ForceClose, 0, 0, 0x1000, 0), "FORCE_CLOSE with nr_pages 0, vaddr 0x1000" },
    };

    [Theory]
    [MemberData(nameof(Violations))]
    public async Task Violation_EndsTheSession_NamingTheValue_SinkSeesOnlyThePrefix(string what, byte[] prefix, byte[] bad, string named)
    {
        var prefixOnly = new RecordingPageSink();
        var (prefixResult, prefixReplies) = await CriuPageServerSessionTests.RunAsync(prefix, prefixOnly);
        Assert.Equal(PageServerOutcome.PeerClosed, prefixResult.Outcome); // the prefix alone is valid, just unfinished

        var sink = new RecordingPageSink();
        var (result, replies) = await CriuPageServerSessionTests.RunAsync(Concat(prefix, bad, ValidTail), sink);

        Assert.Equal(PageServerOutcome.ProtocolError, result.Outcome);
        Assert.NotNull(result.Error);
        Assert.StartsWith("criu sent ", result.Error, StringComparison.Ordinal);
        Assert.True(result.Error.Contains(named, StringComparison.Ordinal), $"{what}: \"{result.Error}\" does not name \"{named}\"");
        Assert.Equal(prefixOnly.Calls, sink.Calls);
        Assert.Equal(prefixReplies, replies);
        Assert.Empty(sink.Violations);
    }

    [Fact]
    public async Task BytesAfterClose_AreAViolation_AndTheRoundIsNotCompleted()
    {
        var sink = new RecordingPageSink();

        var (result, replies) = await CriuPageServerSessionTests.RunAsync(Concat(Opened, Close(), [1, 2, 3]), sink);

        Assert.Equal(PageServerOutcome.ProtocolError, result.Outcome);
        Assert.Contains("3 bytes after CLOSE", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(SinkCall.Complete, sink.Calls);
        Assert.Equal(new byte[] { 0x00 }, replies); // OPEN2 answer, no acknowledgement
    }

    [Fact]
    public async Task TooManyTargets_IsAViolation()
    {
        var sink = new RecordingPageSink();

        var (result, _) = await CriuPageServerSessionTests.RunAsync(Concat(Open2(Task7), Open2(Task8), Close()), sink,
            new CriuPageServerOptions { MaxTargets = 1 });

        Assert.Equal(PageServerOutcome.ProtocolError, result.Outcome);
        Assert.Contains("OPEN2 for pid 8 beyond the limit of 1 targets", result.Error, StringComparison.Ordinal);
        Assert.Equal([SinkCall.Open(Task7)], sink.Calls);
    }

    [Fact]
    public async Task TruncatedPageData_AtEof_IsPeerClosed_NamingTheRun_AndNotAcknowledged()
    {
        var sink = new RecordingPageSink();
        var stream = Concat(Open2(Task7), Header(PageServerCommand.AddF, PagemapFlags.Present, 3, 0x40000, Task7.DstId), PatternPages(0x40000, 1), new byte[100]);

        var (result, replies) = await CriuPageServerSessionTests.RunAsync(stream, sink);

        Assert.Equal(PageServerOutcome.PeerClosed, result.Outcome);
        Assert.Contains("the run at 0x40000 for pid 7 got 1 of 3 pages and 100 bytes of the next", result.Error, StringComparison.Ordinal);
        Assert.Equal([SinkCall.Open(Task7), SinkCall.Write(Task7, 0x40000, 1, PagemapFlags.Present)], sink.Calls);
        Assert.Equal(new byte[] { 0x00 }, replies);
    }

    [Fact]
    public async Task TruncatedHeader_AtEof_IsPeerClosed_NamingTheByteCount()
    {
        var sink = new RecordingPageSink();

        var (result, _) = await CriuPageServerSessionTests.RunAsync(Concat(Opened, Close()[..10]), sink);

        Assert.Equal(PageServerOutcome.PeerClosed, result.Outcome);
        Assert.Contains("inside a header: 10 of 32 bytes", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(SinkCall.Complete, sink.Calls);
    }

    [Fact]
    public async Task EofBeforeClose_IsPeerClosed_NamingTheCommandCount()
    {
        var (result, _) = await CriuPageServerSessionTests.RunAsync(Opened, new RecordingPageSink());

        Assert.Equal(PageServerOutcome.PeerClosed, result.Outcome);
        Assert.Contains("before CLOSE, after 2 commands", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task EmptyStream_IsPeerClosed()
    {
        var sink = new RecordingPageSink();

        var (result, replies) = await CriuPageServerSessionTests.RunAsync([], sink);

        Assert.Equal(PageServerOutcome.PeerClosed, result.Outcome);
        Assert.Contains("after 0 commands", result.Error, StringComparison.Ordinal);
        Assert.Empty(sink.Calls);
        Assert.Empty(replies);
    }
}

internal static class PageServerIovBytes
{
    public static byte[] ToBytes(this PageServerIov iov)
    {
        var bytes = new byte[PageServerIov.Size];
        iov.Write(bytes);
        return bytes;
    }
}

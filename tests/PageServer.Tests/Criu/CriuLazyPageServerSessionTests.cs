using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;
using Xunit;
using static Migration.PageServer.Tests.Criu.CriuWire;

namespace Migration.PageServer.Tests.Criu;

public class CriuLazyPageServerSessionTests
{
    private static async Task<(PageServerResult Result, byte[] Replies)> RunAsync(byte[] stream, IPageSource source, CriuPageServerOptions? options = null)
    {
        var connection = new InMemoryConnection();
        await connection.SendAndEndAsync(stream);
        var session = new CriuLazyPageServerSession(connection.ServerSide, source, options);
        var result = await Within.Await(session.RunAsync(CancellationToken.None), "the lazy session");
        return (result, await Within.Await(connection.RepliesAsync(), "the lazy replies"));
    }

    [Fact]
    public async Task Get_IsAnsweredWithAddFPresent_SameDstIdAndVaddr_ThenTheData()
    {
        var source = new PatternPageSource(maxPages: 1024);

        var (result, replies) = await RunAsync(Concat(Get(0x1234, 0x7f0011223000, 2), Close()), source);

        Assert.True(result.IsCompleted, result.ToString());
        byte[] header =
        [
            0x06, 0x00, 0x04, 0x00,                         // cmd = PE_PRESENT << 16 | PS_IOV_ADD_F
            0x00, 0x00, 0x00, 0x00,                         // pad
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nr_pages = 2: all that was asked
            0x00, 0x30, 0x22, 0x11, 0x00, 0x7f, 0x00, 0x00, // vaddr as asked
            0x34, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // dst_id as asked: the raw vpid 0x1234, no type byte
        ];
        Assert.Equal(Concat(header, PatternPages(0x7f0011223000, 2), Int32(0)), replies);
        Assert.Equal([(Pid(0x1234), 0x7f0011223000UL, 2)], source.Reads);
        Assert.Equal(new PageServerCounters(2, 2, 0, 0, 2 * Page), result.Counters);
    }

    [Fact]
    public async Task Get_SourceHoldsFewer_AnswersOnlyThoseConsecutivePages()
    {
        var source = new PatternPageSource(maxPages: 1024) { HoldsOnly = (_, vaddr) => vaddr < 0x12000 };

        var (result, replies) = await RunAsync(Concat(Get(5, 0x10000, 4), Close()), source);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(Concat(Header(PageServerCommand.AddF, PagemapFlags.Present, 2, 0x10000, 5), PatternPages(0x10000, 2), Int32(0)), replies);
    }

    [Fact]
    public async Task Get_LargerThanTheReplyLimit_IsAnsweredWithTheLimit()
    {
        var source = new PatternPageSource(maxPages: 1024);

        var (result, replies) = await RunAsync(Concat(Get(5, 0x100000, 3000), Close()), source);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal([(Pid(5), 0x100000UL, 1024)], source.Reads);
        Assert.Equal(Header(PageServerCommand.AddF, PagemapFlags.Present, 1024, 0x100000, 5), replies[..32]);
        Assert.Equal(32 + (1024 * Page) + 4, replies.Length);
        Assert.True(HasPattern(0x100000, new(replies.AsMemory(32, 1024 * Page))));
    }

    [Fact]
    public async Task PipelinedGets_AreAnsweredInRequestOrder()
    {
        var source = new PatternPageSource(maxPages: 1024);

        var (result, replies) = await RunAsync(Concat(Get(9, 0x50000, 1), Get(3, 0x10000, 2), Get(9, 0x20000, 1), Close()), source);

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(Concat(
            Header(PageServerCommand.AddF, PagemapFlags.Present, 1, 0x50000, 9), PatternPages(0x50000, 1),
            Header(PageServerCommand.AddF, PagemapFlags.Present, 2, 0x10000, 3), PatternPages(0x10000, 2),
            Header(PageServerCommand.AddF, PagemapFlags.Present, 1, 0x20000, 9), PatternPages(0x20000, 1),
            Int32(0)), replies);
    }

    [Fact]
    public async Task ForceClose_AnswersZero_AndCompletes()
    {
        var (result, replies) = await RunAsync(ForceClose(), new PatternPageSource(8));

        Assert.True(result.IsCompleted, result.ToString());
        Assert.Equal(Int32(0), replies);
    }

    [Fact]
    public async Task Get_SourceHoldsNone_FailsTheSession_WithoutAZeroPageAnswer_EarlierAnswersStillGoOut()
    {
        var source = new PatternPageSource(maxPages: 1024) { HoldsOnly = (_, vaddr) => vaddr != 0x30000 };

        var (result, replies) = await RunAsync(Concat(Get(5, 0x10000, 1), Get(5, 0x30000, 2), Get(5, 0x40000, 1), Close()), source);

        Assert.Equal(PageServerOutcome.SourceFailed, result.Outcome);
        Assert.Contains("source holds no page at 0x30000 for pid 5 (GET of 2 pages)", result.Error, StringComparison.Ordinal);
        Assert.Equal(Concat(Header(PageServerCommand.AddF, PagemapFlags.Present, 1, 0x10000, 5), PatternPages(0x10000, 1)), replies);
        Assert.Equal(2, source.Reads.Count);
    }

    [Fact]
    public async Task SourceThrows_IsSourceFailed()
    {
        var source = new PatternPageSource(maxPages: 1024) { Fault = new IOException("disk gone") };

        var (result, replies) = await RunAsync(Concat(Get(5, 0x10000, 1), Close()), source);

        Assert.Equal(PageServerOutcome.SourceFailed, result.Outcome);
        Assert.Contains("source failed reading 1 pages at 0x10000 for pid 5: IOException: disk gone", result.Error, StringComparison.Ordinal);
        Assert.Empty(replies);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(3)]
    public async Task SourceReturnsAnImpossibleCount_IsSourceFailed(int lie)
    {
        var source = new PatternPageSource(maxPages: 1024) { Lie = lie };

        var (result, replies) = await RunAsync(Concat(Get(5, 0x10000, 2), Close()), source);

        Assert.Equal(PageServerOutcome.SourceFailed, result.Outcome);
        Assert.Contains($"source returned {lie} pages for a read of 2 at 0x10000 for pid 5", result.Error, StringComparison.Ordinal);
        Assert.Empty(replies);
    }

    public static TheoryData<byte[], string> Violations() => new()
    {
        { Header(PageServerCommand.Get, PagemapFlags.Present, 1, 0x1000, 5), "flags 0x4 on GET" },
        { Get(0, 0x1000, 1), "GET for dst_id 0x0, which is not a pid" },
        { Header(PageServerCommand.Get, 0, 1, 0x1000, 0x80000000), "GET for dst_id 0x80000000, which is not a pid" },
        { Get(5, 0x1001, 1), "vaddr 0x1001, nr_pages 1" },
        { Get(5, 0x1000, 0), "vaddr 0x1000, nr_pages 0" },
        { Get(5, 1UL << 57, 1), "vaddr 0x200000000000000" },
        { Get(5, 0x1000, (1UL << 22) + 1), "nr_pages 4194305 at 0x1000 for pid 5, more than the limit" },
        { Open2(Pid(5)), "OPEN2 (OPEN2 flags 0x0 nr_pages 0 vaddr 0x0 dst_id 0x501) to a lazy page server" },
        { AddF(Pid(5), 0x1000, 1, PagemapFlags.Present), "ADD_F (ADD_F flags 0x4" },
        { Header(0x99, 0, 0, 0, 0), "unknown command 153" },
        { Header(PageServerCommand.Close, 0, 0, 0, 5), "CLOSE with flags 0x0, nr_pages 0, vaddr 0x0, dst_id 0x5" },
        { Concat(Close(), [0]), "65 bytes after CLOSE" }, // the byte and the two headers behind it
    };

    [Theory]
    [MemberData(nameof(Violations))]
    public async Task Violation_EndsTheSession_NamingTheValue_SourceAskedNothingMore(byte[] bad, string named)
    {
        var source = new PatternPageSource(maxPages: 1024);

        var (result, replies) = await RunAsync(Concat(Get(5, 0x10000, 1), bad, Get(5, 0x20000, 1), Close()), source);

        Assert.Equal(PageServerOutcome.ProtocolError, result.Outcome);
        Assert.NotNull(result.Error);
        Assert.StartsWith("criu sent ", result.Error, StringComparison.Ordinal);
        Assert.True(result.Error.Contains(named, StringComparison.Ordinal), $"\"{result.Error}\" does not name \"{named}\"");
        Assert.Equal([(Pid(5), 0x10000UL, 1)], source.Reads);
        Assert.Equal(Concat(Header(PageServerCommand.AddF, PagemapFlags.Present, 1, 0x10000, 5), PatternPages(0x10000, 1)), replies);
    }

    [Fact]
    public async Task TruncatedHeader_IsPeerClosed()
    {
        var (result, _) = await RunAsync(Get(5, 0x1000, 1)[..20], new PatternPageSource(8));

        Assert.Equal(PageServerOutcome.PeerClosed, result.Outcome);
        Assert.Contains("inside a header: 20 of 32 bytes", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task EofBeforeClose_IsPeerClosed_AfterAnsweringWhatWasAsked()
    {
        var (result, replies) = await RunAsync(Get(5, 0x1000, 1), new PatternPageSource(8));

        Assert.Equal(PageServerOutcome.PeerClosed, result.Outcome);
        Assert.Contains("before CLOSE, after 1 commands", result.Error, StringComparison.Ordinal);
        Assert.Equal(32 + Page, replies.Length);
    }

    [Fact]
    public async Task Cancellation_Propagates()
    {
        var connection = new InMemoryConnection();
        using var cts = new CancellationTokenSource();
        var running = new CriuLazyPageServerSession(connection.ServerSide, new PatternPageSource(8)).RunAsync(cts.Token);

        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Within.Await(running, "the canceled lazy session"));
    }
}

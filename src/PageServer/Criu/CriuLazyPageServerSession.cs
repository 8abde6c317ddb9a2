using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Criu;

/// <summary>
/// Serves one connection of <c>criu lazy-pages --page-server</c> (the lazy-restore direction) from an
/// <see cref="IPageSource"/>: each GET(dst_id = raw vpid, vaddr, nr_pages) is answered with a header
/// <c>ADD_F | PE_PRESENT &lt;&lt; 16</c> carrying the same dst_id and vaddr and the number of pages actually sent,
/// followed by their data; CLOSE (or FORCE_CLOSE) is answered with int32 0 and ends the session.
/// </summary>
/// <remarks>
/// What the lazy-pages daemon of CRIU 4.2.1 accepts (criu/page-xfer.c page_server_read, criu/pagemap.c
/// read_page_complete, criu/uffd.c uffd_io_complete), and therefore what this does:
/// <list type="bullet">
/// <item>It sends GETs without waiting and matches answers to requests in order: answers go out in request order.</item>
/// <item>It does not look at the answer's cmd; it requires dst_id to equal the request's ("Out of order read completed"
/// otherwise) and finds the request by vaddr (an answer at another vaddr is silently dropped and the faulting task waits
/// forever). Both are echoed.</item>
/// <item>It reads min(answer's nr_pages, asked) pages of data: an answer with more pages than asked would desynchronise
/// the stream, so never more. Fewer is fine: it copies those and asks for the rest again. Requests larger than
/// <see cref="CriuPageServerOptions.MaxGetReplyPages"/> get at most that many pages.</item>
/// <item>nr_pages 0 is not an answer it can use: it would issue a zero-length UFFDIO_COPY, which fails with EINVAL
/// and kills the lazy restore, and on its asynchronous path it would not even see the answer until more bytes arrive.
/// CRIU's own page server (page_server_get_pages) sends nothing and drops the connection in that case. So when the
/// source holds none of the pages asked for, this ends the session with <see cref="PageServerOutcome.SourceFailed"/>
/// and the caller closes the connection, which the daemon sees at once ("Remote side closed connection").</item>
/// </list>
/// Requests are checked like the receiving direction's headers (command, flags, pid, range, count); GETs come in fault
/// order, so there is no address-order rule here.
/// </remarks>
public sealed class CriuLazyPageServerSession : PageServerSession
{
    private readonly IPageSource _source;

    public CriuLazyPageServerSession(IDuplexPipe transport, IPageSource source, CriuPageServerOptions? options = null, ILogger? logger = null)
        : base(transport, options, logger, "criu lazy page-server session", "the lazy-pages daemon")
    {
        ArgumentNullException.ThrowIfNull(source);
        _source = source;
    }

    // Pooled: this method now holds the flush of a chunk's worth of answers that the session's loop used to await
    // itself, so a flush that goes asynchronous reuses a box instead of allocating one.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private protected override async ValueTask<PageServerResult?> HandleAsync(PageServerIov iov, long bytesAfter, CancellationToken ct)
    {
        PageServerResult? end;
        switch (iov.Command)
        {
            case PageServerCommand.Get:
                end = Answer(iov);
                // Several answers go out in one flush, but not more than a chunk's worth unflushed.
                if (end is null && Unflushed >= (long)Options.ChunkPages * PageSize)
                {
                    end = await FlushAsync("GET answers", ct).ConfigureAwait(false);
                }

                break;
            case PageServerCommand.Close or PageServerCommand.ForceClose:
                end = await CloseAsync(iov, bytesAfter, ct).ConfigureAwait(false);
                break;
            case PageServerCommand.Add or PageServerCommand.Hole or PageServerCommand.Open or PageServerCommand.Open2
                or PageServerCommand.Parent or PageServerCommand.AddF:
                end = Violation($"{PageServerCommand.Name(iov.Command)} ({iov}) to a lazy page server: it answers only GET and CLOSE");
                break;
            default:
                end = UnknownCommand(iov);
                break;
        }

        if (end is not null && Unflushed > 0 && end.Outcome is PageServerOutcome.ProtocolError or PageServerOutcome.SourceFailed)
        {
            // The answers before the failing request are whole and correct: send them before the
            // connection goes (the daemon may still use them). A failure to send changes nothing.
            _ = await FlushAsync("GET answers", ct).ConfigureAwait(false);
        }

        return end;
    }

    /// <summary>Answer what was asked before waiting for more requests.</summary>
    private protected override ValueTask<PageServerResult?> CaughtUpAsync(CancellationToken ct) =>
        Unflushed > 0 ? FlushAsync("GET answers", ct) : default;

    private protected override PageServerResult EndOfStream(long leftover) => leftover > 0
        ? Fail(PageServerOutcome.PeerClosed, $"the lazy-pages daemon closed the connection inside a header: {leftover} of {PageServerIov.Size} bytes arrived")
        : Fail(PageServerOutcome.PeerClosed, $"the lazy-pages daemon closed the connection before CLOSE, after {Commands} commands");

    /// <summary>Writes the answer to one GET into the output (not flushed); null when it went out.</summary>
    private PageServerResult? Answer(PageServerIov iov)
    {
        if (iov.FlagBits != 0)
        {
            return Violation($"flags 0x{iov.FlagBits:x} on GET (cmd 0x{iov.Cmd:x8}); GET carries none");
        }

        // GET names the task by its raw vpid (CRIU's pr->img_id), not by the id << 8 | type of the other commands.
        if (iov.DstId is 0 or > int.MaxValue)
        {
            return Violation($"GET for dst_id 0x{iov.DstId:x}, which is not a pid (GET's dst_id is the raw vpid, 1 .. {int.MaxValue})");
        }

        var target = new PageTarget((uint)iov.DstId, PageImageType.Pid);
        if (CheckRange(iov, "GET", target, "request") is { } badRange)
        {
            return badRange;
        }

        int asked = (int)Math.Min(iov.NrPages, (ulong)Options.MaxGetReplyPages);
        int room = asked * PageSize;
        var span = Output.GetSpan(PageServerIov.Size + room);
        int held;
        try
        {
            held = _source.ReadPages(target, iov.Vaddr, asked, span.Slice(PageServerIov.Size, room));
        }
        catch (Exception ex)
        {
            return Fail(PageServerOutcome.SourceFailed, $"source failed reading {asked} pages at 0x{iov.Vaddr:x} for {target}: {ex.GetType().Name}: {ex.Message}");
        }

        if (held < 0 || held > asked)
        {
            return Fail(PageServerOutcome.SourceFailed, $"source returned {held} pages for a read of {asked} at 0x{iov.Vaddr:x} for {target}");
        }

        if (held == 0)
        {
            return Fail(PageServerOutcome.SourceFailed,
                $"source holds no page at 0x{iov.Vaddr:x} for {target} (GET of {iov.NrPages} pages): the lazy restore cannot get that page; " +
                "the connection is dropped as CRIU's own page server does");
        }

        PageServerIov.Create(PageServerCommand.AddF, PagemapFlags.Present, (ulong)held, iov.Vaddr, iov.DstId).Write(span);
        Advance(PageServerIov.Size + (held * PageSize));
        CountPages(held, (long)held * PageSize);
        return null;
    }

    private async ValueTask<PageServerResult?> CloseAsync(PageServerIov iov, long bytesAfter, CancellationToken ct)
    {
        string name = PageServerCommand.Name(iov.Command);
        if (iov.FlagBits != 0 || iov.NrPages != 0 || iov.Vaddr != 0 || iov.DstId != 0)
        {
            return Violation($"{name} with flags 0x{iov.FlagBits:x}, nr_pages {iov.NrPages}, vaddr 0x{iov.Vaddr:x}, dst_id 0x{iov.DstId:x}; it carries nothing");
        }

        return CheckNothingAfter(name, bytesAfter) ?? await AcknowledgeCloseAsync(name, ct).ConfigureAwait(false);
    }
}

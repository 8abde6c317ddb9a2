using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Criu;

/// <summary>
/// Serves one connection of <c>criu dump --page-server</c> / <c>criu pre-dump --page-server</c> (the receiving
/// direction) and hands every page on to an <see cref="IPageSink"/>:
/// <list type="bullet">
/// <item>OPEN2 opens the target at the sink and answers one byte, has_parent; legacy OPEN does the same without answer.</item>
/// <item>PARENT answers int32 has_parent of an opened target (0 for one not opened: CRIU then sends every page, never a hole).</item>
/// <item>ADD_F with PE_PRESENT (legacy ADD) is followed by nr_pages * 4096 bytes, handed on in pieces of at most
/// <see cref="CriuPageServerOptions.ChunkPages"/> pages straight from the pipe's buffers (no copy, nothing buffered
/// beyond one piece); ADD_F with PE_PARENT or PE_LAZY alone (legacy HOLE) is a header only.</item>
/// <item>CLOSE / FORCE_CLOSE completes the round at the sink, then answers int32 0: CRIU waits for that answer, and it
/// means every page is durable at the destination.</item>
/// </list>
/// Everything from the wire is checked before anything is handed on; the first violation ends the session with a
/// <see cref="PageServerResult"/> naming it, and the sink gets no call after it. The session owns neither the pipe
/// nor the sink: the caller completes the pipe afterwards.
/// </summary>
/// <remarks>
/// The pipe's reader must be able to hold one header plus one page unconsumed (any Pipe or StreamPipeReader can).
/// A present run is forwarded as whole pages arrive, so a run cut short by EOF has been partly forwarded; such a round
/// is never acknowledged (<see cref="IPageSink.CompleteRoundAsync"/> is not called).
/// </remarks>
public sealed partial class CriuPageServerSession : PageServerSession
{
    private readonly IPageSink _sink;
    private readonly Dictionary<PageTarget, TargetState> _targets = [];
    private TargetState? _current;
    private PresentRun _run;

    public CriuPageServerSession(IDuplexPipe transport, IPageSink sink, CriuPageServerOptions? options = null, ILogger? logger = null)
        : base(transport, options, logger, "criu page-server session", "criu")
    {
        ArgumentNullException.ThrowIfNull(sink);
        _sink = sink;
    }

    /// <summary>Inside a present run: the bytes in front are its pages.</summary>
    private protected override bool InData => _run.PagesLeft > 0;

    /// <summary>The whole pages that are here, at most one chunk of them at a time.</summary>
    private protected override long DataToTake(long available)
    {
        ulong whole = (ulong)(available / PageSize);
        return (long)Math.Min(whole, Math.Min(_run.PagesLeft, (ulong)Options.ChunkPages)) * PageSize;
    }

    private protected override ValueTask<PageServerResult?> DataAsync(ReadOnlySequence<byte> data, CancellationToken ct) =>
        ForwardChunkAsync((int)(data.Length / PageSize), data, ct);

    private async ValueTask<PageServerResult?> ForwardChunkAsync(int pages, ReadOnlySequence<byte> data, CancellationToken ct)
    {
        try
        {
            await _sink.WritePagesAsync(_run.Target, _run.NextVaddr, (uint)pages, _run.Flags, data, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!IsOwnCancellation(ex, ct))
        {
            return SinkFailed(ex, $"writing {pages} pages at 0x{_run.NextVaddr:x} for {_run.Target}");
        }

        _run.NextVaddr += (ulong)pages * PageSize;
        _run.PagesLeft -= (ulong)pages;
        CountPages(pages, data.Length);
        return null;
    }

    private protected override PageServerResult EndOfStream(long leftover)
    {
        if (_run.PagesLeft > 0)
        {
            ulong arrived = _run.NrPages - _run.PagesLeft;
            return Fail(PageServerOutcome.PeerClosed,
                $"criu closed the connection inside page data: the run at 0x{_run.Vaddr:x} for {_run.Target} got {arrived} of {_run.NrPages} pages " +
                $"and {leftover} bytes of the next; the round was not acknowledged");
        }

        if (leftover > 0)
        {
            return Fail(PageServerOutcome.PeerClosed,
                $"criu closed the connection inside a header: {leftover} of {PageServerIov.Size} bytes arrived; the round was not acknowledged");
        }

        return Fail(PageServerOutcome.PeerClosed,
            $"criu closed the connection before CLOSE, after {Commands} commands: the dump did not finish and the round was not acknowledged");
    }

    private PageServerResult SinkFailed(Exception ex, string doing) =>
        Fail(PageServerOutcome.SinkFailed, $"sink failed {doing}: {ex.GetType().Name}: {ex.Message}");

    /// <summary>What the session knows about one opened target.</summary>
    private sealed class TargetState(PageTarget target, bool hasParent)
    {
        public PageTarget Target { get; } = target;

        public bool HasParent { get; } = hasParent;

        /// <summary>End of the last run: CRIU sends each target's runs in ascending address order, so the next starts here or above.</summary>
        public ulong NextVaddr { get; set; }
    }

    /// <summary>The present run whose page data is arriving.</summary>
    private struct PresentRun
    {
        public PageTarget Target;
        public PagemapFlags Flags;
        public ulong Vaddr;
        public ulong NrPages;
        public ulong NextVaddr;
        public ulong PagesLeft;
    }
}

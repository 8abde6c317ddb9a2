using System.Buffers.Binary;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Criu;

/// <summary>
/// What both directions of a page-server connection share: the transport, the run-once contract with its outcome
/// logged, the one read loop (<c>PageServerSession.ReadLoop.cs</c>), the checks every header gets whatever its
/// direction, the answers and the failure and flush handling. <see cref="CriuPageServerSession"/> receives a dump's
/// pages; <see cref="CriuLazyPageServerSession"/> answers a lazy restore's requests.
/// </summary>
public abstract partial class PageServerSession
{
    private readonly string _peer;
    private int _started;

    /// <summary>Bytes written to <see cref="Output"/> since the last flush.</summary>
    private long _unflushed;

    // What was moved (Counters).
    private long _pagesPresent;
    private long _pagesParent;
    private long _pagesLazy;
    private long _bytes;

    private protected const int PageSize = PageFacts.PageSize;

    private protected PageServerSession(IDuplexPipe transport, CriuPageServerOptions? options, ILogger? logger, string name, string peer)
    {
        ArgumentNullException.ThrowIfNull(transport);
        Input = transport.Input;
        Output = transport.Output;
        Options = (options ?? new CriuPageServerOptions()).Validate();
        Logger = logger ?? NullLogger.Instance;
        Name = name;
        _peer = peer;
    }

    /// <summary>The session's name in logs.</summary>
    private protected string Name { get; }

    private protected PipeReader Input { get; }

    private protected PipeWriter Output { get; }

    private protected CriuPageServerOptions Options { get; }

    private protected ILogger Logger { get; }

    /// <summary>Headers read so far (<see cref="PageServerCounters.Commands"/>).</summary>
    private protected long Commands { get; private set; }

    /// <summary>Bytes answered but not flushed yet.</summary>
    private protected long Unflushed => _unflushed;

    /// <summary>What was moved so far (<see cref="PageServerCounters"/> says what each direction counts).</summary>
    public PageServerCounters Counters => new(Commands, _pagesPresent, _pagesParent, _pagesLazy, _bytes);

    /// <summary>
    /// Serves the connection until CLOSE, a violation, a failure of the other side or the end of the stream. Runs once.
    /// Throws only <see cref="OperationCanceledException"/> (when <paramref name="ct"/> is canceled).
    /// </summary>
    public async Task<PageServerResult> RunAsync(CancellationToken ct)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("a page-server session serves its connection once");
        }

        try
        {
            var result = await ServeAsync(ct).ConfigureAwait(false);
            if (result.IsCompleted)
            {
                Logger.SessionCompleted(Name, result.Counters);
            }
            else
            {
                Logger.SessionFailed(Name, result.Outcome, result.Error ?? "");
            }

            return result;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            Logger.SessionCanceled(Name, Counters);
            throw;
        }
    }

    /// <summary>Counts <paramref name="pages"/> pages that crossed with their data, <paramref name="bytes"/> bytes.</summary>
    private protected void CountPages(long pages, long bytes)
    {
        _pagesPresent += pages;
        _bytes += bytes;
    }

    /// <summary>Counts <paramref name="pages"/> pages of a run sent as a header only: in the parent image, or lazy.</summary>
    private protected void CountMarks(PagemapFlags flags, long pages)
    {
        if ((flags & PagemapFlags.Parent) != 0)
        {
            _pagesParent += pages;
        }
        else
        {
            _pagesLazy += pages;
        }
    }

    /// <summary>Counts <paramref name="bytes"/> written into <see cref="Output"/>'s span as sent (they go out with the next flush).</summary>
    private protected void Advance(int bytes)
    {
        Output.Advance(bytes);
        _unflushed += bytes;
    }

    /// <summary>Writes an int32 answer (PARENT's has_parent, CLOSE's 0), little-endian as <see cref="PageServerIov"/> is.</summary>
    private protected void WriteInt32(int value)
    {
        BinaryPrimitives.WriteInt32LittleEndian(Output.GetSpan(sizeof(int)), value);
        Advance(sizeof(int));
    }

    /// <summary>Answers CLOSE / FORCE_CLOSE with int32 0 and ends the session as completed once that is sent.</summary>
    private protected async ValueTask<PageServerResult?> AcknowledgeCloseAsync(string name, CancellationToken ct)
    {
        WriteInt32(0);
        return await FlushAsync($"the {name} answer", ct).ConfigureAwait(false) ?? PageServerResult.Completed(Counters);
    }

    private protected async ValueTask<PageServerResult?> FlushAsync(string what, CancellationToken ct)
    {
        FlushResult flushed;
        try
        {
            flushed = await Output.FlushAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!IsOwnCancellation(ex, ct))
        {
            return Fail(PageServerOutcome.TransportFailed, $"sending {what} to {_peer} failed: {ex.Message}");
        }

        if (flushed.IsCanceled)
        {
            throw new OperationCanceledException($"sending {what} was canceled");
        }

        _unflushed = 0;
        return flushed.IsCompleted ? Fail(PageServerOutcome.PeerClosed, $"{_peer} stopped reading before {what}") : null;
    }

    /// <summary>
    /// The count and range of a run or request (<paramref name="what"/>): at most
    /// <see cref="CriuPageServerOptions.MaxPagesPerIov"/> pages, page-aligned, not empty and in user space; null when they are.
    /// </summary>
    private protected PageServerResult? CheckRange(PageServerIov iov, string name, PageTarget target, string what)
    {
        if (iov.NrPages > Options.MaxPagesPerIov)
        {
            return Violation($"{name} of nr_pages {iov.NrPages} at 0x{iov.Vaddr:x} for {target}, more than the limit of {Options.MaxPagesPerIov} pages per header");
        }

        if (!PageFacts.IsValidRange(iov.Vaddr, iov.NrPages))
        {
            return Violation($"{name} with an invalid range for {target}: vaddr 0x{iov.Vaddr:x}, nr_pages {iov.NrPages} " +
                $"(a {what} is page-aligned, not empty, and below 0x{PageFacts.MaxUserAddress:x})");
        }

        return null;
    }

    /// <summary>CLOSE is the last thing on the wire: a violation when <paramref name="bytesAfter"/> bytes follow it, else null.</summary>
    private protected PageServerResult? CheckNothingAfter(string name, long bytesAfter) =>
        bytesAfter > 0 ? Violation($"{bytesAfter} bytes after {name}; nothing may follow it") : null;

    /// <summary>A command number the protocol does not have.</summary>
    private protected PageServerResult UnknownCommand(PageServerIov iov) => Violation($"unknown command {iov.Command} (cmd 0x{iov.Cmd:x8})");

    /// <summary>A read from the peer failed.</summary>
    private protected PageServerResult ReceiveFailed(Exception ex) =>
        Fail(PageServerOutcome.TransportFailed, $"receiving from {_peer} failed: {ex.Message}");

    private protected static bool IsOwnCancellation(Exception ex, CancellationToken ct) => ex is OperationCanceledException && ct.IsCancellationRequested;

    private protected PageServerResult Fail(PageServerOutcome outcome, string error) => PageServerResult.Failed(outcome, error, Counters);

    private protected PageServerResult Violation(string error) => Fail(PageServerOutcome.ProtocolError, "criu sent " + error);
}

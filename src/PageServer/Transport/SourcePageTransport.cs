using Microsoft.Extensions.Logging;
using Migration.Engine.Network;
using Migration.Engine.Processes;
using Migration.Engine.Security;
using Migration.PageServer.Criu;
using Migration.PageServer.Streaming;

namespace Migration.PageServer.Transport;

/// <summary>
/// The source side of page transfer: a page server on one end of a socket pair whose other end CRIU's dump inherits
/// (no port), and the page stream that carries what it receives to the target's store. Completion is CRIU's session ending with the
/// target's acknowledgement of the round (pages durable there) and the stream closed cleanly.
/// </summary>
public sealed partial class SourcePageTransport : IPageTransport
{
    private readonly System.Net.Sockets.Socket _criuSide;
    private readonly System.Net.Sockets.Socket _ourSide;
    private readonly ILogger _sessionLogger;
    private readonly PageStreamSender _sender;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _cts = new();
    private readonly CutoverSink _cutover;
    private readonly TaskCompletionSource _withoutCriu = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private int _criuTaken;

    private SourcePageTransport(System.Net.Sockets.Socket ourSide, System.Net.Sockets.Socket criuSide, PageStreamSender sender, ILogger logger,
        ILogger sessionLogger)
    {
        _ourSide = ourSide;
        _criuSide = criuSide;
        _sessionLogger = sessionLogger;
        _sender = sender;
        _logger = logger;
        _cutover = new CutoverSink(sender);
        Completion = RunAsync();
    }

    public System.Net.Sockets.Socket TakeCriuConnection() =>
        Interlocked.Exchange(ref _criuTaken, 1) == 0 ? _criuSide : throw new InvalidOperationException("CRIU's page-server connection was already taken");

    public Task<PageTransferStats> Completion { get; }

    public static async Task<IPageTransport> StartAsync(Endpoint target, TokenCredentials credentials, string migrationId,
        ILoggerFactory loggers, CancellationToken ct, PageFrameWriterOptions? codec = null)
    {
        var connection = await PageChannel.ConnectAsync(target, credentials, ct).ConfigureAwait(false);
        var transport = await OverAsync(connection, migrationId, loggers, codec).ConfigureAwait(false);
        LogStarted(transport._logger, target.ToString());
        return transport;
    }

    /// <summary>The transport over a page-stream connection that is already open and authenticated (it is the transport's now).</summary>
    internal static async Task<SourcePageTransport> OverAsync(Stream connection, string migrationId, ILoggerFactory loggers, PageFrameWriterOptions? codec)
    {
        var sender = new PageStreamSender(connection, migrationId, codec);
        System.Net.Sockets.Socket ours, criuSide;
        try
        {
            (ours, criuSide) = Engine.Native.SocketPair.Connected();
        }
        catch
        {
            await sender.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return new SourcePageTransport(ours, criuSide, sender, loggers.CreateLogger<SourcePageTransport>(), loggers.CreateLogger<CriuPageServerSession>());
    }

    public PageTransferStats Snapshot() => ToStats(_sender.Stats);

    public ValueTask OpenTaskAsync(int vpid, CancellationToken ct) =>
        new(_sender.OpenAsync(Task(vpid), ct).AsTask());

    public ValueTask SendPagesAsync(int vpid, ulong vaddr, ReadOnlyMemory<byte> pages, CancellationToken ct) =>
        _sender.WritePagesAsync(Task(vpid), vaddr, (uint)(pages.Length / Pages.PageFacts.PageSize), Engine.Images.PagemapFlags.Present,
            new System.Buffers.ReadOnlySequence<byte>(pages), ct);

    public async ValueTask SendParentAsync(int vpid, ulong vaddr, ulong nrPages, CancellationToken ct)
    {
        for (ulong done = 0; done < nrPages;)
        {
            uint n = (uint)Math.Min(nrPages - done, PageStreamProtocol.MaxRunPages);
            await _sender.WritePagesAsync(Task(vpid), vaddr + done * Pages.PageFacts.PageSize, n, Engine.Images.PagemapFlags.Parent,
                System.Buffers.ReadOnlySequence<byte>.Empty, ct).ConfigureAwait(false);
            done += n;
        }
    }

    public ValueTask CompleteRoundAsync(CancellationToken ct) => _sender.CompleteRoundAsync(ct);

    public async Task<PageTransferStats> FinishWithoutCriuAsync(CancellationToken ct)
    {
        _withoutCriu.TrySetResult();
        return await Completion.WaitAsync(ct).ConfigureAwait(false);
    }

    public void SetCutoverFilter(ICutoverFilter filter) => _cutover.Filter = filter;

    private static Pages.PageTarget Task(int vpid) => new((uint)vpid, Pages.PageImageType.Pid);

    /// <summary>
    /// Between CRIU's final dump and the stream: with a pre-copy filter, pages the target holds current go as PARENT
    /// runs (the target keeps its copy); the rest as they are. Without one, everything passes.
    /// </summary>
    private sealed class CutoverSink(PageStreamSender sender) : Pages.IPageSink
    {
        private bool _started;

        public ICutoverFilter? Filter { get; set; }

        /// <summary>Pages of CRIU's dump the target already held (sent as PARENT), and pages sent with data.</summary>
        public long CleanPages { get; private set; }

        public long ChangedPages { get; private set; }

        public async ValueTask<bool> OpenAsync(Pages.PageTarget target, CancellationToken ct)
        {
            if (!_started && Filter is { } f)
            {
                // CRIU sends pages only with every task frozen: the final harvest is exact from here on.
                f.OnFinalDumpStarted();
            }

            _started = true;
            await sender.OpenAsync(target, ct).ConfigureAwait(false);
            return false;
        }

        public async ValueTask WritePagesAsync(Pages.PageTarget target, ulong vaddr, uint nrPages, Engine.Images.PagemapFlags flags,
            System.Buffers.ReadOnlySequence<byte> data, CancellationToken ct)
        {
            // CRIU marks anonymous pages PRESENT|LAZY even in a full dump (they could be restored lazily): any run with data is filtered.
            if (Filter is not { } f || (flags & Engine.Images.PagemapFlags.Present) == 0 || target.Type != Pages.PageImageType.Pid)
            {
                await sender.WritePagesAsync(target, vaddr, nrPages, flags, data, ct).ConfigureAwait(false);
                return;
            }

            // Split into runs of clean (PARENT, no data) and changed (PRESENT) pages.
            const int page = Pages.PageFacts.PageSize;
            uint i = 0;
            while (i < nrPages)
            {
                bool clean = f.IsClean((int)target.Id, vaddr + (ulong)i * page);
                uint j = i + 1;
                while (j < nrPages && f.IsClean((int)target.Id, vaddr + (ulong)j * page) == clean)
                {
                    j++;
                }

                ulong at = vaddr + (ulong)i * page;
                if (clean)
                {
                    CleanPages += j - i;
                    await sender.WritePagesAsync(target, at, j - i, Engine.Images.PagemapFlags.Parent, System.Buffers.ReadOnlySequence<byte>.Empty, ct).ConfigureAwait(false);
                }
                else
                {
                    ChangedPages += j - i;
                    await sender.WritePagesAsync(target, at, j - i, flags, data.Slice((long)i * page, (long)(j - i) * page), ct).ConfigureAwait(false);
                }

                i = j;
            }
        }

        public ValueTask CompleteRoundAsync(CancellationToken ct) => sender.CompleteRoundAsync(ct);
    }

    private async Task<PageTransferStats> RunAsync()
    {
        // CRIU's dump connects only after pre-copy, which may take long: the migration's own bounds apply.
        using var session = CancellationTokenSource.CreateLinkedTokenSource(_cts.Token);
        var serve = CriuPageServerConnection.ServeAsync(_ourSide, _cutover, new CriuPageServerOptions(), _sessionLogger, session.Token);
        if (await System.Threading.Tasks.Task.WhenAny(serve, _withoutCriu.Task).ConfigureAwait(false) == serve)
        {
            var result = await serve.ConfigureAwait(false);
            if (!result.IsCompleted)
            {
                await _sender.AbortAsync($"source page server: {result.Error}").ConfigureAwait(false);
                throw new IOException($"page transfer failed: {result.Error}");
            }
        }
        else
        {
            // CRIU will not send pages (lazy dump): end the page server; the engine's own rounds carried every page.
            await session.CancelAsync().ConfigureAwait(false);
            try
            {
                var ignored = await serve.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or System.Net.Sockets.SocketException)
            {
                // The session never began: canceling it ends it this way.
            }
        }

        await _sender.FinishAsync(_cts.Token).ConfigureAwait(false);
        if (_cutover.Filter is not null)
        {
            LogCutover(_logger, _cutover.CleanPages, _cutover.ChangedPages);
        }

        var stats = ToStats(_sender.Stats);
        LogCompleted(_logger, stats.Pages, stats.ZeroPages, stats.WireBytes, stats.CompressionRatio, stats.Elapsed.TotalMilliseconds);
        return stats;
    }

    private PageTransferStats ToStats(PageStreamStats s) => new()
    {
        Pages = (ulong)s.Pages,
        ZeroPages = (ulong)s.ZeroPages,
        RawBytes = (ulong)(s.RawBytes - s.ZeroPages * 4096),
        WireBytes = (ulong)s.WireBytes,
        Rounds = _sender.RoundsAcknowledged,
        Elapsed = _sender.Elapsed,
    };

    public async ValueTask DisposeAsync()
    {
        _cts.Cancel();
        if (Interlocked.Exchange(ref _criuTaken, 1) == 0)
        {
            _criuSide.Dispose();
        }

        try
        {
            await Completion.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or PageStreamException)
        {
            // The migration already saw this failure through Completion (or no longer cares: it is over).
        }

        await _sender.DisposeAsync().ConfigureAwait(false);
        _ourSide.Dispose();
        _cts.Dispose();
    }

    [LoggerMessage(EventId = 952, Level = LogLevel.Information, Message = "final dump: {Clean} pages already on the target (not sent again), {Changed} pages sent")]
    private static partial void LogCutover(ILogger logger, long clean, long changed);

    [LoggerMessage(EventId = 950, Level = LogLevel.Debug, Message = "page server for CRIU on a socket pair (no port), streaming to {Target}")]
    private static partial void LogStarted(ILogger logger, string target);

    [LoggerMessage(EventId = 951, Level = LogLevel.Information, Message = "page transfer complete: {Pages} pages ({Zero} zero), {Wire} bytes on the wire, ratio {Ratio:0.00}, {Ms:0} ms")]
    private static partial void LogCompleted(ILogger logger, ulong pages, ulong zero, ulong wire, double ratio, double ms);
}

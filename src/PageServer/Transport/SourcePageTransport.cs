using System.Net;
using Microsoft.Extensions.Logging;
using Migration.Engine.Migration;
using Migration.Engine.Security;
using Migration.PageServer.Control;
using Migration.PageServer.Criu;
using Migration.PageServer.Streaming;

namespace Migration.PageServer.Transport;

/// <summary>
/// The source side of page transfer: a page server on loopback that CRIU's dump connects to, and the page
/// stream that carries what it receives to the target's store. Completion is CRIU's session ending with the
/// target's acknowledgement of the round (pages durable there) and the stream closed cleanly.
/// </summary>
public sealed partial class SourcePageTransport : IPageTransport
{
    private readonly CriuPageServerListener _listener;
    private readonly PageStreamSender _sender;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _cts = new();

    private SourcePageTransport(CriuPageServerListener listener, PageStreamSender sender, ILogger logger)
    {
        _listener = listener;
        _sender = sender;
        _logger = logger;
        Completion = RunAsync();
    }

    public string Address => _listener.LocalEndPoint.Address.ToString();

    public int Port => _listener.Port;

    public Task<PageTransferStats> Completion { get; }

    public static async Task<IPageTransport> StartAsync(Endpoint target, TokenCredentials credentials, string migrationId,
        ILoggerFactory loggers, CancellationToken ct, PageFrameWriterOptions? codec = null)
    {
        var connection = await PageChannel.ConnectAsync(target, credentials, ct).ConfigureAwait(false);
        var sender = new PageStreamSender(connection, migrationId, codec);
        CriuPageServerListener listener;
        try
        {
            // Loopback only: whoever connects to this port feeds the migration's pages.
            listener = CriuPageServerListener.Start(new IPEndPoint(IPAddress.Loopback, 0), logger: loggers.CreateLogger<CriuPageServerListener>());
        }
        catch
        {
            await sender.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        var logger = loggers.CreateLogger<SourcePageTransport>();
        LogStarted(logger, listener.Port, target.ToString());
        return new SourcePageTransport(listener, sender, logger);
    }

    public PageTransferStats Snapshot() => ToStats(_sender.Stats);

    private async Task<PageTransferStats> RunAsync()
    {
        var result = await _listener.ServeAsync(_sender, _cts.Token).ConfigureAwait(false);
        if (!result.IsCompleted)
        {
            await _sender.AbortAsync($"source page server: {result.Error}").ConfigureAwait(false);
            throw new IOException($"page transfer failed: {result.Error}");
        }

        await _sender.FinishAsync(_cts.Token).ConfigureAwait(false);
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
        await _listener.DisposeAsync().ConfigureAwait(false);
        try
        {
            await Completion.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or PageStreamException)
        {
            // The migration already saw this failure through Completion (or no longer cares: it is over).
        }

        await _sender.DisposeAsync().ConfigureAwait(false);
        _cts.Dispose();
    }

    [LoggerMessage(EventId = 950, Level = LogLevel.Debug, Message = "page server for CRIU on 127.0.0.1:{Port}, streaming to {Target}")]
    private static partial void LogStarted(ILogger logger, int port, string target);

    [LoggerMessage(EventId = 951, Level = LogLevel.Information, Message = "page transfer complete: {Pages} pages ({Zero} zero), {Wire} bytes on the wire, ratio {Ratio:0.00}, {Ms:0} ms")]
    private static partial void LogCompleted(ILogger logger, ulong pages, ulong zero, ulong wire, double ratio, double ms);
}

using System.Net;
using System.Net.Sockets;
using Migration.Engine.Security;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Migration.PageServer.Transport;
using Migration.Target.Incoming;

namespace Migration.Target;

/// <summary>Where the agent takes page streams: the control API's address, its own port.</summary>
public sealed record PageStreamOptions(IPAddress[] Addresses, int Port);

/// <summary>
/// Accepts page streams (one per migration): authenticates the peer with the token (TLS, or the loopback
/// proof), then the receiver reads the migration id from the stream's HELLO and fills that migration's page
/// store. A broken or hostile stream ends only itself.
/// </summary>
public sealed partial class PageStreamListener(
    PageStreamOptions options, TokenCredentials credentials, TargetAgent agent, ILogger<PageStreamListener> logger) : BackgroundService
{
    /// <summary>Connections handled at once; more wait in the kernel's backlog.</summary>
    public const int MaxConcurrentStreams = 8;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var listeners = options.Addresses.Select(a =>
        {
            var l = new Socket(a.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            l.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            l.Bind(new IPEndPoint(a, options.Port));
            l.Listen(16);
            return l;
        }).ToArray();
        LogListening(string.Join(", ", options.Addresses.Select(a => $"{a}:{options.Port}")));
        using var slots = new SemaphoreSlim(MaxConcurrentStreams);
        try
        {
            await Task.WhenAll(listeners.Select(l => AcceptLoopAsync(l, slots, stoppingToken))).ConfigureAwait(false);
        }
        finally
        {
            foreach (var l in listeners)
            {
                l.Dispose();
            }
        }
    }

    private async Task AcceptLoopAsync(Socket listener, SemaphoreSlim slots, CancellationToken ct)
    {
        var running = new List<Task>();
        while (!ct.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                await slots.WaitAsync(ct).ConfigureAwait(false);
                socket = await listener.AcceptAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            running.RemoveAll(t => t.IsCompleted);
            running.Add(HandleAsync(socket, slots, ct));
        }

        await Task.WhenAll(running).ConfigureAwait(false);
    }

    private async Task HandleAsync(Socket socket, SemaphoreSlim slots, CancellationToken ct)
    {
        var peer = socket.RemoteEndPoint?.ToString() ?? "?";
        try
        {
            await using var stream = await PageChannel.AcceptAsync(socket, credentials, ct).ConfigureAwait(false);
            var result = await PageStreamReceiver.RunAsync(stream, Resolve, ct).ConfigureAwait(false);
            if (result.Succeeded)
            {
                LogStreamDone(peer, result.MigrationId ?? "?", result.Pages, result.Rounds);
            }
            else
            {
                LogStreamFailed(peer, result.MigrationId ?? "?", result.Error ?? "unknown error");
                if (result.MigrationId is { } id)
                {
                    agent.FailPages(id, result.Error ?? "page stream failed");
                    (agent.Migrations.FirstOrDefault(m => m.Id == id)?.Pages as PageStoreAttachment)?.Fail(result.Error ?? "page stream failed");
                    agent.AbandonIfReceiving(id, $"its page stream broke: {result.Error ?? "unknown error"}");
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            LogShutdown(peer);
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or SocketException or OperationCanceledException)
        {
            // An unauthenticated or broken connection: refused, nothing of it reached a store.
            LogRefused(peer, ex.Message);
        }
        finally
        {
            slots.Release();
        }
    }

    /// <summary>The page store of a migration that is receiving, claimed for this one stream.</summary>
    private IPageSink Resolve(string migrationId)
    {
        var m = agent.Get(migrationId);
        if (m.State != IncomingState.Receiving || m.Pages is not PageStoreAttachment pages)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"migration {m.Id} takes no page stream ({m.State.ToString().ToLowerInvariant()})");
        }

        var sink = pages.Claim();
        return agent.Options.Faults.Contains(Faults.CutPages) ? new FailingSink(sink, afterBatches: 64) : sink;
    }

    /// <summary>Fault injection: a sink that fails part way, as a full disk or a broken store would.</summary>
    private sealed class FailingSink(IPageSink inner, int afterBatches) : IPageSink, PageServer.Transport.IProgressReportingSink
    {
        private int _batches;

        public PageServer.Transport.PageStreamProgress? Progress => (inner as PageServer.Transport.IProgressReportingSink)?.Progress;

        public ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct) => inner.OpenAsync(target, ct);

        public ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, Engine.Images.PagemapFlags flags,
            System.Buffers.ReadOnlySequence<byte> data, CancellationToken ct) =>
            ++_batches > afterBatches
                ? throw new IOException($"fault injected ({Faults.CutPages}): page store failed after {afterBatches} batches")
                : inner.WritePagesAsync(target, vaddr, nrPages, flags, data, ct);

        public ValueTask CompleteRoundAsync(CancellationToken ct) => inner.CompleteRoundAsync(ct);
    }

    [LoggerMessage(EventId = 700, Level = LogLevel.Information, Message = "page streams accepted on {Endpoints}")]
    private partial void LogListening(string endpoints);

    [LoggerMessage(EventId = 701, Level = LogLevel.Information, Message = "page stream from {Peer} for migration {Id} done: {Pages} pages in {Rounds} rounds")]
    private partial void LogStreamDone(string peer, string id, ulong pages, int rounds);

    [LoggerMessage(EventId = 702, Level = LogLevel.Warning, Message = "page stream from {Peer} for migration {Id} failed: {Error}")]
    private partial void LogStreamFailed(string peer, string id, string error);

    [LoggerMessage(EventId = 703, Level = LogLevel.Warning, Message = "page stream connection from {Peer} refused: {Reason}")]
    private partial void LogRefused(string peer, string reason);

    [LoggerMessage(EventId = 704, Level = LogLevel.Information, Message = "page stream from {Peer} ended by shutdown")]
    private partial void LogShutdown(string peer);
}

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
    /// <summary>Authenticated page streams at once (the agent takes at most 4 migrations at a time: room to spare).</summary>
    public const int MaxConcurrentStreams = 8;

    /// <summary>
    /// Connections still in their TLS handshake at once, in all and from one address. Anyone can connect; only the
    /// token's holder gets past the handshake, which has <see cref="PageChannel.HandshakeTimeout"/>. Past either bound a
    /// new connection is closed at once, so that idle or slow strangers can neither pile up nor, from their own
    /// address, keep a source from connecting (as sshd's MaxStartups).
    /// </summary>
    public const int MaxPendingHandshakes = 64;

    /// <inheritdoc cref="MaxPendingHandshakes"/>
    public const int MaxPendingHandshakesPerAddress = 8;

    private readonly System.Collections.Concurrent.ConcurrentDictionary<IPAddress, int> _pendingByAddress = new();

    /// <summary>Refusals are logged at most this often (with their count): a flood of connections is not a flood of log lines.</summary>
    private static readonly TimeSpan RefusalLogInterval = TimeSpan.FromSeconds(10);

    private int _pending;
    private int _streams;
    private long _refusedSinceLog;
    private long _lastRefusalLog;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var listeners = options.Addresses.Select(a =>
        {
            var l = new Socket(a.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            l.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            l.Bind(new IPEndPoint(a, options.Port));
            l.Listen(64);
            return l;
        }).ToArray();
        LogListening(string.Join(", ", options.Addresses.Select(a => $"{a}:{options.Port}")));
        try
        {
            await Task.WhenAll(listeners.Select(l => AcceptLoopAsync(l, stoppingToken))).ConfigureAwait(false);
        }
        finally
        {
            foreach (var l in listeners)
            {
                l.Dispose();
            }
        }
    }

    private async Task AcceptLoopAsync(Socket listener, CancellationToken ct)
    {
        var running = new List<Task>();
        while (!ct.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (SocketException ex)
            {
                // Out of descriptors, or a connection reset before it was taken: the listener goes on.
                LogAcceptFailed(ex.Message);
                await Task.Delay(100, ct).ConfigureAwait(false);
                continue;
            }

            var from = (socket.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
            if (Interlocked.Increment(ref _pending) > MaxPendingHandshakes)
            {
                Interlocked.Decrement(ref _pending);
                Refuse(socket, $"{MaxPendingHandshakes} connections are already in their handshake");
                continue;
            }

            if (_pendingByAddress.AddOrUpdate(from, 1, (_, n) => n + 1) > MaxPendingHandshakesPerAddress)
            {
                Released(from);
                Refuse(socket, $"{MaxPendingHandshakesPerAddress} connections from {from} are already in their handshake");
                continue;
            }

            running.RemoveAll(t => t.IsCompleted);
            running.Add(HandleAsync(socket, ct));
        }

        await Task.WhenAll(running).ConfigureAwait(false);
    }

    /// <summary>Closes <paramref name="socket"/> unserved, logging refusals at most every <see cref="RefusalLogInterval"/>.</summary>
    private void Refuse(Socket socket, string reason)
    {
        var peer = socket.RemoteEndPoint?.ToString() ?? "?";
        socket.Dispose();
        long refused = Interlocked.Increment(ref _refusedSinceLog);
        long now = Environment.TickCount64;
        long last = Interlocked.Read(ref _lastRefusalLog);
        if (now - last >= (long)RefusalLogInterval.TotalMilliseconds && Interlocked.CompareExchange(ref _lastRefusalLog, now, last) == last)
        {
            Interlocked.Add(ref _refusedSinceLog, -refused);
            LogRefused(peer, refused > 1 ? $"{reason} ({refused} connections refused since the last such line)" : reason);
        }
    }

    /// <summary>A handshake from <paramref name="from"/> ended (or was never started): its places are free again.</summary>
    private void Released(IPAddress from)
    {
        Interlocked.Decrement(ref _pending);
        while (_pendingByAddress.TryGetValue(from, out int n))
        {
            if (n <= 1 ? _pendingByAddress.TryRemove(KeyValuePair.Create(from, n)) : _pendingByAddress.TryUpdate(from, n - 1, n))
            {
                return;
            }
        }
    }

    private async Task HandleAsync(Socket socket, CancellationToken ct)
    {
        var peer = socket.RemoteEndPoint?.ToString() ?? "?";
        var from = (socket.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
        bool handshaking = true;
        bool streaming = false;
        try
        {
            await using var stream = await PageChannel.AcceptAsync(socket, credentials, ct).ConfigureAwait(false);
            Released(from);
            handshaking = false;
            if (Interlocked.Increment(ref _streams) > MaxConcurrentStreams)
            {
                Interlocked.Decrement(ref _streams);
                LogRefused(peer, $"{MaxConcurrentStreams} page streams are already in progress");
                return;
            }

            streaming = true;
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
        catch (Exception ex) when (handshaking && ex is OperationCanceledException or IOException { InnerException: OperationCanceledException })
        {
            LogRefused(peer, $"no handshake within {PageChannel.HandshakeTimeout.TotalSeconds:0} s");
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or SocketException or OperationCanceledException)
        {
            // An unauthenticated, slow or broken connection: refused, nothing of it reached a store.
            LogRefused(peer, ex.Message);
        }
        finally
        {
            if (handshaking)
            {
                Released(from);
                socket.Dispose();
            }

            if (streaming)
            {
                Interlocked.Decrement(ref _streams);
            }
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

    [LoggerMessage(EventId = 705, Level = LogLevel.Warning, Message = "page stream listener: accept failed: {Message}")]
    private partial void LogAcceptFailed(string message);
}

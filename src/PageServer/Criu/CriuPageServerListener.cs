using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Criu;

/// <summary>
/// A TCP endpoint CRIU connects to as its page server (<c>--page-server --address A --port P</c>). It binds at
/// <see cref="Start"/> (port 0 picks a free port: see <see cref="Port"/>), accepts exactly one connection (CRIU opens
/// one per dump or lazy restore), closes the listening socket right after, and serves that connection with one session.
/// Disposing it closes both sockets and cancels a running session (which then ends in <see cref="OperationCanceledException"/>).
/// </summary>
public sealed class CriuPageServerListener : IAsyncDisposable, IDisposable
{
    private readonly Socket _listenSocket;
    private readonly CriuPageServerOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    // Never disposed: it has no timer, and a session starting during Dispose may still link to its token.
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private Socket? _connection;
    private Task<PageServerResult>? _serving;
    private bool _begun;
    private bool _disposed;

    private CriuPageServerListener(Socket listenSocket, CriuPageServerOptions options, ILogger logger, TimeProvider time)
    {
        _listenSocket = listenSocket;
        _options = options;
        _logger = logger;
        _time = time;
        LocalEndPoint = (IPEndPoint)listenSocket.LocalEndPoint!;
    }

    /// <summary>The bound address and port (the real port when 0 was asked for).</summary>
    public IPEndPoint LocalEndPoint { get; }

    public int Port => LocalEndPoint.Port;

    /// <summary>
    /// Binds and listens on <paramref name="endpoint"/>; throws <see cref="SocketException"/> when it cannot.
    /// <paramref name="time"/> runs the accept timeout (the system clock by default).
    /// </summary>
    public static CriuPageServerListener Start(IPEndPoint endpoint, CriuPageServerOptions? options = null, ILogger? logger = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        options = (options ?? new CriuPageServerOptions()).Validate();
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(endpoint);

            // One connection is expected; a backlog of one is enough for it.
            socket.Listen(1);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var listener = new CriuPageServerListener(socket, options, logger ?? NullLogger.Instance, time ?? TimeProvider.System);
        listener._logger.Listening(listener.LocalEndPoint.ToString());
        return listener;
    }

    /// <summary>Accepts CRIU's dump connection and serves it into <paramref name="sink"/> (<see cref="CriuPageServerSession"/>).</summary>
    public Task<PageServerResult> ServeAsync(IPageSink sink, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(sink);
        return Begin((pipe, token) => new CriuPageServerSession(pipe, sink, _options, _logger).RunAsync(token), ct);
    }

    /// <summary>Accepts the lazy-pages daemon's connection and answers its GETs from <paramref name="source"/> (<see cref="CriuLazyPageServerSession"/>).</summary>
    public Task<PageServerResult> ServeLazyAsync(IPageSource source, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Begin((pipe, token) => new CriuLazyPageServerSession(pipe, source, _options, _logger).RunAsync(token), ct);
    }

    private Task<PageServerResult> Begin(Func<IDuplexPipe, CancellationToken, Task<PageServerResult>> session, CancellationToken ct)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_begun)
            {
                throw new InvalidOperationException("a page-server listener serves one connection");
            }

            _begun = true;
        }

        // Started outside the lock: the session may run a while before its first real wait. A Dispose in between
        // finds the stop token canceled, so the accept ends at once.
        var serving = AcceptAndServeAsync(session, ct);
        lock (_gate)
        {
            _serving = serving;
        }

        return serving;
    }

    private async Task<PageServerResult> AcceptAndServeAsync(Func<IDuplexPipe, CancellationToken, Task<PageServerResult>> session, CancellationToken ct)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _stop.Token);
        Socket connection;
        using (var timeout = new CancellationTokenSource(_options.AcceptTimeout, _time))
        using (var accept = CancellationTokenSource.CreateLinkedTokenSource(linked.Token, timeout.Token))
        {
            try
            {
                connection = await _listenSocket.AcceptAsync(accept.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !linked.IsCancellationRequested)
            {
                _logger.AcceptTimedOut(LocalEndPoint.ToString(), _options.AcceptTimeout);
                return PageServerResult.Failed(PageServerOutcome.NoConnection,
                    $"no connection to the page server on {LocalEndPoint} within {_options.AcceptTimeout}: criu did not connect (see its log)", default);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException && !linked.IsCancellationRequested)
            {
                return PageServerResult.Failed(PageServerOutcome.TransportFailed, $"accepting on {LocalEndPoint} failed: {ex.Message}", default);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // Dispose closed the socket under the accept: that is a cancellation.
                throw new OperationCanceledException("the page-server listener was disposed", ex, linked.Token);
            }
            finally
            {
                // Exactly one connection: nobody else gets in once CRIU's is here.
                _listenSocket.Dispose();
            }
        }

        lock (_gate)
        {
            if (_disposed)
            {
                connection.Dispose();
                throw new OperationCanceledException("the page-server listener was disposed", null, linked.Token);
            }

            _connection = connection;
        }

        _logger.Accepted(LocalEndPoint.ToString(), connection.RemoteEndPoint?.ToString() ?? "?");

        // CRIU waits for each small answer (OPEN2, PARENT, CLOSE) before it goes on: send them at once.
        connection.NoDelay = true;
        return await CriuPageServerConnection.RunAsync(connection, _options, session, linked.Token).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        Task? serving = Stop();
        if (serving is not null)
        {
            try
            {
                await serving.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
            {
                // Dispose stopped it: the caller that started the session sees the same exception from ServeAsync.
            }
        }
    }

    /// <summary>Closes both sockets and cancels the session without waiting for it (<see cref="DisposeAsync"/> waits).</summary>
    public void Dispose() => Stop();

    private Task? Stop()
    {
        Socket? connection;
        Task? serving;
        lock (_gate)
        {
            if (_disposed)
            {
                return null;
            }

            _disposed = true;
            connection = _connection;
            serving = _serving;
        }

        _stop.Cancel();
        _listenSocket.Dispose();
        if (connection is not null)
        {
            try
            {
                // A FIN first: closing a socket with a receive still pending resets the connection, and the peer
                // should see an orderly end.
                connection.Shutdown(SocketShutdown.Both);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // The session's own shutdown came first, or the peer is gone: closing is all that is left.
            }

            connection.Dispose();
        }

        return serving;
    }

}

using System.IO.Pipelines;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Criu;

/// <summary>
/// Serves one connection that is already there as CRIU's page server: typically our end of a socket pair whose
/// other end <c>criu dump</c> inherits (<c>--page-server</c> with <c>--ps-socket</c>, the RPC's <c>ps.fd</c>). No
/// port is opened, so nothing else can connect, and pages cross one AF_UNIX hop (CRIU splices them in without a copy).
/// The session ends on CLOSE / FORCE_CLOSE, or with a failure when the peer's last copy of its end closes first (CRIU
/// died, or never got it): see <see cref="PageServerResult"/>. The connection is the session's: it is closed at the end.
/// </summary>
public static class CriuPageServerConnection
{
    /// <summary>Serves CRIU's dump on <paramref name="connection"/> into <paramref name="sink"/> (<see cref="CriuPageServerSession"/>).</summary>
    public static Task<PageServerResult> ServeAsync(Socket connection, IPageSink sink, CriuPageServerOptions? options = null,
        ILogger? logger = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(sink);
        options = (options ?? new CriuPageServerOptions()).Validate();
        logger ??= NullLogger.Instance;
        return RunAsync(connection, options, (pipe, token) => new CriuPageServerSession(pipe, sink, options, logger).RunAsync(token), ct);
    }

    /// <summary>Serves <c>criu lazy-pages</c> on <paramref name="connection"/> from <paramref name="source"/> (<see cref="CriuLazyPageServerSession"/>).</summary>
    public static Task<PageServerResult> ServeLazyAsync(Socket connection, IPageSource source, CriuPageServerOptions? options = null,
        ILogger? logger = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(source);
        options = (options ?? new CriuPageServerOptions()).Validate();
        logger ??= NullLogger.Instance;
        // Requests are 32-byte headers: reads of the pipe's default size, not of a chunk of pages (a buffer past the
        // pool's largest would be allocated for every read, on the fault path).
        return RunAsync(connection, options, (pipe, token) => new CriuLazyPageServerSession(pipe, source, options, logger).RunAsync(token), ct,
            new StreamPipeReaderOptions(leaveOpen: true));
    }

    /// <summary>Runs <paramref name="session"/> over pipes on <paramref name="connection"/>, then closes it.</summary>
    internal static async Task<PageServerResult> RunAsync(Socket connection, CriuPageServerOptions options,
        Func<IDuplexPipe, CancellationToken, Task<PageServerResult>> session, CancellationToken ct, StreamPipeReaderOptions? readerOptions = null)
    {
        var stream = new NetworkStream(connection, ownsSocket: true);
        await using (stream.ConfigureAwait(false))
        {
            // Reads of up to one chunk, so a fast sender's pages reach the sink in large pieces.
            var input = PipeReader.Create(stream, readerOptions ?? new StreamPipeReaderOptions(
                bufferSize: options.ChunkPages * PageFacts.PageSize + PageServerIov.Size, minimumReadSize: PageFacts.PageSize, leaveOpen: true));
            var output = PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true));
            try
            {
                return await session(new Duplex(input, output), ct).ConfigureAwait(false);
            }
            finally
            {
                await input.CompleteAsync().ConfigureAwait(false);
                try
                {
                    await output.CompleteAsync().ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or ObjectDisposedException)
                {
                    // Completing flushes what is left; the session has ended either way, and a peer that is gone
                    // already has its outcome (it cannot be told more).
                }

                try
                {
                    connection.Shutdown(SocketShutdown.Both);
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    // The peer may have closed first or Dispose closed it: shutting down is then moot.
                }
            }
        }
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}

using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Migration.PageServer.Criu;

/// <summary>
/// What both directions of a page-server connection share: the transport, the run-once contract with its outcome
/// logged, and the failure and flush handling. <see cref="CriuPageServerSession"/> receives a dump's pages;
/// <see cref="CriuLazyPageServerSession"/> answers a lazy restore's requests.
/// </summary>
public abstract class PageServerSession
{
    private readonly string _peer;
    private int _started;

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

    /// <summary>What was moved so far.</summary>
    public abstract PageServerCounters Counters { get; }

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

    private protected abstract Task<PageServerResult> ServeAsync(CancellationToken ct);

    /// <summary>Flushed everything written so far (hook for per-flush bookkeeping).</summary>
    private protected virtual void OnFlushed()
    {
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

        OnFlushed();
        return flushed.IsCompleted ? Fail(PageServerOutcome.PeerClosed, $"{_peer} stopped reading before {what}") : null;
    }

    /// <summary>A read from the peer failed.</summary>
    private protected PageServerResult ReceiveFailed(Exception ex) =>
        Fail(PageServerOutcome.TransportFailed, $"receiving from {_peer} failed: {ex.Message}");

    private protected static bool IsOwnCancellation(Exception ex, CancellationToken ct) => ex is OperationCanceledException && ct.IsCancellationRequested;

    private protected PageServerResult Fail(PageServerOutcome outcome, string error) => PageServerResult.Failed(outcome, error, Counters);

    private protected PageServerResult Violation(string error) => Fail(PageServerOutcome.ProtocolError, "criu sent " + error);
}

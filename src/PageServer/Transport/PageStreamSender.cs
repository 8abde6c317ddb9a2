using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;

namespace Migration.PageServer.Transport;


/// <summary>
/// The source end of a migration's page stream, as an <see cref="IPageSink"/>: pages are encoded (zero pages
/// elided, LZ4, checksummed) on the caller's thread into a pipe, a send loop drains the pipe to the
/// connection, and a receive loop takes the target's round acknowledgements. So reading from CRIU,
/// compressing and sending overlap, and the pipe's thresholds give backpressure. A round counts as delivered
/// only when the target acknowledged it durable.
/// </summary>
public sealed class PageStreamSender : IPageSink, IAsyncDisposable
{
    /// <summary>Encoded bytes buffered ahead of the link: a few batches, so compression never waits on one send.</summary>
    public const long PauseWriterBytes = 8 << 20;

    private readonly Stream _connection;
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: PauseWriterBytes, resumeWriterThreshold: PauseWriterBytes / 2, useSynchronizationContext: false));
    private readonly PageFrameWriter _writer;
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource> _acks = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sendLoop;
    private readonly Task _receiveLoop;
    private readonly TimeProvider _time;
    private readonly long _started;
    private PageStreamStats _stats;
    private ulong _round;
    private int _roundsAcked;
    private volatile string? _failure;

    public PageStreamSender(Stream connection, string migrationId, PageFrameWriterOptions? options = null, TimeProvider? time = null)
    {
        _connection = connection;
        _time = time ?? TimeProvider.System;
        _started = _time.GetTimestamp();
        _writer = new PageFrameWriter(_pipe.Writer, options);
        _writer.WriteHello(migrationId);
        _sendLoop = Task.Run(SendLoopAsync);
        _receiveLoop = Task.Run(ReceiveLoopAsync);
    }

    /// <summary>Totals so far (wire bytes include every frame).</summary>
    public PageStreamStats Stats => _stats;

    public int RoundsAcknowledged => _roundsAcked;

    public TimeSpan Elapsed => _time.GetElapsedTime(_started);

    public async ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct)
    {
        ThrowIfFailed();
        _writer.WriteOpen(target);
        await FlushAsync(ct).ConfigureAwait(false);

        // Every round is complete in the target's store: no parent images on the wire.
        return false;
    }

    public async ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct)
    {
        ThrowIfFailed();
        _stats += _writer.WritePages(target, vaddr, nrPages, flags, data);
        await FlushAsync(ct).ConfigureAwait(false);
    }

    public async ValueTask CompleteRoundAsync(CancellationToken ct)
    {
        ThrowIfFailed();
        ulong round = ++_round;
        var ack = _acks.GetOrAdd(round, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        _writer.WriteRoundEnd(round);
        await FlushAsync(ct).ConfigureAwait(false);
        await ack.Task.WaitAsync(ct).ConfigureAwait(false);
        Interlocked.Increment(ref _roundsAcked);
    }

    /// <summary>Ends the stream (END) after the last acknowledged round and waits for the bytes to leave.</summary>
    public async Task FinishAsync(CancellationToken ct)
    {
        ThrowIfFailed();
        _writer.WriteEnd();
        await FlushAsync(ct).ConfigureAwait(false);
        await _pipe.Writer.CompleteAsync().ConfigureAwait(false);
        await _sendLoop.WaitAsync(ct).ConfigureAwait(false);
        ThrowIfFailed();
    }

    /// <summary>Tells the target why the stream ends early (best effort) and closes it.</summary>
    public async Task AbortAsync(string reason)
    {
        if (_failure is null)
        {
            try
            {
                _writer.WriteError(reason);
                await _pipe.Writer.FlushAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is InvalidOperationException or IOException or ObjectDisposedException)
            {
                // The stream is already broken; the target sees the connection end instead.
            }
        }

        Fail(reason);
    }

    private async ValueTask FlushAsync(CancellationToken ct)
    {
        var result = await _pipe.Writer.FlushAsync(ct).ConfigureAwait(false);
        if (result.IsCompleted)
        {
            ThrowIfFailed();
            throw new IOException("page stream closed");
        }
    }

    private async Task SendLoopAsync()
    {
        var reader = _pipe.Reader;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(_stop.Token).ConfigureAwait(false);
                foreach (var segment in result.Buffer)
                {
                    await _connection.WriteAsync(segment, _stop.Token).ConfigureAwait(false);
                }

                await _connection.FlushAsync(_stop.Token).ConfigureAwait(false);
                reader.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }

            await reader.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
        {
            Fail($"sending to the target failed: {ex.Message}");
            await reader.CompleteAsync(ex).ConfigureAwait(false);
        }
    }

    private async Task ReceiveLoopAsync()
    {
        var reader = PipeReader.Create(_connection, new StreamPipeReaderOptions(leaveOpen: true));
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(_stop.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                try
                {
                    while (true)
                    {
                        var status = PageFrameReader.TryReadFrame(ref buffer, out var frame, out var error);
                        if (status == PageFrameStatus.Incomplete)
                        {
                            break;
                        }

                        if (status == PageFrameStatus.Invalid)
                        {
                            Fail($"target sent an invalid frame: {error.Message}");
                            return;
                        }

                        switch (frame.Kind)
                        {
                            case PageFrameKind.RoundAck:
                                _acks.GetOrAdd(frame.RoundId, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                                break;
                            case PageFrameKind.Error:
                                Fail($"target refused the page stream: {frame.ErrorMessage}");
                                return;
                            default:
                                Fail($"target sent an unexpected {frame.Kind} frame");
                                return;
                        }
                    }

                    if (result.IsCompleted)
                    {
                        if (_failure is null && _pipe.Writer is not null && _round > (ulong)_roundsAcked)
                        {
                            Fail("target closed the page stream before acknowledging the round");
                        }

                        return;
                    }
                }
                finally
                {
                    reader.AdvanceTo(buffer.Start, buffer.End);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            if (!_stop.IsCancellationRequested)
            {
                Fail($"connection to the target failed: {ex.Message}");
            }
        }
        finally
        {
            await reader.CompleteAsync().ConfigureAwait(false);
        }
    }

    private void Fail(string reason)
    {
        if (Interlocked.CompareExchange(ref _failure, reason, null) is null)
        {
            foreach (var ack in _acks.Values)
            {
                ack.TrySetException(new IOException(reason));
            }

            _stop.Cancel();
        }
    }

    private void ThrowIfFailed()
    {
        if (_failure is { } f)
        {
            throw new IOException(f);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        try
        {
            await _pipe.Writer.CompleteAsync().ConfigureAwait(false);
        }
        catch (InvalidOperationException)
        {
            // Already completed by FinishAsync.
        }

        await _connection.DisposeAsync().ConfigureAwait(false);
        await Task.WhenAll(_sendLoop, _receiveLoop).ConfigureAwait(false);
        _writer.Dispose();
        _stop.Dispose();
    }
}

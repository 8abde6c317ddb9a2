using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Threading.Channels;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;

namespace Migration.PageServer.Transport;


/// <summary>
/// The source end of a migration's page stream, as an <see cref="IPageSink"/>, in stages that overlap. With
/// compression, three: the caller (CRIU's session) copies each run into a pooled buffer and queues it; an encoder
/// task encodes the queue in order (zero pages elided, LZ4, checksummed) into a pipe; a send loop drains the pipe
/// to the connection. Without compression, encoding (zero scan, checksum, one copy) costs no more than the copy
/// that would hand the run to an encoder, so the caller encodes straight into the pipe and there are two stages.
/// A receive loop takes the target's round acknowledgements. The bounded queue and the pipe's thresholds give
/// backpressure. A round counts as delivered only when the target acknowledged it.
/// </summary>
public sealed class PageStreamSender : IPageSink, IAsyncDisposable
{
    /// <summary>
    /// Encoded bytes buffered ahead of the link: two batches, so compression never waits on one send. More only spreads
    /// the copies over memory that has left the cache (the receiver likewise holds only a few batches, <see cref="PageStreamReceiver.BatchBuffers"/>).
    /// </summary>
    public const long PauseWriterBytes = 2 << 20;

    /// <summary>Runs queued for the encoder (each up to 1 MiB): enough that CRIU's reads never wait on one batch's compression.</summary>
    public const int QueuedRuns = 8;

    private enum WorkKind
    {
        Open,
        Pages,
        RoundEnd,
        End,
    }

    /// <summary>One item for the encoder, in stream order. Pages own a pooled buffer the encoder returns.</summary>
    private readonly record struct Work(WorkKind Kind, PageTarget Target, ulong Vaddr, uint NrPages, PagemapFlags Flags, byte[]? Buffer, int Length, ulong Round);

    private readonly Stream _connection;
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: PauseWriterBytes, resumeWriterThreshold: PauseWriterBytes / 2, useSynchronizationContext: false));
    private readonly PageFrameWriter _writer;
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource> _acks = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Channel<Work> _queue = Channel.CreateBounded<Work>(new BoundedChannelOptions(QueuedRuns) { SingleReader = true, SingleWriter = true });
    private readonly bool _inline;
    private CancellationTokenSource? _inlineStop;
    private CancellationToken _inlineStopFor;
    private readonly Task _encodeLoop;
    private readonly Task _sendLoop;
    private readonly Task _receiveLoop;
    private readonly TimeProvider _time;
    private readonly long _started;
    private PageStreamStats _stats;
    private ulong _round;
    private int _roundsAcked;
    private volatile string? _failure;

    /// <summary>How long the target may take no byte and acknowledge no round while the sender waits on it.</summary>
    public static readonly TimeSpan DefaultStallTimeout = TimeSpan.FromSeconds(30);

    private readonly TimeSpan _stallTimeout;
    private readonly ITimer _watchdog;
    private long _lastProgress;
    private int _writing;

    /// <param name="stallTimeout">
    /// A target that, while the sender waits on it (a write in flight, a round not yet acknowledged), takes no byte
    /// and acknowledges nothing for this long fails the stream: it is stalled (stopped, hung) or unreachable with the
    /// connection still up, which TCP alone reports only after many minutes. Default <see cref="DefaultStallTimeout"/>.
    /// </param>
    public PageStreamSender(Stream connection, string migrationId, PageFrameWriterOptions? options = null, TimeProvider? time = null,
        TimeSpan? stallTimeout = null)
    {
        _connection = connection;
        _time = time ?? TimeProvider.System;
        _started = _time.GetTimestamp();
        _stallTimeout = stallTimeout ?? DefaultStallTimeout;
        _lastProgress = _started;
        var period = TimeSpan.FromTicks(Math.Clamp(_stallTimeout.Ticks / 4, TimeSpan.TicksPerMillisecond * 10, TimeSpan.TicksPerSecond));
        _watchdog = _time.CreateTimer(_ => CheckStall(), null, period, period);
        _writer = new PageFrameWriter(_pipe.Writer, options);
        _writer.WriteHello(migrationId);
        _inline = options?.DisableCompression == true;
        _encodeLoop = _inline ? Task.CompletedTask : Task.Run(EncodeLoopAsync);
        _sendLoop = Task.Run(SendLoopAsync);
        _receiveLoop = Task.Run(ReceiveLoopAsync);
    }

    /// <summary>Totals so far (wire bytes include every frame).</summary>
    public PageStreamStats Stats => _stats;

    public int RoundsAcknowledged => _roundsAcked;

    public TimeSpan Elapsed => _time.GetElapsedTime(_started);

    public async ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct)
    {
        await EnqueueAsync(new Work(WorkKind.Open, target, 0, 0, 0, null, 0, 0), ct).ConfigureAwait(false);

        // Every round is complete in the target's store: no parent images on the wire.
        return false;
    }

    public async ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct)
    {
        if (_inline)
        {
            await EncodeInlineAsync(new Work(WorkKind.Pages, target, vaddr, nrPages, flags, null, 0, 0), data, ct).ConfigureAwait(false);
            return;
        }

        byte[]? buffer = null;
        if (!data.IsEmpty)
        {
            // The data is valid only during this call: copy it (about 0.1 ms per MiB) so encoding can run behind.
            buffer = ArrayPool<byte>.Shared.Rent(checked((int)data.Length));
            data.CopyTo(buffer);
        }

        await EnqueueAsync(new Work(WorkKind.Pages, target, vaddr, nrPages, flags, buffer, (int)data.Length, 0), ct).ConfigureAwait(false);
    }

    public async ValueTask CompleteRoundAsync(CancellationToken ct)
    {
        Progressed(); // the wait for this round's acknowledgement starts now
        ulong round = ++_round;
        var ack = _acks.GetOrAdd(round, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        await EnqueueAsync(new Work(WorkKind.RoundEnd, default, 0, 0, 0, null, 0, round), ct).ConfigureAwait(false);
        await ack.Task.WaitAsync(ct).ConfigureAwait(false);
        Interlocked.Increment(ref _roundsAcked);
    }

    /// <summary>Ends the stream (END) after the last acknowledged round and waits for the bytes to leave.</summary>
    public async Task FinishAsync(CancellationToken ct)
    {
        await EnqueueAsync(new Work(WorkKind.End, default, 0, 0, 0, null, 0, 0), ct).ConfigureAwait(false);
        _queue.Writer.TryComplete();
        await _encodeLoop.WaitAsync(ct).ConfigureAwait(false);
        await _sendLoop.WaitAsync(ct).ConfigureAwait(false);
        ThrowIfFailed();
    }

    private async ValueTask EnqueueAsync(Work work, CancellationToken ct)
    {
        if (_inline)
        {
            await EncodeInlineAsync(work, ReadOnlySequence<byte>.Empty, ct).ConfigureAwait(false);
            return;
        }

        ThrowIfFailed();
        try
        {
            await _queue.Writer.WriteAsync(work, ct).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            Return(work);
            ThrowIfFailed();
            throw new IOException("page stream closed");
        }
    }

    /// <summary>
    /// Encodes one item in the caller's call (no compression) and flushes it to the send loop; the pipe's threshold
    /// holds the caller back when the link is slower. After END the pipe is complete.
    /// </summary>
    private async ValueTask EncodeInlineAsync(Work work, ReadOnlySequence<byte> data, CancellationToken ct)
    {
        ThrowIfFailed();
        try
        {
            Encode(work, data);
            var flushed = await _pipe.Writer.FlushAsync(InlineToken(ct)).ConfigureAwait(false);
            if (work.Kind == WorkKind.End || flushed.IsCompleted)
            {
                await _pipe.Writer.CompleteAsync().ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // The stream failed under the flush (Fail cancels _stop): its reason, not the cancellation, is the error.
            ThrowIfFailed();
            throw;
        }
        catch (IOException ex) when (_failure is { } reason)
        {
            // The send loop failed and the pipe handed its exception back to this flush: the stream's reason (which
            // names the target) is the error, not the connection's bare message.
            throw new IOException(reason, ex);
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException or ArgumentException && _failure is null)
        {
            Fail($"encoding pages failed: {ex.Message}");
            throw;
        }

        ThrowIfFailed();
    }

    /// <summary>The caller's token joined with the stream's stop; one source per caller token (calls are never concurrent), not one per run.</summary>
    private CancellationToken InlineToken(CancellationToken ct)
    {
        if (!ct.CanBeCanceled)
        {
            return _stop.Token;
        }

        if (_inlineStop is null || _inlineStopFor != ct)
        {
            _inlineStop?.Dispose();
            _inlineStop = CancellationTokenSource.CreateLinkedTokenSource(ct, _stop.Token);
            _inlineStopFor = ct;
        }

        return _inlineStop.Token;
    }

    private void Encode(in Work work, ReadOnlySequence<byte> data)
    {
        switch (work.Kind)
        {
            case WorkKind.Open:
                _writer.WriteOpen(work.Target);
                break;
            case WorkKind.Pages:
                _stats += _writer.WritePages(work.Target, work.Vaddr, work.NrPages, work.Flags, data);
                break;
            case WorkKind.RoundEnd:
                _writer.WriteRoundEnd(work.Round);
                break;
            case WorkKind.End:
                _writer.WriteEnd();
                break;
        }
    }

    /// <summary>The encoder: turns queued work into frames, in order, and flushes them to the send loop.</summary>
    private async Task EncodeLoopAsync()
    {
        try
        {
            await foreach (var work in _queue.Reader.ReadAllAsync(_stop.Token).ConfigureAwait(false))
            {
                try
                {
                    Encode(work, work.Buffer is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(work.Buffer, 0, work.Length));
                }
                finally
                {
                    Return(work);
                }

                var flushed = await _pipe.Writer.FlushAsync(_stop.Token).ConfigureAwait(false);
                if (flushed.IsCompleted)
                {
                    break;
                }

                if (work.Kind == WorkKind.End)
                {
                    break;
                }
            }

            await _pipe.Writer.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException or ArgumentException)
        {
            Fail($"encoding pages failed: {ex.Message}");
            await _pipe.Writer.CompleteAsync(ex).ConfigureAwait(false);
        }
        finally
        {
            // Whatever is still queued will never be sent: give its buffers back.
            while (_queue.Reader.TryRead(out var left))
            {
                Return(left);
            }
        }
    }

    private static void Return(Work work)
    {
        if (work.Buffer is { } b)
        {
            ArrayPool<byte>.Shared.Return(b);
        }
    }

    /// <summary>
    /// Ends the stream early. The target learns it from the closed connection (its receiver then fails the
    /// migration's pages); nothing more is written, since the encoder may be mid-frame.
    /// </summary>
    public Task AbortAsync(string reason)
    {
        Fail(reason);
        return Task.CompletedTask;
    }

    private async Task SendLoopAsync()
    {
        var reader = _pipe.Reader;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(_stop.Token).ConfigureAwait(false);
                Progressed();
                Volatile.Write(ref _writing, 1);
                foreach (var segment in result.Buffer)
                {
                    await _connection.WriteAsync(segment, _stop.Token).ConfigureAwait(false);
                    Progressed();
                }

                await _connection.FlushAsync(_stop.Token).ConfigureAwait(false);
                Volatile.Write(ref _writing, 0);
                Progressed();
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
                                Progressed();
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

            _queue.Writer.TryComplete();
            _stop.Cancel();
        }
    }

    private void Progressed() => Volatile.Write(ref _lastProgress, _time.GetTimestamp());

    /// <summary>The watchdog: fails the stream when the sender has waited on the target for the stall timeout.</summary>
    private void CheckStall()
    {
        bool waiting = Volatile.Read(ref _writing) == 1 || Volatile.Read(ref _round) > (ulong)Volatile.Read(ref _roundsAcked);
        if (_failure is null && waiting && _time.GetElapsedTime(Volatile.Read(ref _lastProgress)) >= _stallTimeout)
        {
            Fail($"the target took no byte of the page stream and acknowledged no round for {_stallTimeout.TotalSeconds:0.#} s: " +
                "it is stalled (stopped or hung) or unreachable");
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
        await _watchdog.DisposeAsync().ConfigureAwait(false);
        _queue.Writer.TryComplete();
        _stop.Cancel();
        await _connection.DisposeAsync().ConfigureAwait(false);
        await Task.WhenAll(_encodeLoop, _sendLoop, _receiveLoop).ConfigureAwait(false);
        _writer.Dispose();
        _inlineStop?.Dispose();
        _stop.Dispose();
    }
}

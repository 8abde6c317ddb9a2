using System.Buffers;
using System.IO.Pipelines;
using System.Threading.Channels;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;

namespace Migration.PageServer.Transport;


/// <summary>How a page stream ended on the target.</summary>
public sealed record PageStreamResult(bool Succeeded, string? MigrationId, ulong Pages, int Rounds, string? Error);

/// <summary>
/// The target end of a page stream: HELLO names the migration, whose sink (its page store) then receives every
/// OPEN and BATCH; each ROUND_END is acknowledged only after the sink made the round durable. Three stages overlap:
/// a fill loop reads the connection ahead into a pipe; the decode loop checks and decodes each frame into one of
/// <see cref="DecodedBatches"/> page buffers; a store loop makes every sink call, in stream order, and sends the
/// acknowledgements. Any invalid frame, or a sink refusing what it was given, ends the stream with an ERROR frame
/// naming the problem.
/// </summary>
public static class PageStreamReceiver
{
    /// <summary>
    /// Bytes read ahead of decoding: about two maximal frames. More only spreads the copies over memory that has left
    /// the cache (8 MiB here and in the sender: loopback 1.24-2.15 s per GiB over 5 runs, 2 MiB: 1.24-1.50 s; pages.sh).
    /// </summary>
    public const long ReadAheadBytes = 2 << 20;

    /// <summary>Room offered to each read of the connection: a whole batch, so most frames lie in one segment and a read drains what the socket holds.</summary>
    public const int ReadBytes = PageStreamProtocol.MaxFrameLength;

    /// <summary>
    /// Decoded batches (1 MiB each) between the decode loop and the store loop: one being stored, one waiting, one
    /// being decoded, so neither loop waits on the other's single batch.
    /// </summary>
    public const int DecodedBatches = 3;

    private enum StoreKind
    {
        Open,
        Pages,
        RoundEnd,
    }

    /// <summary>One sink call for the store loop, in stream order; Pages with data own one of the page buffers until stored.</summary>
    private readonly record struct StoreItem(StoreKind Kind, PageTarget Target, ulong Vaddr, uint NrPages, PagemapFlags Flags, byte[]? Buffer, int Length, ulong RoundId);

    /// <summary>What the store loop did, and why it stopped early if it did.</summary>
    private sealed class StoreOutcome
    {
        public ulong Pages;
        public int Rounds;
        public string? Error;
    }

    public static async Task<PageStreamResult> RunAsync(Stream connection, Func<string, IPageSink> resolve, CancellationToken ct)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: ReadAheadBytes, resumeWriterThreshold: ReadAheadBytes / 2, useSynchronizationContext: false));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var fill = FillAsync(connection, pipe.Writer, stop.Token);
        var output = new ArrayBufferWriter<byte>(64);
        using var writer = new PageFrameWriter(output);
        var reader = pipe.Reader;
        var work = Channel.CreateBounded<StoreItem>(new BoundedChannelOptions(DecodedBatches) { SingleReader = true, SingleWriter = true });
        var free = Channel.CreateBounded<byte[]>(DecodedBatches);
        for (int i = 0; i < DecodedBatches; i++)
        {
            free.Writer.TryWrite(ArrayPool<byte>.Shared.Rent(PageStreamProtocol.MaxBatchPages * PageFacts.PageSize));
        }

        var stored = new StoreOutcome();
        Task store = Task.CompletedTask;
        string? id = null;
        IPageSink? sink = null;
        PageStreamProgress? watched = null;
        string? error = null;
        bool ended = false;
        try
        {
            while (error is null && !ended)
            {
                var result = await reader.ReadAsync(stop.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                try
                {
                    while (error is null && !ended)
                    {
                        long unread = buffer.Length;
                        var status = PageFrameReader.TryReadFrame(ref buffer, out var frame, out var frameError);
                        long frameBytes = unread - buffer.Length;
                        if (status == PageFrameStatus.Incomplete)
                        {
                            break;
                        }

                        if (status == PageFrameStatus.Invalid)
                        {
                            error = $"invalid frame: {frameError.Message}";
                            break;
                        }

                        watched?.Frame(frameBytes); // HELLO, before which nothing watches, counts itself once resolved
                        if (sink is null && frame.Kind != PageFrameKind.Hello)
                        {
                            error = $"{frame.Kind} before HELLO";
                            break;
                        }

                        switch (frame.Kind)
                        {
                            case PageFrameKind.Hello when sink is null:
                                if (frame.ProtocolVersion != PageStreamProtocol.Version)
                                {
                                    error = $"protocol version {frame.ProtocolVersion}, this agent speaks {PageStreamProtocol.Version}";
                                    break;
                                }

                                id = frame.MigrationId!;
                                try
                                {
                                    sink = resolve(id);
                                }
                                catch (Exception ex) when (ex is not OutOfMemoryException)
                                {
                                    error = ex.Message;
                                    break;
                                }

                                watched = (sink as IProgressReportingSink)?.Progress;
                                watched?.Frame(frameBytes);
                                store = StoreLoopAsync(work.Reader, free.Writer, sink, connection, writer, output, stored, watched, stop);
                                break;
                            case PageFrameKind.Open:
                                await work.Writer.WriteAsync(new StoreItem(StoreKind.Open, frame.Target, 0, 0, 0, null, 0, 0), stop.Token).ConfigureAwait(false);
                                break;
                            case PageFrameKind.Batch:
                                byte[]? pages = frame.HasData ? await free.Reader.ReadAsync(stop.Token).ConfigureAwait(false) : null;
                                if (pages is not null && !PageFrameReader.TryDecodeBatch(frame, pages.AsSpan(0, frame.DecodedLength), out var decodeError))
                                {
                                    free.Writer.TryWrite(pages);
                                    error = $"invalid batch: {decodeError.Message}";
                                    break;
                                }

                                if (pages is not null)
                                {
                                    watched?.Pages(frame.NrPages, frame.ZeroPageCount);
                                }

                                await work.Writer.WriteAsync(new StoreItem(StoreKind.Pages, frame.Target, frame.Vaddr, frame.NrPages, frame.Flags, pages, frame.DecodedLength, 0), stop.Token).ConfigureAwait(false);
                                break;
                            case PageFrameKind.RoundEnd:
                                watched?.RoundEnded(frame.RoundId);
                                await work.Writer.WriteAsync(new StoreItem(StoreKind.RoundEnd, default, 0, 0, 0, null, 0, frame.RoundId), stop.Token).ConfigureAwait(false);
                                break;
                            case PageFrameKind.End:
                                ended = true;
                                break;
                            case PageFrameKind.Error:
                                error = $"source ended the stream: {frame.ErrorMessage}";
                                break;
                            default:
                                error = $"unexpected {frame.Kind} frame";
                                break;
                        }
                    }
                }
                finally
                {
                    reader.AdvanceTo(buffer.Start, buffer.End);
                }

                if (!ended && result.IsCompleted && error is null)
                {
                    error = buffer.IsEmpty ? "connection closed before END" : $"connection closed inside a frame ({buffer.Length} bytes left)";
                }
            }

            if (ended)
            {
                // Everything before END is stored (and its rounds acknowledged) before the stream counts as received.
                work.Writer.TryComplete();
                await store.ConfigureAwait(false);
                error = stored.Error;
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            // A failed store loop cancels the decode loop: its reason, not the cancellation, is the error.
            error ??= stored.Error ?? (ex is IOException && sink is not null ? ex.Message : $"connection failed: {ex.Message}");
        }
        finally
        {
            stop.Cancel();
            work.Writer.TryComplete();
            await store.ConfigureAwait(false);
            watched?.End();
            error ??= stored.Error;
            if (error is not null)
            {
                // Only now: the store loop, which sends the acknowledgements, has stopped writing to the connection.
                await TrySendErrorAsync(connection, writer, output, error).ConfigureAwait(false);
            }

            while (free.Reader.TryRead(out var b))
            {
                ArrayPool<byte>.Shared.Return(b);
            }

            while (work.Reader.TryRead(out var left))
            {
                if (left.Buffer is { } b)
                {
                    ArrayPool<byte>.Shared.Return(b);
                }
            }

            await reader.CompleteAsync().ConfigureAwait(false);
            await fill.ConfigureAwait(false);
        }

        return error is null
            ? new PageStreamResult(true, id, stored.Pages, stored.Rounds, null)
            : new PageStreamResult(false, id, stored.Pages, stored.Rounds, error);
    }

    /// <summary>
    /// Makes the sink calls in stream order and acknowledges each round once the sink made it durable. A sink refusing
    /// what the peer sent (limits, order, ranges) or failing to store it ends the stream: the reason goes into
    /// <paramref name="stored"/> and the decode loop is stopped. Never throws.
    /// </summary>
    private static async Task StoreLoopAsync(
        ChannelReader<StoreItem> work, ChannelWriter<byte[]> free, IPageSink sink, Stream connection, PageFrameWriter writer, ArrayBufferWriter<byte> output,
        StoreOutcome stored, PageStreamProgress? watched, CancellationTokenSource stop)
    {
        await Task.Yield();
        try
        {
            while (await work.WaitToReadAsync(stop.Token).ConfigureAwait(false))
            {
                while (work.TryRead(out var item))
                {
                    try
                    {
                        switch (item.Kind)
                        {
                            case StoreKind.Open:
                                await sink.OpenAsync(item.Target, stop.Token).ConfigureAwait(false);
                                break;
                            case StoreKind.Pages:
                                var data = item.Buffer is { } b ? new ReadOnlySequence<byte>(b, 0, item.Length) : ReadOnlySequence<byte>.Empty;
                                await sink.WritePagesAsync(item.Target, item.Vaddr, item.NrPages, item.Flags, data, stop.Token).ConfigureAwait(false);
                                stored.Pages += item.Buffer is null ? 0 : item.NrPages;
                                break;
                            case StoreKind.RoundEnd:
                                await sink.CompleteRoundAsync(stop.Token).ConfigureAwait(false);
                                stored.Rounds++;
                                writer.WriteRoundAck(item.RoundId);
                                await SendAsync(connection, output, stop.Token).ConfigureAwait(false);
                                watched?.RoundAcknowledged(item.RoundId);
                                break;
                        }
                    }
                    finally
                    {
                        if (item.Buffer is { } b)
                        {
                            free.TryWrite(b);
                        }
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // The decode loop ended the stream (its error, or the caller's cancellation, is the reason).
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException or ArgumentException
            or Store.PageStoreFullException or UnauthorizedAccessException or ObjectDisposedException)
        {
            stored.Error = ex.Message;
            stop.Cancel();
        }
    }

    private static async Task FillAsync(Stream connection, PipeWriter writer, CancellationToken ct)
    {
        try
        {
            while (true)
            {
                var memory = writer.GetMemory(ReadBytes);
                int n = await connection.ReadAsync(memory, ct).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                writer.Advance(n);
                var flush = await writer.FlushAsync(ct).ConfigureAwait(false);
                if (flush.IsCompleted)
                {
                    break;
                }
            }

            await writer.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            await writer.CompleteAsync(ex is OperationCanceledException ? null : ex).ConfigureAwait(false);
        }
    }

    private static async Task SendAsync(Stream connection, ArrayBufferWriter<byte> output, CancellationToken ct)
    {
        await connection.WriteAsync(output.WrittenMemory, ct).ConfigureAwait(false);
        await connection.FlushAsync(ct).ConfigureAwait(false);
        output.ResetWrittenCount();
    }

    private static async Task TrySendErrorAsync(Stream connection, PageFrameWriter writer, ArrayBufferWriter<byte> output, string error)
    {
        try
        {
            output.ResetWrittenCount();
            writer.WriteError(error);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await SendAsync(connection, output, cts.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException or NotSupportedException)
        {
            // The peer is gone: it learns of the failure from the closed connection.
        }
    }
}

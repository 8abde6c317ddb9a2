using System.Buffers;
using System.Threading.Channels;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;

namespace Migration.PageServer.Transport;


/// <summary>How a page stream ended on the target.</summary>
public sealed record PageStreamResult(bool Succeeded, string? MigrationId, ulong Pages, int Rounds, string? Error);

/// <summary>
/// The target end of a page stream: HELLO names the migration, whose sink (its page store) then receives every
/// OPEN and BATCH; each ROUND_END is acknowledged only after the sink made the round durable. Two stages overlap:
/// the read loop reads each frame whole into a buffer of its own and checks it (a PRESENT batch into one of
/// <see cref="BatchBuffers"/>, where its pages stay: raw pages are checksummed in place, LZ4 ones decompressed beside
/// them); a store loop makes every sink call, in stream order, with the pages as they travelled (<see cref="PackedPages"/>:
/// no zero fill, no copy), returns the buffer, and sends the acknowledgements. Any invalid frame, or a sink refusing
/// what it was given, ends the stream with an ERROR frame naming the problem.
/// </summary>
public static class PageStreamReceiver
{
    /// <summary>
    /// Buffers for PRESENT batches between the read loop and the store loop (each a whole frame and room to decompress
    /// it, about 2 MiB): one being stored, one waiting, one being read, so neither loop waits on the other's single batch.
    /// The connection's socket buffer holds what arrives beyond them.
    /// </summary>
    public const int BatchBuffers = 3;

    /// <summary>Every frame without pages (HELLO, OPEN, a PARENT or LAZY batch, ROUND_END, ERROR, END) fits this.</summary>
    private const int SmallFrameBytes = PageStreamProtocol.HeaderLength + PageStreamProtocol.ErrorFixedLength + PageStreamProtocol.MaxErrorMessageBytes;

    /// <summary>A batch buffer: the frame, then the scratch for unpacking it.</summary>
    private const int BatchBufferBytes = PageStreamProtocol.MaxFrameLength + PageFrameReader.UnpackScratchBytes;

    private enum StoreKind
    {
        Open,
        Pages,
        RoundEnd,
    }

    /// <summary>One sink call for the store loop, in stream order; Pages with data own a batch buffer, which <see cref="Packed"/> lies in, until stored.</summary>
    private readonly record struct StoreItem(StoreKind Kind, PageTarget Target, ulong Vaddr, uint NrPages, PagemapFlags Flags, byte[]? Buffer, PackedPages Packed, ulong RoundId);

    /// <summary>What the store loop did, and why it stopped early if it did.</summary>
    private sealed class StoreOutcome
    {
        public ulong Pages;
        public int Rounds;
        public string? Error;
    }

    public static async Task<PageStreamResult> RunAsync(Stream connection, Func<string, IPageSink> resolve, CancellationToken ct)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var output = new ArrayBufferWriter<byte>(64);
        using var writer = new PageFrameWriter(output);
        var work = Channel.CreateBounded<StoreItem>(new BoundedChannelOptions(BatchBuffers) { SingleReader = true, SingleWriter = true });
        var free = Channel.CreateBounded<byte[]>(BatchBuffers);
        for (int i = 0; i < BatchBuffers; i++)
        {
            free.Writer.TryWrite(ArrayPool<byte>.Shared.Rent(BatchBufferBytes));
        }

        var small = new byte[SmallFrameBytes];
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
                var (frame, frameLength, batch, readError) = await ReadFrameAsync(connection, small, free, stop.Token).ConfigureAwait(false);
                if (readError is not null)
                {
                    error = readError;
                    break;
                }

                try
                {
                    watched?.Frame(frameLength); // HELLO, before which nothing watches, counts itself once resolved
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
                            watched?.Frame(frameLength);
                            store = StoreLoopAsync(work.Reader, free.Writer, sink, connection, writer, output, stored, watched, stop);
                            break;
                        case PageFrameKind.Open:
                            await work.Writer.WriteAsync(new StoreItem(StoreKind.Open, frame.Target, 0, 0, 0, null, default, 0), stop.Token).ConfigureAwait(false);
                            break;
                        case PageFrameKind.Batch when frame.HasData:
                            if (!PageFrameReader.TryUnpackBatch(frame, batch.AsMemory(PageStreamProtocol.MaxFrameLength), out var packed, out var unpackError))
                            {
                                error = $"invalid batch: {unpackError.Message}";
                                break;
                            }

                            watched?.Pages(frame.NrPages, frame.ZeroPageCount);
                            var item = new StoreItem(StoreKind.Pages, frame.Target, frame.Vaddr, frame.NrPages, frame.Flags, batch, packed, 0);
                            batch = null; // the store loop's now, also when the write below is canceled (the channel is drained)
                            await work.Writer.WriteAsync(item, stop.Token).ConfigureAwait(false);
                            break;
                        case PageFrameKind.Batch:
                            await work.Writer.WriteAsync(new StoreItem(StoreKind.Pages, frame.Target, frame.Vaddr, frame.NrPages, frame.Flags, null, default, 0), stop.Token).ConfigureAwait(false);
                            break;
                        case PageFrameKind.RoundEnd:
                            watched?.RoundEnded(frame.RoundId);
                            await work.Writer.WriteAsync(new StoreItem(StoreKind.RoundEnd, default, 0, 0, 0, null, default, frame.RoundId), stop.Token).ConfigureAwait(false);
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
                finally
                {
                    if (batch is not null)
                    {
                        free.Writer.TryWrite(batch);
                    }
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
            // A failed store loop cancels the read loop: its reason, not the cancellation, is the error.
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

            while (work.Reader.TryRead(out var left))
            {
                if (left.Buffer is { } b)
                {
                    free.Writer.TryWrite(b);
                }
            }

            while (free.Reader.TryRead(out var b))
            {
                ArrayPool<byte>.Shared.Return(b);
            }
        }

        // The caller's cancellation is the reason whatever error it caused on the way out (a read it broke, a store it cut).
        if (error is not null && !ended)
        {
            ct.ThrowIfCancellationRequested();
        }

        return error is null
            ? new PageStreamResult(true, id, stored.Pages, stored.Rounds, null)
            : new PageStreamResult(false, id, stored.Pages, stored.Rounds, error);
    }

    /// <summary>
    /// Reads one frame whole and parses it: its header into <paramref name="small"/>, then its body after it; a batch
    /// with a bitmap (present pages) goes into a batch buffer from <paramref name="free"/> instead, where its pages stay
    /// until stored: the caller owns the returned buffer. The header's body length is within its kind's bounds before
    /// anything waits for the body. On an error no buffer is held.
    /// </summary>
    private static async ValueTask<(PageFrame Frame, int Length, byte[]? Batch, string? Error)> ReadFrameAsync(
        Stream connection, byte[] small, Channel<byte[]> free, CancellationToken ct)
    {
        int got = await connection.ReadAtLeastAsync(small.AsMemory(0, PageStreamProtocol.HeaderLength), PageStreamProtocol.HeaderLength,
            throwOnEndOfStream: false, ct).ConfigureAwait(false);
        if (got < PageStreamProtocol.HeaderLength)
        {
            return (default, 0, null, got == 0 ? "connection closed before END" : $"connection closed inside a frame ({got} bytes left)");
        }

        if (!PageFrameReader.TryParseHeader(small, out var kind, out uint bodyLength, out var headerError))
        {
            return (default, 0, null, $"invalid frame: {headerError.Message}");
        }

        int frameLength = PageStreamProtocol.HeaderLength + (int)bodyLength;
        byte[]? batch = null;
        var frameBuffer = small;
        if (kind == PageFrameKind.Batch && bodyLength > PageStreamProtocol.BatchPrefixLength + PageStreamProtocol.BatchTrailerLength)
        {
            batch = await free.Reader.ReadAsync(ct).ConfigureAwait(false);
            small.AsSpan(0, PageStreamProtocol.HeaderLength).CopyTo(batch);
            frameBuffer = batch;
        }

        try
        {
            got = await connection.ReadAtLeastAsync(frameBuffer.AsMemory(PageStreamProtocol.HeaderLength, (int)bodyLength), (int)bodyLength,
                throwOnEndOfStream: false, ct).ConfigureAwait(false);
        }
        catch when (batch is not null)
        {
            free.Writer.TryWrite(batch); // the read broke or was canceled: nothing holds the buffer
            throw;
        }

        string? error = null;
        var frame = default(PageFrame);
        var bytes = new ReadOnlySequence<byte>(frameBuffer, 0, frameLength);
        if (got < bodyLength)
        {
            error = $"connection closed inside a frame ({PageStreamProtocol.HeaderLength + got} bytes left)";
        }
        else if (PageFrameReader.TryReadFrame(ref bytes, out frame, out var frameError) != PageFrameStatus.Complete)
        {
            error = $"invalid frame: {frameError.Message}";
        }

        if (error is not null && batch is not null)
        {
            free.Writer.TryWrite(batch);
            batch = null;
        }

        return (frame, frameLength, batch, error);
    }

    /// <summary>
    /// Makes the sink calls in stream order and acknowledges each round once the sink made it durable. A sink refusing
    /// what the peer sent (limits, order, ranges) or failing to store it ends the stream: the reason goes into
    /// <paramref name="stored"/> and the read loop is stopped. Never throws.
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
                            case StoreKind.Pages when item.Buffer is not null:
                                await sink.WritePackedPagesAsync(item.Target, item.Vaddr, item.Flags, item.Packed, stop.Token).ConfigureAwait(false);
                                stored.Pages += item.NrPages;
                                break;
                            case StoreKind.Pages:
                                await sink.WritePagesAsync(item.Target, item.Vaddr, item.NrPages, item.Flags, ReadOnlySequence<byte>.Empty, stop.Token).ConfigureAwait(false);
                                break;
                            case StoreKind.RoundEnd:
                                await sink.CompleteRoundAsync(stop.Token).ConfigureAwait(false);
                                stored.Rounds++;
                                // Counted before the ack leaves: whoever the ack reaches first (the source, then a
                                // GetMigration of its own) finds the round in the progress.
                                watched?.RoundAcknowledged(item.RoundId);
                                writer.WriteRoundAck(item.RoundId);
                                await SendAsync(connection, output, stop.Token).ConfigureAwait(false);
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
            // The read loop ended the stream (its error, or the caller's cancellation, is the reason).
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException or ArgumentException
            or Store.PageStoreFullException or UnauthorizedAccessException or ObjectDisposedException)
        {
            stored.Error = ex.Message;
            stop.Cancel();
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

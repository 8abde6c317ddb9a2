using System.Buffers;
using System.IO.Pipelines;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;

namespace Migration.PageServer.Transport;


/// <summary>How a page stream ended on the target.</summary>
public sealed record PageStreamResult(bool Succeeded, string? MigrationId, ulong Pages, int Rounds, string? Error);

/// <summary>
/// The target end of a page stream: HELLO names the migration, whose sink (its page store) then receives every
/// OPEN and BATCH; each ROUND_END is acknowledged only after the sink made the round durable. A fill loop
/// reads the connection ahead into a pipe while frames are decoded and stored, so receiving overlaps with
/// decompressing and writing. Any invalid frame ends the stream with an ERROR frame naming the problem.
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

    public static async Task<PageStreamResult> RunAsync(Stream connection, Func<string, IPageSink> resolve, CancellationToken ct)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: ReadAheadBytes, resumeWriterThreshold: ReadAheadBytes / 2, useSynchronizationContext: false));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var fill = FillAsync(connection, pipe.Writer, stop.Token);
        var output = new ArrayBufferWriter<byte>(64);
        using var writer = new PageFrameWriter(output);
        var reader = pipe.Reader;
        string? id = null;
        IPageSink? sink = null;
        ulong pages = 0;
        int rounds = 0;
        byte[] pageBuffer = ArrayPool<byte>.Shared.Rent(PageStreamProtocol.MaxBatchPages * PageFacts.PageSize);
        string? error = null;
        try
        {
            while (error is null)
            {
                var result = await reader.ReadAsync(stop.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                bool ended = false;
                try
                {
                    while (error is null)
                    {
                        var status = PageFrameReader.TryReadFrame(ref buffer, out var frame, out var frameError);
                        if (status == PageFrameStatus.Incomplete)
                        {
                            break;
                        }

                        if (status == PageFrameStatus.Invalid)
                        {
                            error = $"invalid frame: {frameError.Message}";
                            break;
                        }

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
                                }

                                break;
                            case PageFrameKind.Open:
                                await sink!.OpenAsync(frame.Target, stop.Token).ConfigureAwait(false);
                                break;
                            case PageFrameKind.Batch:
                                if (!PageFrameReader.TryDecodeBatch(frame, pageBuffer.AsSpan(0, frame.DecodedLength), out var decodeError))
                                {
                                    error = $"invalid batch: {decodeError.Message}";
                                    break;
                                }

                                var data = frame.HasData ? new ReadOnlySequence<byte>(pageBuffer, 0, frame.DecodedLength) : ReadOnlySequence<byte>.Empty;
                                await sink!.WritePagesAsync(frame.Target, frame.Vaddr, frame.NrPages, frame.Flags, data, stop.Token).ConfigureAwait(false);
                                pages += frame.HasData ? frame.NrPages : 0;
                                break;
                            case PageFrameKind.RoundEnd:
                                await sink!.CompleteRoundAsync(stop.Token).ConfigureAwait(false);
                                rounds++;
                                writer.WriteRoundAck(frame.RoundId);
                                await SendAsync(connection, output, stop.Token).ConfigureAwait(false);
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

                        if (ended)
                        {
                            break;
                        }
                    }
                }
                finally
                {
                    reader.AdvanceTo(buffer.Start, buffer.End);
                }

                if (ended)
                {
                    return new PageStreamResult(true, id, pages, rounds, null);
                }

                if (result.IsCompleted && error is null)
                {
                    error = buffer.IsEmpty ? "connection closed before END" : $"connection closed inside a frame ({buffer.Length} bytes left)";
                }
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            error ??= ex is IOException && sink is not null ? ex.Message : $"connection failed: {ex.Message}";
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException or Store.PageStoreFullException or UnauthorizedAccessException)
        {
            // The sink refused what the peer sent (limits, order, ranges): that ends this stream, not the agent.
            error ??= ex.Message;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(pageBuffer);
            if (error is not null)
            {
                await TrySendErrorAsync(connection, writer, output, error).ConfigureAwait(false);
            }

            stop.Cancel();
            await reader.CompleteAsync().ConfigureAwait(false);
            await fill.ConfigureAwait(false);
        }

        return new PageStreamResult(false, id, pages, rounds, error);
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

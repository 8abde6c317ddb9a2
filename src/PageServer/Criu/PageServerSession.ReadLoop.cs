using System.Buffers;
using System.IO.Pipelines;

namespace Migration.PageServer.Criu;

/// <summary>
/// The one read loop of both directions: 32-byte <see cref="PageServerIov"/> headers (and, where the direction expects
/// it, the data behind one) parsed from the pipe and handed to the direction's handler, the members below.
/// </summary>
/// <remarks>
/// The direction's handler: <see cref="HandleAsync"/> for each header; <see cref="InData"/>, <see cref="DataToTake"/>
/// and <see cref="DataAsync"/> for data that follows a header (the dump's present pages; the lazy direction has none);
/// <see cref="CaughtUpAsync"/> once the buffer holds no whole header (the lazy direction sends its answers then);
/// <see cref="EndOfStream"/> for a peer that closes first. The loop owns the rest: reads, cancellation, the header's
/// framing (<see cref="PageServerIov.TryRead"/>, sliced only on success), what is consumed and examined.
/// </remarks>
public abstract partial class PageServerSession
{
    /// <summary>The direction's answer to one header: null to go on, a result to end the session.</summary>
    /// <param name="bytesAfter">Bytes already received behind the header.</param>
    private protected abstract ValueTask<PageServerResult?> HandleAsync(PageServerIov iov, long bytesAfter, CancellationToken ct);

    /// <summary>Whether the next bytes are data of the last header, not a header.</summary>
    private protected virtual bool InData => false;

    /// <summary>While <see cref="InData"/>: how many of the <paramref name="available"/> bytes to hand on now; 0 to wait for more.</summary>
    private protected virtual long DataToTake(long available) => 0;

    /// <summary>Hands on <paramref name="data"/> (the bytes <see cref="DataToTake"/> asked for); null to go on.</summary>
    private protected virtual ValueTask<PageServerResult?> DataAsync(ReadOnlySequence<byte> data, CancellationToken ct) => default;

    /// <summary>Everything received so far was handled; the loop waits for more next. Null to go on.</summary>
    private protected virtual ValueTask<PageServerResult?> CaughtUpAsync(CancellationToken ct) => default;

    /// <summary>The peer closed the connection before the session ended, with <paramref name="leftover"/> bytes not handled.</summary>
    private protected abstract PageServerResult EndOfStream(long leftover);

    private async Task<PageServerResult> ServeAsync(CancellationToken ct)
    {
        while (true)
        {
            ReadResult read;
            try
            {
                read = await Input.ReadAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (!IsOwnCancellation(ex, ct))
            {
                return ReceiveFailed(ex);
            }

            var buffer = read.Buffer;
            try
            {
                if (read.IsCanceled)
                {
                    throw new OperationCanceledException("the page-server read was canceled");
                }

                while (true)
                {
                    if (InData)
                    {
                        long take = DataToTake(buffer.Length);
                        if (take == 0)
                        {
                            break;
                        }

                        var data = buffer.Slice(0, take);
                        var failed = await DataAsync(data, ct).ConfigureAwait(false);
                        if (failed is not null)
                        {
                            return failed;
                        }

                        buffer = buffer.Slice(data.End);
                        continue;
                    }

                    if (!PageServerIov.TryRead(ref buffer, out var iov))
                    {
                        break;
                    }

                    Commands++;
                    var end = await HandleAsync(iov, buffer.Length, ct).ConfigureAwait(false);
                    if (end is not null)
                    {
                        return end;
                    }
                }

                var stopped = await CaughtUpAsync(ct).ConfigureAwait(false);
                if (stopped is not null)
                {
                    return stopped;
                }

                if (read.IsCompleted)
                {
                    return EndOfStream(buffer.Length);
                }
            }
            finally
            {
                Input.AdvanceTo(buffer.Start, read.Buffer.End);
            }
        }
    }
}

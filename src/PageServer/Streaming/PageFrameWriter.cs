using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Unicode;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Streaming;

/// <summary>
/// Encodes page stream frames into an <see cref="IBufferWriter{T}"/> (typically the connection's PipeWriter).
/// Nothing is flushed: the caller flushes after each call, which bounds what is buffered to one call's pages.
/// Per batch it allocates nothing: zero pages are found with a vectorized scan where the pages lie; with compression
/// the non-zero pages are gathered into one pooled scratch buffer (skipped when a contiguous batch has no zero page)
/// and LZ4-compressed straight into the output, and a batch that does not shrink is sent raw; without compression
/// they are copied once, straight into the output. Not thread-safe: one writer per send loop.
/// </summary>
public sealed class PageFrameWriter : IDisposable
{
    private const int PageSize = PageFacts.PageSize;
    private const int MaxBatchBytes = PageStreamProtocol.MaxBatchPages * PageSize;

    private readonly IBufferWriter<byte> _output;
    private readonly PageFrameWriterOptions _options;
    private byte[]? _scratch;
    private bool _disposed;
    private PageStreamStats _stats;

    public PageFrameWriter(IBufferWriter<byte> output, PageFrameWriterOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        _output = output;
        _options = options ?? PageFrameWriterOptions.Default;
    }

    /// <summary>Everything this writer has written so far.</summary>
    public PageStreamStats Stats => _stats;

    /// <summary>HELLO: the first frame of a connection.</summary>
    public void WriteHello(string migrationId, uint protocolVersion = PageStreamProtocol.Version)
    {
        ArgumentNullException.ThrowIfNull(migrationId);
        int n = Encoding.UTF8.GetByteCount(migrationId);
        if (n is 0 or > PageStreamProtocol.MaxMigrationIdBytes)
        {
            throw new ArgumentException(
                $"migration id of {n} UTF-8 bytes: must be 1..{PageStreamProtocol.MaxMigrationIdBytes}", nameof(migrationId));
        }

        var frame = BeginFrame(PageStreamProtocol.HelloFixedLength + n);
        var body = frame[PageStreamProtocol.HeaderLength..];
        BinaryPrimitives.WriteUInt32LittleEndian(body, protocolVersion);
        BinaryPrimitives.WriteUInt16LittleEndian(body[4..], (ushort)n);
        Encoding.UTF8.GetBytes(migrationId, body[PageStreamProtocol.HelloFixedLength..]);
        EndFrame(frame, PageFrameKind.Hello, PageStreamProtocol.HelloFixedLength + n);
    }

    /// <summary>OPEN: a destination image (CRIU's PS_IOV_OPEN2).</summary>
    public void WriteOpen(PageTarget target)
    {
        CheckTarget(target);
        var frame = BeginFrame(PageStreamProtocol.OpenBodyLength);
        var body = frame[PageStreamProtocol.HeaderLength..];
        BinaryPrimitives.WriteUInt32LittleEndian(body, target.Id);
        body[4] = (byte)target.Type;
        EndFrame(frame, PageFrameKind.Open, PageStreamProtocol.OpenBodyLength);
    }

    /// <summary>ROUND_END: every page of round <paramref name="roundId"/> has been written.</summary>
    public void WriteRoundEnd(ulong roundId) => WriteRound(PageFrameKind.RoundEnd, roundId);

    /// <summary>ROUND_ACK (receiver): round <paramref name="roundId"/> is durable.</summary>
    public void WriteRoundAck(ulong roundId) => WriteRound(PageFrameKind.RoundAck, roundId);

    /// <summary>ERROR: why this side gives up; longer than <see cref="PageStreamProtocol.MaxErrorMessageBytes"/> is truncated.</summary>
    public void WriteError(string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var frame = BeginFrame(PageStreamProtocol.ErrorFixedLength + PageStreamProtocol.MaxErrorMessageBytes);
        var body = frame[PageStreamProtocol.HeaderLength..];
        var text = body.Slice(PageStreamProtocol.ErrorFixedLength, PageStreamProtocol.MaxErrorMessageBytes);

        // Stops at a whole character when the message does not fit; lone surrogates become U+FFFD, so the
        // bytes are always valid UTF-8 (which the reader requires).
        Utf8.FromUtf16(message, text, out _, out int n, replaceInvalidSequences: true, isFinalBlock: true);
        BinaryPrimitives.WriteUInt16LittleEndian(body, (ushort)n);
        EndFrame(frame, PageFrameKind.Error, PageStreamProtocol.ErrorFixedLength + n);
    }

    /// <summary>END: no more frames from this side.</summary>
    public void WriteEnd()
    {
        EndFrame(BeginFrame(0), PageFrameKind.End, 0);
    }

    /// <summary>
    /// A run as <see cref="IPageSink.WritePagesAsync"/> gives it: with <see cref="PagemapFlags.Present"/>,
    /// <paramref name="data"/> holds nrPages * 4096 bytes; otherwise it is empty.
    /// </summary>
    public PageStreamStats WritePages(PageTarget target, ulong vaddr, ulong nrPages, PagemapFlags flags, in ReadOnlySequence<byte> data)
    {
        if ((flags & PagemapFlags.Present) == 0)
        {
            if (!data.IsEmpty)
            {
                throw new ArgumentException($"a {flags} run carries no data, got {data.Length} bytes", nameof(data));
            }

            return WriteRun(target, vaddr, nrPages, flags);
        }

        if (nrPages > long.MaxValue / PageSize || (ulong)data.Length != nrPages * PageSize)
        {
            throw new ArgumentException($"{nrPages} PRESENT pages of 4096 bytes, got {data.Length} bytes", nameof(data));
        }

        return WritePages(target, vaddr, flags, data);
    }

    /// <summary>PRESENT pages from contiguous memory: one BATCH frame per <see cref="PageStreamProtocol.MaxBatchPages"/> pages.</summary>
    public PageStreamStats WritePages(PageTarget target, ulong vaddr, PagemapFlags flags, ReadOnlySpan<byte> pages)
    {
        CheckPresentRun(target, vaddr, flags, pages.Length);
        var total = default(PageStreamStats);
        for (int offset = 0; offset < pages.Length; offset += MaxBatchBytes)
        {
            var batch = pages.Slice(offset, Math.Min(MaxBatchBytes, pages.Length - offset));
            total += EncodeBatch(target, vaddr + (ulong)offset, flags, batch);
        }

        return total;
    }

    /// <summary>PRESENT pages from a sequence (pages may straddle its segments).</summary>
    public PageStreamStats WritePages(PageTarget target, ulong vaddr, PagemapFlags flags, in ReadOnlySequence<byte> pages)
    {
        if (pages.IsSingleSegment)
        {
            return WritePages(target, vaddr, flags, pages.FirstSpan);
        }

        CheckPresentRun(target, vaddr, flags, pages.Length);
        var total = default(PageStreamStats);
        var reader = new SequenceReader<byte>(pages);
        while (!reader.End)
        {
            int nr = (int)Math.Min(PageStreamProtocol.MaxBatchPages, reader.Remaining / PageSize);
            total += EncodeBatch(target, vaddr + (ulong)reader.Consumed, flags, ref reader, nr);
        }

        return total;
    }

    /// <summary>A run without data (PARENT or LAZY): one BATCH frame per <see cref="PageStreamProtocol.MaxRunPages"/> pages.</summary>
    public PageStreamStats WriteRun(PageTarget target, ulong vaddr, ulong nrPages, PagemapFlags flags)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckTarget(target);
        if (!PageStreamProtocol.IsKnownFlags(flags) || (flags & PagemapFlags.Present) != 0)
        {
            throw new ArgumentException($"flags {flags}: a run without data is PARENT or LAZY", nameof(flags));
        }

        CheckRange(vaddr, nrPages);
        long before = _stats.WireBytes;
        for (ulong done = 0; done < nrPages;)
        {
            uint nr = (uint)Math.Min(PageStreamProtocol.MaxRunPages, nrPages - done);
            var frame = BeginFrame(PageStreamProtocol.BatchPrefixLength + PageStreamProtocol.BatchTrailerLength);
            var body = frame[PageStreamProtocol.HeaderLength..];
            WriteBatchPrefix(body, target, flags, vaddr + done * PageSize, nr);
            uint crc = Crc32C.Finish(Crc32C.Update(Crc32C.InitialState, body[..PageStreamProtocol.BatchPrefixLength]));
            WriteBatchTrailer(body[PageStreamProtocol.BatchPrefixLength..], PageEncoding.Raw, 0, 0, crc);
            EndFrame(frame, PageFrameKind.Batch, PageStreamProtocol.BatchPrefixLength + PageStreamProtocol.BatchTrailerLength);
            done += nr;
        }

        return new PageStreamStats { WireBytes = _stats.WireBytes - before };
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_scratch is { } scratch)
        {
            _scratch = null;
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // per batch, loops over every page: see the remarks on Crc32C.Update
    private PageStreamStats EncodeBatch(PageTarget target, ulong vaddr, PagemapFlags flags, ReadOnlySpan<byte> pages)
    {
        int nr = pages.Length / PageSize;
        var bits = default(ZeroPageBits);
        int zero = 0;
        for (int i = 0; i < nr; i++)
        {
            if (!pages.Slice(i * PageSize, PageSize).ContainsAnyExcept((byte)0))
            {
                bits[i >> 6] |= 1UL << (i & 63);
                zero++;
            }
        }

        if (zero == 0)
        {
            return EmitBatch(target, vaddr, flags, nr, in bits, 0, pages);
        }

        if (_options.DisableCompression)
        {
            // Raw: the non-zero pages go straight into the frame, no gathering pass before.
            var frame = BeginBatch(nr, (nr - zero) * PageSize, out var payload);
            int k = 0;
            for (int i = 0; i < nr; i++)
            {
                if ((bits[i >> 6] & (1UL << (i & 63))) == 0)
                {
                    pages.Slice(i * PageSize, PageSize).CopyTo(payload.Slice(k++ * PageSize, PageSize));
                }
            }

            return EndRawBatch(frame, target, vaddr, flags, nr, in bits, zero);
        }

        var scratch = Scratch();
        int n = 0;
        for (int i = 0; i < nr; i++)
        {
            if ((bits[i >> 6] & (1UL << (i & 63))) == 0)
            {
                pages.Slice(i * PageSize, PageSize).CopyTo(scratch.AsSpan(n++ * PageSize));
            }
        }

        return EmitBatch(target, vaddr, flags, nr, in bits, zero, scratch.AsSpan(0, n * PageSize));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // per batch, loops over every page: see the remarks on Crc32C.Update
    private PageStreamStats EncodeBatch(PageTarget target, ulong vaddr, PagemapFlags flags, ref SequenceReader<byte> reader, int nr)
    {
        // Raw: the non-zero pages go straight into the frame; compressed: into the scratch buffer LZ4 reads.
        Span<byte> frame = default;
        Span<byte> compact = _options.DisableCompression ? default : Scratch();
        if (_options.DisableCompression)
        {
            frame = BeginBatch(nr, nr * PageSize, out compact);
        }

        var bits = default(ZeroPageBits);
        int zero = 0;
        int k = 0;
        for (int i = 0; i < nr; i++)
        {
            var unread = reader.UnreadSpan;
            if (unread.Length >= PageSize)
            {
                // The page lies in one segment (all but the few that straddle two): tested where it is, copied only if not zero.
                var page = unread[..PageSize];
                if (page.ContainsAnyExcept((byte)0))
                {
                    page.CopyTo(compact.Slice(k++ * PageSize, PageSize));
                }
                else
                {
                    bits[i >> 6] |= 1UL << (i & 63);
                    zero++;
                }
            }
            else
            {
                // Straddles segments: gathered first, tested after (a zero page's slot is reused by the next page).
                var slot = compact.Slice(k * PageSize, PageSize);
                reader.TryCopyTo(slot);
                if (slot.ContainsAnyExcept((byte)0))
                {
                    k++;
                }
                else
                {
                    bits[i >> 6] |= 1UL << (i & 63);
                    zero++;
                }
            }

            reader.Advance(PageSize);
        }

        return _options.DisableCompression
            ? EndRawBatch(frame, target, vaddr, flags, nr, in bits, zero)
            : EmitBatch(target, vaddr, flags, nr, in bits, zero, compact[..(k * PageSize)]);
    }

    /// <summary>Room for a raw BATCH of <paramref name="nr"/> pages with up to <paramref name="maxPayload"/> bytes of non-zero pages; <paramref name="payload"/> is where they go.</summary>
    private Span<byte> BeginBatch(int nr, int maxPayload, out Span<byte> payload)
    {
        int payloadOffset = PageStreamProtocol.BatchPrefixLength + (nr + 7) / 8 + PageStreamProtocol.BatchTrailerLength;
        var frame = BeginFrame(payloadOffset + maxPayload);
        payload = frame.Slice(PageStreamProtocol.HeaderLength + payloadOffset, maxPayload);
        return frame;
    }

    /// <summary>Completes a raw BATCH from <see cref="BeginBatch"/> whose payload holds the batch's non-zero pages, in address order.</summary>
    private PageStreamStats EndRawBatch(Span<byte> frame, PageTarget target, ulong vaddr, PagemapFlags flags, int nr, in ZeroPageBits bits, int zero)
    {
        var body = frame[PageStreamProtocol.HeaderLength..];
        int metaLength = WriteBatchMeta(body, target, vaddr, flags, nr, in bits);
        int payloadOffset = metaLength + PageStreamProtocol.BatchTrailerLength;
        int u = (nr - zero) * PageSize;
        uint crc = Crc32C.Finish(Crc32C.Update(Crc32C.Update(Crc32C.InitialState, body[..metaLength]), body.Slice(payloadOffset, u)));
        WriteBatchTrailer(body[metaLength..], PageEncoding.Raw, u, u, crc);
        return CountBatch(nr, zero, PageEncoding.Raw, EndFrame(frame, PageFrameKind.Batch, payloadOffset + u));
    }

    /// <summary>Writes one PRESENT BATCH whose non-zero pages are <paramref name="nonZero"/>, in address order.</summary>
    private PageStreamStats EmitBatch(PageTarget target, ulong vaddr, PagemapFlags flags, int nr, in ZeroPageBits bits, int zero, ReadOnlySpan<byte> nonZero)
    {
        int metaLength = PageStreamProtocol.BatchPrefixLength + (nr + 7) / 8;
        int payloadOffset = metaLength + PageStreamProtocol.BatchTrailerLength;
        int u = nonZero.Length;

        // Room for LZ4's worst case: LZ4 runs its unchecked loop only when the output cannot overflow; given less
        // it checks every write, which measured up to half liblz4's speed on text-like pages (less so with K4os).
        bool compress = u > 0 && !_options.DisableCompression;
        var frame = BeginFrame(payloadOffset + (compress ? Lz4.CompressBound(u) : u));
        var body = frame[PageStreamProtocol.HeaderLength..];
        WriteBatchMeta(body, target, vaddr, flags, nr, in bits);

        var payload = body[payloadOffset..];
        var encoding = PageEncoding.Raw;
        int p = u;
        if (compress && Lz4.TryCompress(nonZero, payload, out int compressed) && compressed < u)
        {
            encoding = PageEncoding.Lz4;
            p = compressed;
        }
        else
        {
            // Incompressible (LZ4 would not shrink it): the pages as they are.
            nonZero.CopyTo(payload);
        }

        uint crc = Crc32C.Finish(Crc32C.Update(Crc32C.Update(Crc32C.InitialState, body[..metaLength]), nonZero));
        WriteBatchTrailer(body[metaLength..], encoding, p, u, crc);
        return CountBatch(nr, zero, encoding, EndFrame(frame, PageFrameKind.Batch, payloadOffset + p));
    }

    /// <summary>Prefix and zero-page bitmap of a PRESENT batch; returns their length.</summary>
    private static int WriteBatchMeta(Span<byte> body, PageTarget target, ulong vaddr, PagemapFlags flags, int nr, in ZeroPageBits bits)
    {
        int bitmapBytes = (nr + 7) / 8;
        WriteBatchPrefix(body, target, flags, vaddr, (uint)nr);
        for (int i = 0; i < bitmapBytes; i++)
        {
            body[PageStreamProtocol.BatchPrefixLength + i] = (byte)(bits[i >> 3] >> ((i & 7) * 8));
        }

        return PageStreamProtocol.BatchPrefixLength + bitmapBytes;
    }

    private PageStreamStats CountBatch(int nr, int zero, PageEncoding encoding, int wire)
    {
        var stats = new PageStreamStats(
            Pages: nr, ZeroPages: zero, RawBytes: (long)nr * PageSize, WireBytes: wire, Batches: 1,
            CompressedBatches: encoding == PageEncoding.Lz4 ? 1 : 0, RawBatches: encoding == PageEncoding.Raw ? 1 : 0);
        _stats += stats with { WireBytes = 0 };
        return stats;
    }

    private static void WriteBatchPrefix(Span<byte> body, PageTarget target, PagemapFlags flags, ulong vaddr, uint nr)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(body, target.Id);
        body[4] = (byte)target.Type;
        body[5] = (byte)flags;
        BinaryPrimitives.WriteUInt64LittleEndian(body[6..], vaddr);
        BinaryPrimitives.WriteUInt32LittleEndian(body[14..], nr);
    }

    private static void WriteBatchTrailer(Span<byte> trailer, PageEncoding encoding, int payloadLength, int uncompressedLength, uint checksum)
    {
        trailer[0] = (byte)encoding;
        BinaryPrimitives.WriteUInt32LittleEndian(trailer[1..], (uint)payloadLength);
        BinaryPrimitives.WriteUInt32LittleEndian(trailer[5..], (uint)uncompressedLength);
        BinaryPrimitives.WriteUInt32LittleEndian(trailer[9..], checksum);
    }

    private void WriteRound(PageFrameKind kind, ulong roundId)
    {
        var frame = BeginFrame(PageStreamProtocol.RoundBodyLength);
        BinaryPrimitives.WriteUInt64LittleEndian(frame[PageStreamProtocol.HeaderLength..], roundId);
        EndFrame(frame, kind, PageStreamProtocol.RoundBodyLength);
    }

    /// <summary>Room for a frame with a body of up to <paramref name="maxBodyLength"/> bytes; the body starts after the header.</summary>
    private Span<byte> BeginFrame(int maxBodyLength)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _output.GetSpan(PageStreamProtocol.HeaderLength + maxBodyLength);
    }

    /// <summary>Fills in the header of a frame from <see cref="BeginFrame"/> and commits it; returns its size.</summary>
    private int EndFrame(Span<byte> header, PageFrameKind kind, int bodyLength)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(header, PageStreamProtocol.Magic);
        header[4] = (byte)kind;
        header[5] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], PageStreamProtocol.HeaderLength);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], (uint)bodyLength);
        int length = PageStreamProtocol.HeaderLength + bodyLength;
        _output.Advance(length);
        _stats = _stats with { WireBytes = _stats.WireBytes + length };
        return length;
    }

    private byte[] Scratch()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _scratch ??= ArrayPool<byte>.Shared.Rent(MaxBatchBytes);
    }

    private void CheckPresentRun(PageTarget target, ulong vaddr, PagemapFlags flags, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckTarget(target);
        if (!PageStreamProtocol.IsKnownFlags(flags) || (flags & PagemapFlags.Present) == 0)
        {
            throw new ArgumentException($"flags {flags}: pages with data are PRESENT or PRESENT|LAZY", nameof(flags));
        }

        if (length == 0 || length % PageSize != 0)
        {
            throw new ArgumentException($"{length} bytes is not a whole, non-zero number of pages", nameof(length));
        }

        CheckRange(vaddr, (ulong)length / PageSize);
    }

    private static void CheckTarget(PageTarget target)
    {
        if (!PageTarget.TryDecode(target.DstId, out _))
        {
            throw new ArgumentException($"target {target.Type} {target.Id}: type must be Pid or Shmem and id > 0", nameof(target));
        }
    }

    private static void CheckRange(ulong vaddr, ulong nrPages)
    {
        if (!PageFacts.IsValidRange(vaddr, nrPages))
        {
            throw new ArgumentException($"run 0x{vaddr:x} + {nrPages} pages is not a page-aligned user address range", nameof(vaddr));
        }
    }
}

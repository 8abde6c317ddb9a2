using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Unicode;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Streaming;

/// <summary>The outcome of <see cref="PageFrameReader.TryReadFrame"/>.</summary>
public enum PageFrameStatus
{
    /// <summary>A frame was parsed and the buffer advanced past it.</summary>
    Complete,

    /// <summary>More bytes are needed; nothing was consumed (examine to the end and read again).</summary>
    Incomplete,

    /// <summary>The bytes are not a valid frame; the error says why. The connection cannot continue.</summary>
    Invalid,
}

/// <summary>
/// Parses page stream frames (the layout is at the top of PageFrame.cs) in the Pipelines loop pattern:
/// <code>
/// while (PageFrameReader.TryReadFrame(ref buffer, out var frame, out var error) == PageFrameStatus.Complete) { ... }
/// reader.AdvanceTo(buffer.Start, buffer.End);
/// </code>
/// Every length is checked before it is used; nothing is allocated from a length the peer sent.
/// </summary>
public static class PageFrameReader
{
    private const int PageSize = PageFacts.PageSize;
    private const int MaxBatchMetaLength = PageStreamProtocol.BatchPrefixLength + PageStreamProtocol.MaxBitmapBytes + PageStreamProtocol.BatchTrailerLength;

    /// <summary>
    /// Parses one frame from the start of <paramref name="buffer"/>. On <see cref="PageFrameStatus.Complete"/> the
    /// buffer is advanced past the frame; otherwise it is unchanged. The header's body length is checked against
    /// its kind's limits as soon as the header is there, before waiting for the body. A BATCH frame's metadata is
    /// checked here; its pages (and, with them, its checksum) by <see cref="TryDecodeBatch"/>, which must succeed
    /// before anything acts on the frame.
    /// </summary>
    public static PageFrameStatus TryReadFrame(ref ReadOnlySequence<byte> buffer, out PageFrame frame, out PageStreamError error)
    {
        frame = default;
        error = default;
        if (buffer.Length < PageStreamProtocol.HeaderLength)
        {
            return PageFrameStatus.Incomplete;
        }

        Span<byte> header = stackalloc byte[PageStreamProtocol.HeaderLength];
        var first = buffer.FirstSpan;
        if (first.Length >= PageStreamProtocol.HeaderLength)
        {
            first[..PageStreamProtocol.HeaderLength].CopyTo(header);
        }
        else
        {
            buffer.Slice(0, PageStreamProtocol.HeaderLength).CopyTo(header);
        }

        if (!TryParseHeader(header, out var kind, out uint bodyLength, out error))
        {
            return PageFrameStatus.Invalid;
        }

        long frameLength = PageStreamProtocol.HeaderLength + (long)bodyLength;
        if (buffer.Length < frameLength)
        {
            return PageFrameStatus.Incomplete;
        }

        var body = buffer.Slice(PageStreamProtocol.HeaderLength, bodyLength);
        bool ok = kind switch
        {
            PageFrameKind.Batch => TryParseBatch(body, frameLength, out frame, out error),
            PageFrameKind.Open => TryParseOpen(body, frameLength, out frame, out error),
            PageFrameKind.Hello => TryParseHello(body, frameLength, out frame, out error),
            PageFrameKind.Error => TryParseError(body, frameLength, out frame, out error),
            PageFrameKind.RoundEnd or PageFrameKind.RoundAck => ParseRound(kind, body, frameLength, out frame),
            _ => ParseEnd(frameLength, out frame),
        };
        if (!ok)
        {
            frame = default;
            return PageFrameStatus.Invalid;
        }

        buffer = buffer.Slice(frameLength);
        return PageFrameStatus.Complete;
    }

    /// <summary>
    /// Expands a BATCH frame into <paramref name="destination"/> (exactly <see cref="PageFrame.DecodedLength"/>
    /// bytes: nr_pages * 4096 for PRESENT, empty otherwise), zero pages filled in, after checking that the payload
    /// decompresses to exactly the declared length and that the checksum over the metadata and pages matches.
    /// On failure <paramref name="destination"/> is cleared: no partly decoded page is left for anyone to use.
    /// The frame's payload must still be valid (its buffer not yet advanced past).
    /// </summary>
    public static bool TryDecodeBatch(in PageFrame frame, Span<byte> destination, out PageStreamError error)
    {
        if (frame.Kind != PageFrameKind.Batch)
        {
            throw new ArgumentException($"a {frame.Kind} frame has no pages", nameof(frame));
        }

        if (destination.Length != frame.DecodedLength)
        {
            throw new ArgumentException($"{frame} decodes to {frame.DecodedLength} bytes, the destination has {destination.Length}", nameof(destination));
        }

        error = default;
        if (!frame.HasData)
        {
            // Metadata-only runs were checked completely, checksum included, by TryReadFrame.
            return true;
        }

        if (!TryExpand(in frame, destination, out error))
        {
            destination.Clear();
            return false;
        }

        return true;
    }

    /// <summary>Scratch <see cref="TryUnpackBatch"/> needs: a full batch of pages and its bitmap.</summary>
    public const int UnpackScratchBytes = PageStreamProtocol.MaxBatchPages * PageSize + PageStreamProtocol.MaxBitmapBytes;

    /// <summary>
    /// Checks a PRESENT BATCH frame's pages and hands them on as they travel (<see cref="PackedPages"/>), not expanded:
    /// a raw payload lying in one piece is checksummed where it is and used from there; an LZ4 payload is decompressed
    /// into <paramref name="scratch"/> (at least <see cref="UnpackScratchBytes"/>) and checksummed there. The bitmap is
    /// copied into the scratch's end. <paramref name="pages"/> uses the frame's buffer and the scratch: both must stay
    /// untouched while it is in use. On failure nothing is handed on.
    /// </summary>
    public static bool TryUnpackBatch(in PageFrame frame, Memory<byte> scratch, out PackedPages pages, out PageStreamError error)
    {
        if (frame.Kind != PageFrameKind.Batch || !frame.HasData)
        {
            throw new ArgumentException($"{frame} carries no pages", nameof(frame));
        }

        if (scratch.Length < UnpackScratchBytes)
        {
            throw new ArgumentException($"unpacking needs {UnpackScratchBytes} bytes of scratch, got {scratch.Length}", nameof(scratch));
        }

        pages = default;
        if (!TryCheckPages(in frame, scratch.Span, inPlace: true, out bool inScratch, out error))
        {
            return false;
        }

        var nonZero = inScratch ? scratch[..frame.UncompressedLength] : frame.Payload.First;
        int nr = (int)frame.NrPages;
        var bitmap = scratch.Slice(PageStreamProtocol.MaxBatchPages * PageSize, (nr + 7) / 8);
        var bits = bitmap.Span;
        bits.Clear();
        for (int i = 0; i < nr; i++)
        {
            if (frame.IsZeroPage(i))
            {
                bits[i >> 3] |= (byte)(1 << (i & 7));
            }
        }

        pages = new PackedPages(frame.NrPages, bitmap, nonZero);
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // per batch, loops over every page: see the remarks on Crc32C.Update
    private static bool TryExpand(in PageFrame frame, Span<byte> destination, out PageStreamError error)
    {
        if (!TryCheckPages(in frame, destination, inPlace: false, out _, out error))
        {
            return false;
        }

        if (frame.ZeroPageCount == 0)
        {
            return true;
        }

        // Non-zero page j (compact order) belongs at page i >= j: walking down from the top, every move lands on a
        // slot whose compact page has already moved, and every zero slot is above the compact pages still unmoved.
        int nr = (int)frame.NrPages;
        int j = (frame.UncompressedLength / PageSize) - 1;
        for (int i = nr - 1; i >= 0; i--)
        {
            var slot = destination.Slice(i * PageSize, PageSize);
            if (frame.IsZeroPage(i))
            {
                slot.Clear();
            }
            else
            {
                if (i != j)
                {
                    destination.Slice(j * PageSize, PageSize).CopyTo(slot);
                }

                j--;
            }
        }

        return true;
    }

    /// <summary>
    /// The one check of a PRESENT batch's pages: the payload decompressed (LZ4) or copied (raw) into the start of
    /// <paramref name="compact"/>, or, with <paramref name="inPlace"/>, a raw payload lying in one piece left where it
    /// is (<paramref name="inCompact"/> says which); then the checksum over the metadata and those pages.
    /// </summary>
    private static bool TryCheckPages(in PageFrame frame, Span<byte> compact, bool inPlace, out bool inCompact, out PageStreamError error)
    {
        error = default;
        ReadOnlySpan<byte> pages;
        inCompact = !(inPlace && frame.Encoding == PageEncoding.Raw && frame.Payload.IsSingleSegment);
        if (!inCompact)
        {
            pages = frame.Payload.FirstSpan;
        }
        else
        {
            compact = compact[..frame.UncompressedLength];
            if (frame.Encoding == PageEncoding.Raw)
            {
                frame.Payload.CopyTo(compact);
            }
            else if (!TryDecompress(in frame, compact, out error))
            {
                return false;
            }

            pages = compact;
        }

        uint checksum = Crc32C.Finish(Crc32C.Update(frame.MetadataCrcState, pages));
        if (checksum != frame.Checksum)
        {
            error = ChecksumMismatch(in frame, checksum);
            return false;
        }

        return true;
    }

    private static PageStreamError ChecksumMismatch(in PageFrame frame, uint checksum) => new(PageStreamErrorCode.ChecksumMismatch,
        $"BATCH {frame.Target} 0x{frame.Vaddr:x} +{frame.NrPages}: checksum of the received pages is 0x{checksum:x8}, the frame says 0x{frame.Checksum:x8}");

    private static bool TryDecompress(in PageFrame frame, Span<byte> compact, out PageStreamError error)
    {
        error = default;
        var payload = frame.Payload;
        int p = (int)payload.Length;
        byte[]? rented = null;
        try
        {
            ReadOnlySpan<byte> source;
            if (payload.IsSingleSegment)
            {
                source = payload.FirstSpan;
            }
            else
            {
                // p < the declared uncompressed length <= 1 MiB, both checked by TryReadFrame.
                rented = ArrayPool<byte>.Shared.Rent(p);
                payload.CopyTo(rented);
                source = rented.AsSpan(0, p);
            }

            if (!Lz4.TryDecompress(source, compact, out int n))
            {
                error = new(PageStreamErrorCode.BadCompressedData,
                    $"BATCH {frame.Target} 0x{frame.Vaddr:x}: LZ4 payload of {p} bytes is malformed or expands beyond the declared {compact.Length} bytes");
                return false;
            }

            if (n != compact.Length)
            {
                error = new(PageStreamErrorCode.BadCompressedData,
                    $"BATCH {frame.Target} 0x{frame.Vaddr:x}: LZ4 payload of {p} bytes expands to {n} bytes, the frame declares {compact.Length}");
                return false;
            }

            return true;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>
    /// Checks a frame header (the first <see cref="PageStreamProtocol.HeaderLength"/> bytes of <paramref name="header"/>):
    /// magic, reserved byte, header length, kind, and the body length against the kind's bounds. A reader that reads
    /// each frame into a buffer of its own learns here how many bytes to read next; <see cref="TryReadFrame"/> then
    /// parses the whole frame.
    /// </summary>
    public static bool TryParseHeader(ReadOnlySpan<byte> header, out PageFrameKind kind, out uint bodyLength, out PageStreamError error)
    {
        if (header.Length < PageStreamProtocol.HeaderLength)
        {
            throw new ArgumentException($"a frame header is {PageStreamProtocol.HeaderLength} bytes, got {header.Length}", nameof(header));
        }

        kind = (PageFrameKind)header[4];
        bodyLength = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        error = default;

        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(header);
        if (magic != PageStreamProtocol.Magic)
        {
            error = new(PageStreamErrorCode.BadMagic,
                $"frame magic 0x{magic:x8}, expected 0x{PageStreamProtocol.Magic:x8} ('MPSM'): not a page stream, or framing was lost");
            return false;
        }

        if (header[5] != 0)
        {
            error = new(PageStreamErrorCode.ReservedNotZero, $"frame header reserved byte is 0x{header[5]:x2}, must be 0");
            return false;
        }

        ushort headerLength = BinaryPrimitives.ReadUInt16LittleEndian(header[6..]);
        if (headerLength != PageStreamProtocol.HeaderLength)
        {
            error = new(PageStreamErrorCode.BadHeaderLength,
                $"frame header length {headerLength}, protocol version {PageStreamProtocol.Version} has {PageStreamProtocol.HeaderLength}");
            return false;
        }

        (long min, long max) = kind switch
        {
            PageFrameKind.Hello => (PageStreamProtocol.HelloFixedLength + 1, PageStreamProtocol.HelloFixedLength + PageStreamProtocol.MaxMigrationIdBytes),
            PageFrameKind.Open => (PageStreamProtocol.OpenBodyLength, PageStreamProtocol.OpenBodyLength),
            PageFrameKind.Batch => (PageStreamProtocol.BatchPrefixLength + PageStreamProtocol.BatchTrailerLength, PageStreamProtocol.MaxBatchBodyLength),
            PageFrameKind.RoundEnd or PageFrameKind.RoundAck => (PageStreamProtocol.RoundBodyLength, PageStreamProtocol.RoundBodyLength),
            PageFrameKind.Error => (PageStreamProtocol.ErrorFixedLength, PageStreamProtocol.ErrorFixedLength + PageStreamProtocol.MaxErrorMessageBytes),
            PageFrameKind.End => (0, 0),
            _ => (-1, -1),
        };
        if (min < 0)
        {
            error = new(PageStreamErrorCode.UnknownKind, $"unknown frame kind {header[4]}");
            return false;
        }

        if (bodyLength < min || bodyLength > max)
        {
            error = new(PageStreamErrorCode.BadBodyLength, min == max
                ? $"{Name(kind)} body of {bodyLength} bytes, must be {min}"
                : $"{Name(kind)} body of {bodyLength} bytes, must be {min}..{max}");
            return false;
        }

        return true;
    }

    private static bool TryParseBatch(ReadOnlySequence<byte> body, long frameLength, out PageFrame frame, out PageStreamError error)
    {
        frame = default;
        Span<byte> meta = stackalloc byte[MaxBatchMetaLength];
        int available = (int)Math.Min(body.Length, MaxBatchMetaLength);
        body.Slice(0, available).CopyTo(meta);
        meta = meta[..available];

        if (!TryParseTarget(meta, "BATCH", out var target, out error))
        {
            return false;
        }

        byte flagsByte = meta[5];
        var flags = (PagemapFlags)flagsByte;
        if ((flagsByte & ~(byte)(PagemapFlags.Parent | PagemapFlags.Lazy | PagemapFlags.Present)) != 0)
        {
            error = new(PageStreamErrorCode.BadFlags, $"BATCH flags 0x{flagsByte:x2} have bits other than PARENT (1), LAZY (2), PRESENT (4)");
            return false;
        }

        if (!PageStreamProtocol.IsKnownFlags(flags))
        {
            error = new(PageStreamErrorCode.BadFlags, $"BATCH flags 0x{flagsByte:x2} ({flags}) are not a combination CRIU writes");
            return false;
        }

        ulong vaddr = BinaryPrimitives.ReadUInt64LittleEndian(meta[6..]);
        uint nr = BinaryPrimitives.ReadUInt32LittleEndian(meta[14..]);
        bool present = (flags & PagemapFlags.Present) != 0;
        uint maxPages = present ? PageStreamProtocol.MaxBatchPages : PageStreamProtocol.MaxRunPages;
        if (nr == 0 || nr > maxPages)
        {
            error = new(PageStreamErrorCode.BadPageCount, $"BATCH of {nr} {flags} pages, must be 1..{maxPages}");
            return false;
        }

        if (!PageFacts.IsValidRange(vaddr, nr))
        {
            error = new(PageStreamErrorCode.BadRange, $"BATCH run 0x{vaddr:x} + {nr} pages is not a page-aligned user address range");
            return false;
        }

        int bitmapBytes = PageStreamProtocol.BitmapBytes(flags, nr);
        int metaLength = PageStreamProtocol.BatchPrefixLength + bitmapBytes;
        int payloadOffset = metaLength + PageStreamProtocol.BatchTrailerLength;
        if (body.Length < payloadOffset)
        {
            error = new(PageStreamErrorCode.LengthMismatch,
                $"BATCH body of {body.Length} bytes is shorter than the {payloadOffset} bytes of fields a {nr}-page {flags} batch has");
            return false;
        }

        var bits = default(ZeroPageBits);
        var bitmap = meta.Slice(PageStreamProtocol.BatchPrefixLength, bitmapBytes);
        for (int i = 0; i < bitmap.Length; i++)
        {
            bits[i >> 3] |= (ulong)bitmap[i] << ((i & 7) * 8);
        }

        if (nr % 8 != 0 && present)
        {
            int padding = bitmap[^1] & ~((1 << (int)(nr % 8)) - 1);
            if (padding != 0)
            {
                error = new(PageStreamErrorCode.BitmapPadding,
                    $"BATCH zero-page bitmap has padding bits 0x{padding:x2} set in its last byte, beyond page {nr - 1}");
                return false;
            }
        }

        int zero = 0;
        for (int w = 0; w < PageStreamProtocol.MaxBatchPages / 64; w++)
        {
            zero += BitOperations.PopCount(bits[w]);
        }

        var trailer = meta[metaLength..];
        byte encodingByte = trailer[0];
        uint p = BinaryPrimitives.ReadUInt32LittleEndian(trailer[1..]);
        uint u = BinaryPrimitives.ReadUInt32LittleEndian(trailer[5..]);
        uint checksum = BinaryPrimitives.ReadUInt32LittleEndian(trailer[9..]);
        if (encodingByte > (byte)PageEncoding.Lz4)
        {
            error = new(PageStreamErrorCode.UnknownEncoding, $"BATCH encoding {encodingByte}, must be 0 (raw) or 1 (LZ4)");
            return false;
        }

        var encoding = (PageEncoding)encodingByte;
        long expectedU = present ? ((long)nr - zero) * PageSize : 0;
        if (u != expectedU)
        {
            error = new(PageStreamErrorCode.LengthMismatch, present
                ? $"BATCH uncompressed length {u}, but its bitmap leaves {nr - zero} of {nr} pages non-zero ({expectedU} bytes)"
                : $"BATCH uncompressed length {u} for a {flags} run, which carries no pages");
            return false;
        }

        if (encoding == PageEncoding.Raw ? p != u : p == 0 || p >= u)
        {
            error = new(PageStreamErrorCode.LengthMismatch, encoding == PageEncoding.Raw
                ? $"BATCH raw payload length {p} differs from its uncompressed length {u}"
                : $"BATCH LZ4 payload length {p} for {u} uncompressed bytes, must be 1..{(long)u - 1} (a batch LZ4 does not shrink is sent raw)");
            return false;
        }

        if (body.Length != payloadOffset + (long)p)
        {
            error = new(PageStreamErrorCode.LengthMismatch,
                $"BATCH body of {body.Length} bytes, its fields say {payloadOffset + (long)p} ({payloadOffset} + payload {p})");
            return false;
        }

        uint metaCrc = Crc32C.Update(Crc32C.InitialState, meta[..metaLength]);
        if (!present && Crc32C.Finish(metaCrc) != checksum)
        {
            error = new(PageStreamErrorCode.ChecksumMismatch,
                $"BATCH {target} 0x{vaddr:x} +{nr} {flags}: checksum of the metadata is 0x{Crc32C.Finish(metaCrc):x8}, the frame says 0x{checksum:x8}");
            return false;
        }

        frame = new PageFrame(frameLength, target, flags, vaddr, nr, in bits, zero, encoding, (int)u, checksum, metaCrc,
            body.Slice(payloadOffset, p));
        return true;
    }

    private static bool TryParseTarget(ReadOnlySpan<byte> body, string kind, out PageTarget target, out PageStreamError error)
    {
        error = default;
        uint id = BinaryPrimitives.ReadUInt32LittleEndian(body);
        byte type = body[4];
        if (PageTarget.TryDecode(((ulong)id << 8) | type, out target))
        {
            return true;
        }

        error = new(PageStreamErrorCode.BadTarget, type is (byte)PageImageType.Pid or (byte)PageImageType.Shmem
            ? $"{kind} target id 0 (type {type})"
            : $"{kind} target type {type} (id {id}), must be 1 (pid) or 2 (shmem)");
        return false;
    }

    private static bool TryParseOpen(ReadOnlySequence<byte> body, long frameLength, out PageFrame frame, out PageStreamError error)
    {
        frame = default;
        Span<byte> bytes = stackalloc byte[PageStreamProtocol.OpenBodyLength];
        body.CopyTo(bytes);
        if (!TryParseTarget(bytes, "OPEN", out var target, out error))
        {
            return false;
        }

        frame = new PageFrame(PageFrameKind.Open, frameLength) { Target = target };
        return true;
    }

    private static bool TryParseHello(ReadOnlySequence<byte> body, long frameLength, out PageFrame frame, out PageStreamError error)
    {
        frame = default;
        Span<byte> bytes = stackalloc byte[PageStreamProtocol.HelloFixedLength + PageStreamProtocol.MaxMigrationIdBytes];
        bytes = bytes[..(int)body.Length];
        body.CopyTo(bytes);
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(bytes);
        ushort n = BinaryPrimitives.ReadUInt16LittleEndian(bytes[4..]);
        if (!TryParseText(bytes[PageStreamProtocol.HelloFixedLength..], n, 1, PageStreamProtocol.MaxMigrationIdBytes, "HELLO migration id", out string? id, out error))
        {
            return false;
        }

        frame = new PageFrame(PageFrameKind.Hello, frameLength) { ProtocolVersion = version, MigrationId = id };
        return true;
    }

    private static bool TryParseError(ReadOnlySequence<byte> body, long frameLength, out PageFrame frame, out PageStreamError error)
    {
        frame = default;
        Span<byte> bytes = stackalloc byte[PageStreamProtocol.ErrorFixedLength + PageStreamProtocol.MaxErrorMessageBytes];
        bytes = bytes[..(int)body.Length];
        body.CopyTo(bytes);
        ushort n = BinaryPrimitives.ReadUInt16LittleEndian(bytes);
        if (!TryParseText(bytes[PageStreamProtocol.ErrorFixedLength..], n, 0, PageStreamProtocol.MaxErrorMessageBytes, "ERROR message", out string? message, out error))
        {
            return false;
        }

        frame = new PageFrame(PageFrameKind.Error, frameLength) { ErrorMessage = message };
        return true;
    }

    private static bool TryParseText(ReadOnlySpan<byte> rest, ushort n, int min, int max, string what, out string? text, out PageStreamError error)
    {
        text = null;
        error = default;
        if (n < min || n > max)
        {
            error = new(PageStreamErrorCode.BadText, $"{what} length {n}, must be {min}..{max}");
            return false;
        }

        if (rest.Length != n)
        {
            error = new(PageStreamErrorCode.LengthMismatch, $"{what} length {n}, but {rest.Length} bytes follow it in the body");
            return false;
        }

        if (!Utf8.IsValid(rest))
        {
            error = new(PageStreamErrorCode.BadText, $"{what} of {n} bytes is not valid UTF-8");
            return false;
        }

        text = Encoding.UTF8.GetString(rest);
        return true;
    }

    private static bool ParseRound(PageFrameKind kind, ReadOnlySequence<byte> body, long frameLength, out PageFrame frame)
    {
        Span<byte> bytes = stackalloc byte[PageStreamProtocol.RoundBodyLength];
        body.CopyTo(bytes);
        frame = new PageFrame(kind, frameLength) { RoundId = BinaryPrimitives.ReadUInt64LittleEndian(bytes) };
        return true;
    }

    private static bool ParseEnd(long frameLength, out PageFrame frame)
    {
        frame = new PageFrame(PageFrameKind.End, frameLength);
        return true;
    }

    private static string Name(PageFrameKind kind) => kind switch
    {
        PageFrameKind.Hello => "HELLO",
        PageFrameKind.Open => "OPEN",
        PageFrameKind.Batch => "BATCH",
        PageFrameKind.RoundEnd => "ROUND_END",
        PageFrameKind.RoundAck => "ROUND_ACK",
        PageFrameKind.Error => "ERROR",
        PageFrameKind.End => "END",
        _ => $"kind {(byte)kind}",
    };
}

using System.Buffers;
using System.Runtime.CompilerServices;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Streaming;

// The source-to-target page stream: one long-lived connection per migration (ARCHITECTURE.md "Page stream").
// Every integer is little-endian. A frame is a fixed 12-byte header and a body:
//
//   Frame header (12 bytes)
//   | off | size | field                                                          |
//   |-----|------|----------------------------------------------------------------|
//   |   0 |    4 | magic 0x4D53504D: the bytes 'M' 'P' 'S' 'M' on the wire         |
//   |   4 |    1 | kind (PageFrameKind)                                           |
//   |   5 |    1 | reserved, 0                                                    |
//   |   6 |    2 | header length, 12 (the body starts here)                       |
//   |   8 |    4 | body length, checked against the kind's maximum before waiting |
//
//   HELLO (1), sender first               | OPEN (2), a destination image
//   |  0 | 4 | protocol version (1)      | | 0 | 4 | target id (pid or shmid, > 0)     |
//   |  4 | 2 | id length n, 1..64        | | 4 | 1 | target type (1 pid, 2 shmem)      |
//   |  6 | n | migration id, UTF-8       |
//
//   BATCH (3), a run of pages
//   | off    | size | field                                                                  |
//   |--------|------|------------------------------------------------------------------------|
//   |  0     |    4 | target id                                                              |
//   |  4     |    1 | target type                                                            |
//   |  5     |    1 | flags (PagemapFlags): PRESENT, PRESENT|LAZY, PARENT or LAZY            |
//   |  6     |    8 | vaddr, page aligned                                                    |
//   | 14     |    4 | nr_pages: 1..256 when PRESENT, 1..2^30 otherwise                       |
//   | 18     |    B | zero-page bitmap, B = ceil(nr_pages / 8) when PRESENT, else 0; bit i   |
//   |        |      | (byte i/8, mask 1 << i%8) set = page i is all zeros and not carried;   |
//   |        |      | padding bits 0                                                         |
//   | 18+B   |    1 | encoding: 0 raw, 1 LZ4 block (only when strictly smaller than raw)     |
//   | 19+B   |    4 | payload length P (raw: = U; LZ4: 1..U-1)                               |
//   | 23+B   |    4 | uncompressed length U = non-zero pages * 4096                          |
//   | 27+B   |    4 | checksum: CRC-32C of body bytes [0, 18+B) (target, flags, vaddr,       |
//   |        |      | nr_pages, bitmap) followed by the U uncompressed non-zero page bytes   |
//   | 31+B   |    P | payload: the non-zero pages in address order, raw or LZ4-compressed    |
//
//   ROUND_END (4), sender: the round's pages are all sent    | u64 round id |
//   ROUND_ACK (5), receiver: the round is durable            | u64 round id |
//   ERROR (6), either side, then it closes                   | u16 length n, 0..1024 | n bytes UTF-8 message |
//   END (7), sender: no more frames                          | (empty) |
//
// The checksum covers where the pages go as well as their bytes, so a corrupted vaddr, target or bitmap
// is caught like a corrupted page. The codec checks single frames; the order of frames (HELLO first,
// OPEN before BATCH, ROUND_ACK per ROUND_END) is the connection's business.

/// <summary>The page stream's wire constants (see the table at the top of this file).</summary>
public static class PageStreamProtocol
{
    /// <summary>"MPSM" (migration page stream) in wire order, read as a little-endian u32.</summary>
    public const uint Magic = 0x4D53504D;

    /// <summary>The version HELLO carries. Bump it on any change to the table above.</summary>
    public const uint Version = 1;

    /// <summary>Size of the fixed frame header; the only header length version 1 accepts.</summary>
    public const int HeaderLength = 12;

    /// <summary>Pages per PRESENT batch: 1 MiB of page data. Large enough for LZ4 to find matches across pages and
    /// to make the 75 bytes of framing noise; small enough that compressing one batch overlaps with sending the
    /// previous one, and that a receiver never buffers more than about 1 MiB for one frame.</summary>
    public const int MaxBatchPages = 256;

    /// <summary>Pages per non-PRESENT (parent or lazy) run: 4 TiB of address space. Such runs carry no data;
    /// longer runs are split by the writer. Below 2^31 so a page count is never a negative int.</summary>
    public const uint MaxRunPages = 1u << 30;

    /// <summary>Largest HELLO migration id in UTF-8 bytes (a GUID string is 36).</summary>
    public const int MaxMigrationIdBytes = 64;

    /// <summary>Largest ERROR message in UTF-8 bytes; the writer truncates longer ones.</summary>
    public const int MaxErrorMessageBytes = 1024;

    /// <summary>BATCH bytes before the bitmap: target id, type, flags, vaddr, nr_pages.</summary>
    public const int BatchPrefixLength = 18;

    /// <summary>BATCH bytes between bitmap and payload: encoding, payload length, uncompressed length, checksum.</summary>
    public const int BatchTrailerLength = 13;

    /// <summary>Zero-page bitmap of a full batch.</summary>
    public const int MaxBitmapBytes = MaxBatchPages / 8;

    /// <summary>Largest BATCH body: a full batch sent raw.</summary>
    public const int MaxBatchBodyLength = BatchPrefixLength + MaxBitmapBytes + BatchTrailerLength + MaxBatchPages * PageFacts.PageSize;

    public const int HelloFixedLength = 6;
    public const int OpenBodyLength = 5;
    public const int RoundBodyLength = 8;
    public const int ErrorFixedLength = 2;

    /// <summary>Largest body of any kind.</summary>
    public const int MaxBodyLength = MaxBatchBodyLength;

    /// <summary>Largest frame of any kind: what a receiver may have to buffer before it can parse one.</summary>
    public const int MaxFrameLength = HeaderLength + MaxBodyLength;

    /// <summary>Bytes of the zero-page bitmap for a run.</summary>
    public static int BitmapBytes(PagemapFlags flags, uint nrPages) =>
        (flags & PagemapFlags.Present) != 0 ? (int)((nrPages + 7) / 8) : 0;

    /// <summary>The flag combinations CRIU writes (criu/page-xfer.c ppb_xfer_flags, dump_holes).</summary>
    public static bool IsKnownFlags(PagemapFlags flags) => flags is PagemapFlags.Present
        or (PagemapFlags.Present | PagemapFlags.Lazy) or PagemapFlags.Parent or PagemapFlags.Lazy;
}

/// <summary>Frame kinds (byte 4 of the header).</summary>
public enum PageFrameKind : byte
{
    Hello = 1,
    Open = 2,
    Batch = 3,
    RoundEnd = 4,
    RoundAck = 5,
    Error = 6,
    End = 7,
}

/// <summary>How a BATCH payload is encoded.</summary>
public enum PageEncoding : byte
{
    Raw = 0,
    Lz4 = 1,
}

/// <summary>The zero-page bitmap of one batch, inline (<see cref="PageStreamProtocol.MaxBatchPages"/> bits).</summary>
[InlineArray(PageStreamProtocol.MaxBatchPages / 64)]
internal struct ZeroPageBits
{
    private ulong _word;
}

/// <summary>
/// One parsed frame. For BATCH, <see cref="Payload"/> is a slice of the buffer the frame was read from and is
/// valid only until that buffer is advanced past; the pages are checked and expanded by
/// <see cref="PageFrameReader.TryDecodeBatch"/>.
/// </summary>
public readonly struct PageFrame
{
    private readonly ZeroPageBits _zeroPages;

    internal PageFrame(PageFrameKind kind, long length)
    {
        Kind = kind;
        Length = length;
    }

    internal PageFrame(long length, PageTarget target, PagemapFlags flags, ulong vaddr, uint nrPages, in ZeroPageBits zeroPages,
        int zeroPageCount, PageEncoding encoding, int uncompressedLength, uint checksum, uint metadataCrcState, ReadOnlySequence<byte> payload)
    {
        Kind = PageFrameKind.Batch;
        Length = length;
        Target = target;
        Flags = flags;
        Vaddr = vaddr;
        NrPages = nrPages;
        _zeroPages = zeroPages;
        ZeroPageCount = zeroPageCount;
        Encoding = encoding;
        UncompressedLength = uncompressedLength;
        Checksum = checksum;
        MetadataCrcState = metadataCrcState;
        Payload = payload;
    }

    public PageFrameKind Kind { get; }

    /// <summary>Bytes the frame took on the wire, header included.</summary>
    public long Length { get; }

    /// <summary>OPEN and BATCH: the destination image.</summary>
    public PageTarget Target { get; internal init; }

    /// <summary>BATCH: the run's pagemap flags.</summary>
    public PagemapFlags Flags { get; }

    public ulong Vaddr { get; }

    public uint NrPages { get; }

    /// <summary>BATCH: whether the pages are carried (PRESENT) rather than in a parent image or lazy.</summary>
    public bool HasData => (Flags & PagemapFlags.Present) != 0;

    /// <summary>BATCH: pages elided as all zeros.</summary>
    public int ZeroPageCount { get; }

    public PageEncoding Encoding { get; }

    /// <summary>BATCH: bytes of the non-zero pages.</summary>
    public int UncompressedLength { get; }

    public uint Checksum { get; }

    /// <summary>BATCH: the payload as on the wire (see <see cref="Encoding"/>).</summary>
    public ReadOnlySequence<byte> Payload { get; }

    /// <summary>ROUND_END and ROUND_ACK.</summary>
    public ulong RoundId { get; internal init; }

    /// <summary>HELLO.</summary>
    public uint ProtocolVersion { get; internal init; }

    /// <summary>HELLO: the migration id.</summary>
    public string? MigrationId { get; internal init; }

    /// <summary>ERROR: the peer's message.</summary>
    public string? ErrorMessage { get; internal init; }

    /// <summary>Bytes a decoded BATCH fills: nr_pages * 4096 when PRESENT, else 0.</summary>
    public int DecodedLength => HasData ? (int)NrPages * PageFacts.PageSize : 0;

    /// <summary>CRC-32C state after the batch metadata; the pages continue it.</summary>
    internal uint MetadataCrcState { get; }

    /// <summary>BATCH: whether page <paramref name="index"/> of the run is all zeros (not carried).</summary>
    public bool IsZeroPage(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, HasData ? NrPages : 0u, nameof(index));
        return (_zeroPages[index >> 6] & (1UL << (index & 63))) != 0;
    }

    public override string ToString() => Kind switch
    {
        PageFrameKind.Batch => $"BATCH {Target} 0x{Vaddr:x} +{NrPages} {Flags} ({ZeroPageCount} zero, {Encoding} {Payload.Length} bytes)",
        PageFrameKind.Open => $"OPEN {Target}",
        PageFrameKind.RoundEnd => $"ROUND_END {RoundId}",
        PageFrameKind.RoundAck => $"ROUND_ACK {RoundId}",
        PageFrameKind.Hello => $"HELLO v{ProtocolVersion} {MigrationId}",
        PageFrameKind.Error => $"ERROR {ErrorMessage}",
        _ => Kind.ToString().ToUpperInvariant(),
    };
}

using System.Buffers.Binary;
using Migration.PageServer.Streaming;
using Xunit;
using static Migration.PageServer.Tests.Streaming.Frames;

namespace Migration.PageServer.Tests.Streaming;

/// <summary>Every rule the reader enforces, one refused frame each, with the value the message must name.</summary>
public class PageFrameMalformedTests
{
    private const ulong Vaddr = 0x10000;

    // A valid 3-page PRESENT batch: text, zero, text, sent LZ4 (bitmap 0x02, one byte).
    private static byte[] TextBatch() => Batch(PageData.Mixed("tzt", seed: 1), Vaddr);

    // A valid 2-page PRESENT batch: random, zero, sent raw.
    private static byte[] RawPagesBatch() => Batch(PageData.Mixed("rz", seed: 2), Vaddr);

    private static byte[] Patched(byte[] frame, Action<byte[]> patch)
    {
        var copy = (byte[])frame.Clone();
        patch(copy);
        return copy;
    }

    private static void AssertRefused(byte[] frame, PageStreamErrorCode code, params string[] named)
    {
        var error = Refused(frame);
        Assert.Equal(code, error.Code);
        foreach (var value in named)
        {
            Assert.Contains(value, error.Message);
        }
    }

    private static void AssertUndecodable(byte[] frame, PageStreamErrorCode code, params string[] named)
    {
        var error = Undecodable(frame);
        Assert.Equal(code, error.Code);
        foreach (var value in named)
        {
            Assert.Contains(value, error.Message);
        }
    }

    // ---- frame header ----

    [Fact]
    public void BadMagic() =>
        AssertRefused(Patched(Write(w => w.WriteEnd()), f => "GET "u8.CopyTo(f)), PageStreamErrorCode.BadMagic, "0x20544547");

    [Fact]
    public void ReservedByteSet() =>
        AssertRefused(Patched(Write(w => w.WriteEnd()), f => f[5] = 0x80), PageStreamErrorCode.ReservedNotZero, "0x80");

    [Theory]
    [InlineData(0)]
    [InlineData(11)]
    [InlineData(16)]
    [InlineData(0xffff)]
    public void HeaderLengthOtherThan12(int length) =>
        AssertRefused(Patched(Write(w => w.WriteEnd()), f => BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(6), (ushort)length)),
            PageStreamErrorCode.BadHeaderLength, $"length {length},");

    [Theory]
    [InlineData(0)]
    [InlineData(8)]
    [InlineData(255)]
    public void UnknownKind(byte kind) =>
        AssertRefused(Patched(Write(w => w.WriteEnd()), f => f[4] = kind), PageStreamErrorCode.UnknownKind, $"kind {kind}");

    [Theory]
    [InlineData(PageFrameKind.End, 1, "END body of 1 bytes, must be 0")]
    [InlineData(PageFrameKind.RoundEnd, 7, "ROUND_END body of 7 bytes, must be 8")]
    [InlineData(PageFrameKind.RoundAck, 9, "ROUND_ACK body of 9 bytes, must be 8")]
    [InlineData(PageFrameKind.Open, 4, "OPEN body of 4 bytes, must be 5")]
    [InlineData(PageFrameKind.Hello, 6, "HELLO body of 6 bytes, must be 7..70")]
    [InlineData(PageFrameKind.Hello, 71, "HELLO body of 71 bytes, must be 7..70")]
    [InlineData(PageFrameKind.Error, 1, "ERROR body of 1 bytes, must be 2..1026")]
    [InlineData(PageFrameKind.Error, 1027, "ERROR body of 1027 bytes, must be 2..1026")]
    [InlineData(PageFrameKind.Batch, 30, "BATCH body of 30 bytes, must be 31..1048639")]
    [InlineData(PageFrameKind.Batch, 1048640, "BATCH body of 1048640 bytes, must be 31..1048639")]
    [InlineData(PageFrameKind.Batch, uint.MaxValue, "BATCH body of 4294967295 bytes, must be 31..1048639")]
    public void BodyLengthOutsideItsKindsLimits_IsRefusedFromTheHeaderAlone(PageFrameKind kind, uint bodyLength, string message)
    {
        var header = new byte[H];
        Header(header, kind, bodyLength);
        var error = Refused(header);
        Assert.Equal(PageStreamErrorCode.BadBodyLength, error.Code);
        Assert.Equal(message, error.Message);
    }

    // ---- BATCH metadata ----

    [Fact]
    public void UnknownTargetType() =>
        AssertRefused(Patched(TextBatch(), f => f[BatchOffsets.Type] = 3), PageStreamErrorCode.BadTarget, "type 3", "id 42");

    [Fact]
    public void TargetIdZero() =>
        AssertRefused(Patched(TextBatch(), f => BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(BatchOffsets.Id), 0)),
            PageStreamErrorCode.BadTarget, "id 0");

    [Theory]
    [InlineData(0x08, "bits other than")]
    [InlineData(0x84, "bits other than")]
    [InlineData(0x00, "not a combination")]
    [InlineData(0x05, "not a combination")]
    [InlineData(0x03, "not a combination")]
    [InlineData(0x07, "not a combination")]
    public void UnknownFlags(byte flags, string why) =>
        AssertRefused(Patched(TextBatch(), f => f[BatchOffsets.Flags] = flags), PageStreamErrorCode.BadFlags, $"0x{flags:x2}", why);

    [Theory]
    [InlineData(0u)]
    [InlineData(257u)]
    [InlineData(uint.MaxValue)]
    public void PresentPageCountOutOfLimits(uint nr) =>
        AssertRefused(Patched(TextBatch(), f => BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(BatchOffsets.NrPages), nr)),
            PageStreamErrorCode.BadPageCount, $"BATCH of {nr} Present pages, must be 1..256");

    [Theory]
    [InlineData(0u)]
    [InlineData(PageStreamProtocol.MaxRunPages + 1)]
    public void RunPageCountOutOfLimits(uint nr)
    {
        var frame = Write(w => w.WriteRun(Pid42, Vaddr, 4, Engine.Images.PagemapFlags.Parent));
        AssertRefused(Patched(frame, f => BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(BatchOffsets.NrPages), nr)),
            PageStreamErrorCode.BadPageCount, $"BATCH of {nr} Parent pages, must be 1..1073741824");
    }

    [Theory]
    [InlineData(0x10001ul)]
    [InlineData(0x10800ul)]
    [InlineData(1ul << 57)]
    [InlineData(ulong.MaxValue - 4095)]
    [InlineData((1ul << 57) - 0x2000)] // page-aligned, but 3 pages run past the top
    public void VaddrNotAUserRange(ulong vaddr) =>
        AssertRefused(Patched(TextBatch(), f => BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(BatchOffsets.Vaddr), vaddr)),
            PageStreamErrorCode.BadRange, $"0x{vaddr:x} + 3 pages");

    [Theory]
    [InlineData(0x0a, "0x08")]
    [InlineData(0xf2, "0xf0")]
    [InlineData(0x80, "0x80")]
    public void BitmapPaddingBitsSet(byte bitmap, string padding) =>
        AssertRefused(Patched(TextBatch(), f => f[BatchOffsets.Bitmap] = bitmap), PageStreamErrorCode.BitmapPadding, padding, "page 2");

    [Theory]
    [InlineData(2)]
    [InlineData(255)]
    public void UnknownEncoding(byte encoding) =>
        AssertRefused(Patched(TextBatch(), f => f[new BatchOffsets(1).Encoding] = encoding), PageStreamErrorCode.UnknownEncoding, $"encoding {encoding},");

    [Fact]
    public void UncompressedLengthDisagreesWithBitmap()
    {
        // Two non-zero pages by the bitmap, 4096 bytes declared.
        var o = new BatchOffsets(1);
        AssertRefused(Patched(TextBatch(), f => BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(o.UncompressedLength), 4096)),
            PageStreamErrorCode.LengthMismatch, "uncompressed length 4096", "2 of 3 pages non-zero (8192 bytes)");

        // A bitmap bit cleared: three non-zero pages by the bitmap, 8192 bytes declared.
        AssertRefused(Patched(TextBatch(), f => f[BatchOffsets.Bitmap] = 0),
            PageStreamErrorCode.LengthMismatch, "uncompressed length 8192", "3 of 3 pages non-zero (12288 bytes)");
    }

    [Fact]
    public void RawPayloadLengthDiffersFromUncompressed()
    {
        var o = new BatchOffsets(1);
        AssertRefused(Patched(RawPagesBatch(), f => BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(o.PayloadLength), 4095)),
            PageStreamErrorCode.LengthMismatch, "raw payload length 4095", "uncompressed length 4096");
    }

    [Fact]
    public void Lz4PayloadNotSmallerThanUncompressed()
    {
        // The raw batch relabelled LZ4: an LZ4 payload as long as the pages is never sent.
        var o = new BatchOffsets(1);
        AssertRefused(Patched(RawPagesBatch(), f => f[o.Encoding] = (byte)PageEncoding.Lz4),
            PageStreamErrorCode.LengthMismatch, "LZ4 payload length 4096 for 4096 uncompressed bytes, must be 1..4095");
    }

    [Fact]
    public void Lz4PayloadEmpty()
    {
        var frame = RawBatch(42, 1, 4, Vaddr, 1, [0x00], (byte)PageEncoding.Lz4, 0, 4096, [], []);
        AssertRefused(frame, PageStreamErrorCode.LengthMismatch, "LZ4 payload length 0");
    }

    [Fact]
    public void BodyLongerThanItsFields()
    {
        var frame = TextBatch();
        var longer = new byte[frame.Length + 1];
        frame.CopyTo(longer, 0);
        BinaryPrimitives.WriteInt32LittleEndian(longer.AsSpan(8), frame.Length + 1 - H);
        AssertRefused(longer, PageStreamErrorCode.LengthMismatch, $"body of {frame.Length + 1 - H} bytes", $"fields say {frame.Length - H}");
    }

    [Fact]
    public void BodyShorterThanItsFields()
    {
        var frame = TextBatch();
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(8), frame.Length - 1 - H);
        AssertRefused(frame[..^1], PageStreamErrorCode.LengthMismatch, $"body of {frame.Length - 1 - H} bytes", $"fields say {frame.Length - H}");
    }

    [Fact]
    public void BodyTooShortForItsBitmap()
    {
        // 256 pages need a 32-byte bitmap: 18 + 32 + 13 bytes of fields, but the body is 31.
        var frame = Write(w => w.WriteRun(Pid42, Vaddr, 256, Engine.Images.PagemapFlags.Parent));
        frame[BatchOffsets.Flags] = (byte)Engine.Images.PagemapFlags.Present;
        AssertRefused(frame, PageStreamErrorCode.LengthMismatch, "body of 31 bytes is shorter than the 63 bytes");
    }

    [Fact]
    public void RunCarryingPages()
    {
        var frame = RawBatch(42, 1, (byte)Engine.Images.PagemapFlags.Lazy, Vaddr, 1, [], 0, 4096, 4096, new byte[4096], new byte[4096]);
        AssertRefused(frame, PageStreamErrorCode.LengthMismatch, "uncompressed length 4096 for a Lazy run");
    }

    [Fact]
    public void RunWithWrongChecksum()
    {
        var frame = Write(w => w.WriteRun(Pid42, Vaddr, 4, Engine.Images.PagemapFlags.Parent));
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(frame.AsSpan(new BatchOffsets(0).Checksum));
        frame[new BatchOffsets(0).Checksum] ^= 1;
        AssertRefused(frame, PageStreamErrorCode.ChecksumMismatch, $"0x{crc:x8}", $"0x{crc ^ 1:x8}");
    }

    // ---- BATCH pages (TryDecodeBatch) ----

    [Fact]
    public void RawPayloadCorrupted_ChecksumCatchesIt()
    {
        var o = new BatchOffsets(1);
        AssertUndecodable(Patched(RawPagesBatch(), f => f[o.Payload + 100] ^= 0x10), PageStreamErrorCode.ChecksumMismatch, "0x10000 +2");
    }

    [Fact]
    public void VaddrChanged_ChecksumCatchesIt() =>
        AssertUndecodable(Patched(TextBatch(), f => f[BatchOffsets.Vaddr + 2] ^= 0x02), PageStreamErrorCode.ChecksumMismatch, "0x30000 +3");

    [Fact]
    public void TargetChanged_ChecksumCatchesIt() =>
        AssertUndecodable(Patched(TextBatch(), f => f[BatchOffsets.Id] = 43), PageStreamErrorCode.ChecksumMismatch, "pid 43");

    [Fact]
    public void ZeroPageMovedInTheBitmap_ChecksumCatchesIt()
    {
        // "tzt" has bitmap 0b010; 0b001 keeps the count of non-zero pages but puts them elsewhere.
        AssertUndecodable(Patched(TextBatch(), f => f[BatchOffsets.Bitmap] = 0x01), PageStreamErrorCode.ChecksumMismatch);
    }

    [Fact]
    public void ChecksumFieldCorrupted()
    {
        var o = new BatchOffsets(1);
        AssertUndecodable(Patched(TextBatch(), f => f[o.Checksum + 3] ^= 0x80), PageStreamErrorCode.ChecksumMismatch);
    }

    [Fact]
    public void Lz4PayloadGarbage()
    {
        var garbage = Enumerable.Repeat((byte)0xff, 100).ToArray();
        var frame = RawBatch(42, 1, 4, Vaddr, 1, [0x00], (byte)PageEncoding.Lz4, 100, 4096, garbage, new byte[4096]);
        AssertUndecodable(frame, PageStreamErrorCode.BadCompressedData, "LZ4 payload of 100 bytes is malformed", "4096 bytes");
    }

    [Fact]
    public void Lz4PayloadExpandsToLessThanDeclared()
    {
        // Two non-zero pages declared (8192 bytes); the payload holds one.
        var onePage = PageData.Text(1, seed: 3);
        var payload = Lz4Of(onePage);
        var frame = RawBatch(42, 1, 4, Vaddr, 2, [0x00], (byte)PageEncoding.Lz4, (uint)payload.Length, 8192, payload, onePage);
        AssertUndecodable(frame, PageStreamErrorCode.BadCompressedData, $"LZ4 payload of {payload.Length} bytes expands to 4096 bytes, the frame declares 8192");
    }

    [Fact]
    public void Lz4PayloadExpandsToMoreThanDeclared()
    {
        // One non-zero page declared (4096 bytes); the payload holds three.
        var threePages = PageData.Mixed("ooo", seed: 4);
        var payload = Lz4Of(threePages);
        Assert.True(payload.Length < 4096);
        var frame = RawBatch(42, 1, 4, Vaddr, 1, [0x00], (byte)PageEncoding.Lz4, (uint)payload.Length, 4096, payload, threePages);
        AssertUndecodable(frame, PageStreamErrorCode.BadCompressedData, "malformed or expands beyond the declared 4096 bytes");
    }

    [Fact]
    public void Lz4PayloadCorrupted_NeverYieldsWrongPages()
    {
        var pages = PageData.Mixed("tzt", seed: 1);
        var frame = TextBatch();
        var o = new BatchOffsets(1);
        int p = BinaryPrimitives.ReadInt32LittleEndian(frame.AsSpan(o.PayloadLength));
        int refused = 0;
        for (int i = 0; i < p; i++)
        {
            foreach (byte bit in new byte[] { 0x01, 0x04, 0x80 })
            {
                var parsed = ReadOne(Patched(frame, f => f[o.Payload + i] ^= bit));
                var decoded = new byte[parsed.DecodedLength];
                if (PageFrameReader.TryDecodeBatch(parsed, decoded, out var error))
                {
                    // Some flips change nothing decoded (a match offset to identical text): right pages, not wrong ones.
                    Assert.True(decoded.AsSpan().SequenceEqual(pages), $"payload byte {i} ^ 0x{bit:x2} decoded to wrong pages");
                }
                else
                {
                    Assert.True(error.Code is PageStreamErrorCode.ChecksumMismatch or PageStreamErrorCode.BadCompressedData, $"byte {i}: {error}");
                    refused++;
                }
            }
        }

        Assert.True(refused > p * 3 / 2, $"only {refused} of {p * 3} corruptions refused");
    }

    // ---- HELLO, ERROR, OPEN ----

    [Fact]
    public void HelloIdEmpty() =>
        AssertRefused(Raw(PageFrameKind.Hello, 1, 0, 0, 0, 0, 0, 0x61), PageStreamErrorCode.BadText, "HELLO migration id length 0, must be 1..64");

    [Fact]
    public void HelloIdLengthBeyondTheBody() =>
        AssertRefused(Raw(PageFrameKind.Hello, 1, 0, 0, 0, 5, 0, 0x61, 0x62), PageStreamErrorCode.LengthMismatch, "length 5, but 2 bytes follow");

    [Fact]
    public void HelloIdLengthOverLimit() =>
        AssertRefused(Raw(PageFrameKind.Hello, 1, 0, 0, 0, 65, 0, 0x61), PageStreamErrorCode.BadText, "length 65, must be 1..64");

    [Fact]
    public void HelloIdNotUtf8() =>
        AssertRefused(Raw(PageFrameKind.Hello, 1, 0, 0, 0, 2, 0, 0xc3, 0x28), PageStreamErrorCode.BadText, "HELLO migration id of 2 bytes is not valid UTF-8");

    [Fact]
    public void ErrorMessageLengthOverLimit() =>
        AssertRefused(Raw(PageFrameKind.Error, 0x01, 0x04, 0x61), PageStreamErrorCode.BadText, "ERROR message length 1025, must be 0..1024");

    [Fact]
    public void ErrorMessageNotUtf8() =>
        AssertRefused(Raw(PageFrameKind.Error, 1, 0, 0xff), PageStreamErrorCode.BadText, "not valid UTF-8");

    [Fact]
    public void ErrorMessageEmpty_IsAllowed() =>
        Assert.Equal("", ReadOne(Raw(PageFrameKind.Error, 0, 0)).ErrorMessage);

    [Fact]
    public void OpenUnknownType() =>
        AssertRefused(Raw(PageFrameKind.Open, 7, 0, 0, 0, 9), PageStreamErrorCode.BadTarget, "OPEN target type 9 (id 7)");

    [Fact]
    public void NoError_HasAnEmptyMessage()
    {
        Assert.False(default(PageStreamError).IsError);
        Assert.Equal("", default(PageStreamError).Message);
        Assert.Equal(PageStreamError.None, default);
    }

    [Fact]
    public void Truncated_NamesTheLeftover()
    {
        var error = PageStreamError.Truncated(17);
        Assert.Equal(PageStreamErrorCode.TruncatedStream, error.Code);
        Assert.Contains("17 bytes", error.Message);
        Assert.Equal(error, error.ToException().Error);
    }
}

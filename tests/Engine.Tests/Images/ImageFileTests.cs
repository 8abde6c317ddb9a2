using System.Buffers.Binary;
using Google.Protobuf;
using Migration.Engine.Images;
using Migration.Engine.Images.Pb;
using Xunit;

namespace Migration.Engine.Tests.Images;

public class ImageFileTests
{
    private const string What = "pagemap-1.img";

    [Fact]
    public void WriteHeader_WritesCommonMagicThenTypeMagic_LittleEndian()
    {
        using var ms = new MemoryStream();

        ImageFile.WriteHeader(ms, ImageFile.PagemapMagic);

        byte[] expected =
        [
            0x19, 0x43, 0x56, 0x54, // common magic 0x54564319, little-endian
            0x25, 0x40, 0x08, 0x56, // pagemap magic 0x56084025, little-endian
        ];
        Assert.Equal(expected, ms.ToArray());
    }

    [Fact]
    public void WriteEntry_WritesLittleEndianLengthThenProtobufBody()
    {
        using var ms = new MemoryStream();

        ImageFile.WriteEntry(ms, new PagemapHead { PagesId = 7 });

        byte[] expected =
        [
            0x02, 0x00, 0x00, 0x00, // length 2, little-endian u32
            0x08, 0x07,             // field 1 (pages_id), varint 7
        ];
        Assert.Equal(expected, ms.ToArray());
    }

    [Fact]
    public void TryReadEntry_ReadsEntriesThenReturnsFalseAtCleanEof()
    {
        var bytes = Concat(Entry(new PagemapHead { PagesId = 3 }), Entry(new PagemapHead { PagesId = 300 }));
        using var ms = new MemoryStream(bytes);

        Assert.True(ImageFile.TryReadEntry(ms, PagemapHead.Parser, What, out var first));
        Assert.True(ImageFile.TryReadEntry(ms, PagemapHead.Parser, What, out var second));
        bool third = ImageFile.TryReadEntry(ms, PagemapHead.Parser, What, out PagemapHead _);

        Assert.Equal(3u, first.PagesId);
        Assert.Equal(300u, second.PagesId);
        Assert.False(third);
    }

    [Fact]
    public void TryReadEntry_ZeroLengthEntry_IsAnEmptyMessage()
    {
        using var ms = new MemoryStream([0, 0, 0, 0]);

        Assert.True(ImageFile.TryReadEntry(ms, PagemapEntry.Parser, What, out var e));
        Assert.False(e.HasVaddr);
        Assert.Equal(4, ms.Position);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void TryReadEntry_TruncatedLengthPrefix_Throws(int prefixBytes)
    {
        using var ms = new MemoryStream(new byte[] { 0x02, 0x00, 0x00, 0x00 }[..prefixBytes]);

        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.TryReadEntry(ms, PagemapHead.Parser, What, out PagemapHead _));

        Assert.Contains(What, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"truncated entry length ({prefixBytes} of 4 bytes)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TryReadEntry_TruncatedBody_Throws()
    {
        // Length says 10 bytes, only 3 follow.
        using var ms = new MemoryStream([0x0a, 0x00, 0x00, 0x00, 0x08, 0x07, 0x10]);

        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.TryReadEntry(ms, PagemapEntry.Parser, What, out PagemapEntry _));

        Assert.Contains("truncated entry (3 of 10 bytes)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TryReadEntry_LengthOverMaxEntryBytes_ThrowsWithoutReadingTheBody()
    {
        var len = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(len, ImageFile.MaxEntryBytes + 1);
        using var ms = new MemoryStream(len);

        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.TryReadEntry(ms, PagemapEntry.Parser, What, out PagemapEntry _));

        Assert.Contains($"entry of {ImageFile.MaxEntryBytes + 1} bytes exceeds", ex.Message, StringComparison.Ordinal);
        Assert.Equal(4, ms.Position);
    }

    [Fact]
    public void TryReadEntry_LengthOfUInt32Max_IsRefusedAsTooLarge()
    {
        using var ms = new MemoryStream([0xff, 0xff, 0xff, 0xff]);

        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.TryReadEntry(ms, PagemapEntry.Parser, What, out PagemapEntry _));

        Assert.Contains("exceeds", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TryReadEntry_LengthOfExactlyMaxEntryBytes_IsNotRefusedAsTooLarge()
    {
        var len = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(len, ImageFile.MaxEntryBytes);
        using var ms = new MemoryStream(len);

        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.TryReadEntry(ms, PagemapEntry.Parser, What, out PagemapEntry _));

        // At the limit the entry is allowed; it fails only because its body is missing.
        Assert.Contains($"truncated entry (0 of {ImageFile.MaxEntryBytes} bytes)", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TryReadEntry_ShortFileClaimingAHugeEntry_IsRefusedWithoutAllocatingWhatItClaims(bool seekable)
    {
        // Found by the fuzzer (tests/Fuzz, criu-image): a 12-byte file whose length prefix says 16 MiB made the reader
        // allocate 16 MiB before it found out the body was not there.
        var bytes = new byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, ImageFile.MaxEntryBytes);
        using Stream s = seekable ? new MemoryStream(bytes) : new UnseekableStream(bytes);

        long before = GC.GetAllocatedBytesForCurrentThread();
        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.TryReadEntry(s, PagemapEntry.Parser, What, out PagemapEntry _));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Contains($"truncated entry (8 of {ImageFile.MaxEntryBytes} bytes)", ex.Message, StringComparison.Ordinal);
        Assert.True(allocated < 256 << 10, $"refusing a 12-byte file allocated {allocated} bytes");
    }

    [Fact]
    public void TryReadEntry_LargeEntryFromAStreamThatCannotSeek_IsReadWhole()
    {
        var big = new PagemapHead { PagesId = 9 };
        var body = big.ToByteArray();
        // An unknown field of 300 KiB (field 15, wire type 2) behind pages_id: the body grows past the first buffer.
        var unknown = new byte[300 << 10];
        var field = Concat([0x7a], Varint((uint)unknown.Length), unknown);
        var entry = Concat(BitConverter.GetBytes(body.Length + field.Length), body, field);
        using var s = new UnseekableStream(entry);

        Assert.True(ImageFile.TryReadEntry(s, PagemapHead.Parser, What, out var head));

        Assert.Equal(9u, head.PagesId);
    }

    [Fact]
    public void ReadHeader_WrongCommonMagic_ThrowsNamingIt()
    {
        using var ms = new MemoryStream([0xef, 0xbe, 0xad, 0xde, 0x25, 0x40, 0x08, 0x56]);

        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.ReadHeader(ms, ImageFile.PagemapMagic, What));

        Assert.Contains(What, ex.Message, StringComparison.Ordinal);
        Assert.Contains("common magic 0xdeadbeef", ex.Message, StringComparison.Ordinal);
        Assert.Contains("expected 0x54564319", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReadHeader_WrongTypeMagic_ThrowsNamingBoth()
    {
        using var ms = new MemoryStream();
        ImageFile.WriteHeader(ms, ImageFile.CoreMagic);
        ms.Position = 0;

        var ex = Assert.Throws<InvalidDataException>(() => ImageFile.ReadHeader(ms, ImageFile.PagemapMagic, What));

        Assert.Contains(What, ex.Message, StringComparison.Ordinal);
        Assert.Contains("image magic 0x55053847", ex.Message, StringComparison.Ordinal);
        Assert.Contains("expected 0x56084025", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReadHeader_ServiceCommonMagic_IsAccepted()
    {
        byte[] bytes = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, ImageFile.ServiceMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), ImageFile.StatsMagic);
        using var ms = new MemoryStream(bytes);

        ImageFile.ReadHeader(ms, ImageFile.StatsMagic, "stats-dump");

        Assert.Equal(8, ms.Position);
    }

    [Fact]
    public void ReadHeader_ThenEntries_ReadsWhatWriteProduced()
    {
        using var ms = new MemoryStream();
        ImageFile.WriteHeader(ms, ImageFile.PagemapMagic);
        ImageFile.WriteEntry(ms, new PagemapHead { PagesId = 9 });
        ms.Position = 0;

        ImageFile.ReadHeader(ms, ImageFile.PagemapMagic, What);
        Assert.True(ImageFile.TryReadEntry(ms, PagemapHead.Parser, What, out var head));

        Assert.Equal(9u, head.PagesId);
        Assert.False(ImageFile.TryReadEntry(ms, PagemapHead.Parser, What, out PagemapHead _));
    }

    /// <summary>A length-prefixed entry built by hand (not through <see cref="ImageFile.WriteEntry"/>).</summary>
    internal static byte[] Entry(IMessage message)
    {
        var body = message.ToByteArray();
        var bytes = new byte[4 + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, (uint)body.Length);
        body.CopyTo(bytes, 4);
        return bytes;
    }

    internal static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    private static byte[] Varint(uint value)
    {
        var bytes = new List<byte>();
        for (; value >= 0x80; value >>= 7)
        {
            bytes.Add((byte)(value | 0x80));
        }

        bytes.Add((byte)value);
        return [.. bytes];
    }

    /// <summary>A pipe or socket as a stream: no length, no seeking, short reads.</summary>
    private sealed class UnseekableStream(byte[] data) : Stream
    {
        private int _at;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = Math.Min(Math.Min(count, 4000), data.Length - _at);
            data.AsSpan(_at, n).CopyTo(buffer.AsSpan(offset));
            _at += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

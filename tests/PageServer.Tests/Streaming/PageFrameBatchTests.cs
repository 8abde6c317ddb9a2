using System.Buffers;
using System.Buffers.Binary;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;
using Xunit;
using static Migration.PageServer.Tests.Streaming.Frames;

namespace Migration.PageServer.Tests.Streaming;

public class PageFrameBatchTests
{
    private const ulong Vaddr = 0x7f00_0000_1000;

    [Fact]
    public void OneZeroPage_ExactBytes()
    {
        var bytes = Batch(PageData.Zero(1), Vaddr);

        byte[] meta =
        [
            0x2a, 0x00, 0x00, 0x00,                         // target id 42
            0x01,                                           // target type pid
            0x04,                                           // flags PRESENT
            0x00, 0x10, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, // vaddr 0x7f0000001000
            0x01, 0x00, 0x00, 0x00,                         // nr_pages 1
            0x01,                                           // bitmap: page 0 is zero
        ];
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(crc, Crc32C.Compute(meta)); // no non-zero page bytes follow
        byte[] expected =
        [
            0x4d, 0x50, 0x53, 0x4d, 0x03, 0x00, 0x0c, 0x00, // magic, kind BATCH, reserved, header length
            0x20, 0x00, 0x00, 0x00,                         // body length 32 = 18 + 1 + 13
            .. meta,
            0x00,                                           // encoding raw
            0x00, 0x00, 0x00, 0x00,                         // payload length 0
            0x00, 0x00, 0x00, 0x00,                         // uncompressed length 0
            .. crc,                                         // CRC-32C(meta)
        ];
        Assert.Equal(expected, bytes);
    }

    [Fact]
    public void RandomPageThenZeroPage_ExactBytes()
    {
        var pages = PageData.Mixed("rz", seed: 1);
        var bytes = Batch(pages, Vaddr);
        var o = new BatchOffsets(B: 1);

        Assert.Equal(new byte[] { 0x4d, 0x50, 0x53, 0x4d, 0x03, 0x00, 0x0c, 0x00 }, bytes[..8]);
        Assert.Equal(32 + PageSize, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8)));  // body length
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(BatchOffsets.NrPages)));
        Assert.Equal(0x02, bytes[BatchOffsets.Bitmap]);                                            // page 1 is zero
        Assert.Equal((byte)PageEncoding.Raw, bytes[o.Encoding]);                                   // random does not shrink
        Assert.Equal(PageSize, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(o.PayloadLength)));
        Assert.Equal(PageSize, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(o.UncompressedLength)));
        uint crc = Crc32C.Finish(Crc32C.Update(Crc32C.Update(Crc32C.InitialState, bytes.AsSpan(H, 19)), pages.AsSpan(0, PageSize)));
        Assert.Equal(crc, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(o.Checksum)));
        Assert.Equal(pages[..PageSize], bytes[o.Payload..]);
    }

    [Fact]
    public void ParentRun_ExactBytes_NoBitmapNoPayload()
    {
        var bytes = Write(w => w.WriteRun(Pid42, Vaddr, 0x10, PagemapFlags.Parent));

        byte[] meta =
        [
            0x2a, 0x00, 0x00, 0x00, 0x01,                   // target pid 42
            0x01,                                           // flags PARENT
            0x00, 0x10, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, // vaddr
            0x10, 0x00, 0x00, 0x00,                         // nr_pages 16; no bitmap
        ];
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(crc, Crc32C.Compute(meta));
        byte[] expected =
        [
            0x4d, 0x50, 0x53, 0x4d, 0x03, 0x00, 0x0c, 0x00,
            0x1f, 0x00, 0x00, 0x00,                         // body length 31 = 18 + 13
            .. meta,
            0x00, 0, 0, 0, 0, 0, 0, 0, 0,                   // raw, payload 0, uncompressed 0
            .. crc,
        ];
        Assert.Equal(expected, bytes);

        var frame = ReadOne(bytes);
        Assert.False(frame.HasData);
        Assert.Equal(0, frame.DecodedLength);
        Assert.True(PageFrameReader.TryDecodeBatch(frame, [], out _));
    }

    [Fact]
    public void AllZeroPages_PayloadEmpty_BitmapAllOnes()
    {
        var pages = PageData.Zero(PageStreamProtocol.MaxBatchPages);
        var output = new ArrayBufferWriter<byte>();
        using var writer = new PageFrameWriter(output);

        var stats = writer.WritePages(Pid42, Vaddr, PagemapFlags.Present, pages);

        var bytes = output.WrittenSpan.ToArray();
        var o = new BatchOffsets(B: 32);
        Assert.Equal(o.Payload, bytes.Length); // 12 + 18 + 32 + 13 = 75 bytes for 1 MiB of zeros
        Assert.All(bytes[BatchOffsets.Bitmap..o.Encoding], b => Assert.Equal(0xff, b));
        Assert.Equal(new PageStreamStats(Pages: 256, ZeroPages: 256, RawBytes: 1 << 20, WireBytes: 75, Batches: 1, CompressedBatches: 0, RawBatches: 1), stats);

        var frame = ReadOne(bytes);
        Assert.Equal(256, frame.ZeroPageCount);
        Assert.True(frame.Payload.IsEmpty);
        Assert.True(frame.IsZeroPage(255));
        var decoded = new byte[frame.DecodedLength];
        decoded.AsSpan().Fill(0x55);
        Assert.True(PageFrameReader.TryDecodeBatch(frame, decoded, out _));
        Assert.Equal(pages, decoded);
    }

    [Fact]
    public void TextPages_AreCompressed()
    {
        var pages = PageData.Text(PageStreamProtocol.MaxBatchPages, seed: 2);
        var bytes = Batch(pages, Vaddr);

        var frame = ReadOne(bytes);
        Assert.Equal(PageEncoding.Lz4, frame.Encoding);
        Assert.Equal(pages.Length, frame.UncompressedLength);
        Assert.True(frame.Payload.Length < pages.Length / 2, $"text compressed to {frame.Payload.Length} bytes");
        AssertRoundTrip(bytes, pages, Vaddr);
    }

    [Fact]
    public void RandomPages_AreSentRaw()
    {
        var pages = PageData.Random(PageStreamProtocol.MaxBatchPages, seed: 3);
        var bytes = Batch(pages, Vaddr);

        var frame = ReadOne(bytes);
        Assert.Equal(PageEncoding.Raw, frame.Encoding);
        Assert.Equal(pages.Length, frame.Payload.Length);
        AssertRoundTrip(bytes, pages, Vaddr);
    }

    [Theory]
    [InlineData("z")]
    [InlineData("t")]
    [InlineData("o")]
    [InlineData("ztz")]
    [InlineData("tzt")]
    [InlineData("zzzzzzzzt")]
    [InlineData("rrrrrrrrrz")]
    [InlineData("trozzrtoztttzzzrrr")]
    [InlineData("ozozozozozozozozozozozozozozozozozozozoz")]
    public void MixedPages_RoundTrip(string pattern)
    {
        var pages = PageData.Mixed(pattern, seed: pattern.Length);
        var bytes = Batch(pages, Vaddr);

        var frame = ReadOne(bytes);
        Assert.Equal(pattern.Count(c => c == 'z'), frame.ZeroPageCount);
        for (int i = 0; i < pattern.Length; i++)
        {
            Assert.Equal(pattern[i] == 'z', frame.IsZeroPage(i));
        }

        AssertRoundTrip(bytes, pages, Vaddr);
    }

    [Fact]
    public void DisableCompression_SendsTextRaw()
    {
        var pages = PageData.Text(8, seed: 4);
        var frame = ReadOne(Batch(pages, Vaddr, options: new PageFrameWriterOptions(disableCompression: true)));
        Assert.Equal(PageEncoding.Raw, frame.Encoding);
    }

    [Fact]
    public void PresentLazy_RoundTrips()
    {
        var pages = PageData.Mixed("tz", seed: 5);
        var bytes = Batch(pages, Vaddr, PagemapFlags.Present | PagemapFlags.Lazy);
        Assert.Equal(PagemapFlags.Present | PagemapFlags.Lazy, ReadOne(bytes).Flags);
        AssertRoundTrip(bytes, pages, Vaddr);
    }

    [Fact]
    public void LongRun_IsSplitIntoFullBatches()
    {
        var pages = PageData.Mixed(string.Concat(Enumerable.Repeat("tzrtt", 200)), seed: 6); // 1000 pages
        var output = new ArrayBufferWriter<byte>();
        using var writer = new PageFrameWriter(output);

        var stats = writer.WritePages(Pid42, Vaddr, PagemapFlags.Present, pages);

        var frames = ReadAll(new ReadOnlySequence<byte>(output.WrittenMemory));
        Assert.Equal([256u, 256u, 256u, 232u], frames.Select(f => f.Frame.NrPages));
        Assert.Equal([Vaddr, Vaddr + 256 * 4096, Vaddr + 512 * 4096, Vaddr + 768 * 4096], frames.Select(f => f.Frame.Vaddr));
        Assert.Equal(pages, frames.SelectMany(f => f.Pages));
        Assert.Equal(1000, stats.Pages);
        Assert.Equal(200, stats.ZeroPages);
        Assert.Equal(4, stats.Batches);
        Assert.Equal(4, stats.CompressedBatches + stats.RawBatches);
        Assert.Equal(output.WrittenCount, stats.WireBytes);
        Assert.Equal(stats, writer.Stats);
        Assert.Equal(frames.Sum(f => f.Frame.Length), stats.WireBytes);
    }

    [Fact]
    public void HugeParentRun_IsSplitAtTheRunLimit()
    {
        ulong nr = PageStreamProtocol.MaxRunPages + 5ul;
        var frames = ReadAll(new ReadOnlySequence<byte>(Write(w => w.WriteRun(Pid42, Vaddr, nr, PagemapFlags.Lazy))));

        Assert.Equal([PageStreamProtocol.MaxRunPages, 5u], frames.Select(f => f.Frame.NrPages));
        Assert.Equal(Vaddr + (ulong)PageStreamProtocol.MaxRunPages * 4096, frames[1].Frame.Vaddr);
        Assert.All(frames, f => Assert.Equal(PagemapFlags.Lazy, f.Frame.Flags));
    }

    [Fact]
    public void SinkShapedCall_DispatchesOnFlags()
    {
        var pages = PageData.Mixed("tz", seed: 7);
        var frames = ReadAll(new ReadOnlySequence<byte>(Write(w =>
        {
            w.WritePages(Pid42, Vaddr, 2, PagemapFlags.Present, new ReadOnlySequence<byte>(pages));
            w.WritePages(Pid42, Vaddr + 0x10000, 3, PagemapFlags.Parent, ReadOnlySequence<byte>.Empty);
        })));

        Assert.Equal(pages, frames[0].Pages);
        Assert.Equal((3u, PagemapFlags.Parent), (frames[1].Frame.NrPages, frames[1].Frame.Flags));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, Vaddr, 3, PagemapFlags.Present, new ReadOnlySequence<byte>(pages))));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, Vaddr, 2, PagemapFlags.Lazy, new ReadOnlySequence<byte>(pages))));
    }

    [Fact]
    public void WriterInputFromSegments_EncodesExactlyAsFromOneSpan()
    {
        var pages = PageData.Mixed(string.Concat(Enumerable.Repeat("tzrozt", 60)), seed: 8); // 360 pages, two batches
        var expected = Batch(pages, Vaddr);

        foreach (int chunk in new[] { 1000, 4096, 4097, 65536, 3 * 4096 + 7 })
        {
            Assert.Equal(expected, Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Present, Segment.Chunked(pages, chunk))));
        }

        var random = new Random(8);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(expected, Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Present, Segment.Random(pages, random, 20000))));
        }
    }

    [Theory]
    [InlineData("tzrozt")]
    [InlineData("zzzzrrrr")]
    [InlineData("rrrrrrrr")]
    [InlineData("zzzzzzzz")]
    public void Raw_WriterInputFromSegments_EncodesExactlyAsFromOneSpan(string pattern)
    {
        // Without compression the non-zero pages are copied straight into the frame, tested where they lie or, when a
        // page straddles two segments, after gathering: every way of cutting the input gives the same bytes.
        var raw = new PageFrameWriterOptions(disableCompression: true);
        var pages = PageData.Mixed(string.Concat(Enumerable.Repeat(pattern, 300 / pattern.Length)), seed: 11);
        var expected = Batch(pages, Vaddr, options: raw);
        Assert.All(ReadAll(new ReadOnlySequence<byte>(expected)), f => Assert.Equal(PageEncoding.Raw, f.Frame.Encoding));
        Assert.Equal(pages, ReadAll(new ReadOnlySequence<byte>(expected)).SelectMany(f => f.Pages));

        foreach (int chunk in new[] { 1000, 4096, 4097, 65536, 3 * 4096 + 7 })
        {
            Assert.Equal(expected, Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Present, Segment.Chunked(pages, chunk)), raw));
        }

        var random = new Random(11);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(expected, Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Present, Segment.Random(pages, random, 20000)), raw));
        }
    }

    [Fact]
    public void RawBatchWithZeroPages_PayloadInSegments_DecodesToTheirPlaces()
    {
        var pages = PageData.Mixed("zrtzzortrz", seed: 12);
        var bytes = Batch(pages, Vaddr, options: new PageFrameWriterOptions(disableCompression: true));
        Assert.Equal(PageEncoding.Raw, ReadOne(bytes).Encoding);

        var random = new Random(12);
        foreach (var buffer in new[] { Segment.Chunked(bytes, 1), Segment.Chunked(bytes, 4095), Segment.Random(bytes, random, 5000) })
        {
            var frames = ReadAll(buffer);
            Assert.Equal(pages, Assert.Single(frames).Pages);
        }
    }

    [Fact]
    public void RawBatchWithZeroPages_CorruptedPage_IsRefusedAndNothingIsLeft()
    {
        var bytes = Batch(PageData.Mixed("zrzt", seed: 13), Vaddr, options: new PageFrameWriterOptions(disableCompression: true));
        bytes[^100] ^= 0x01; // inside the last non-zero page

        Assert.Equal(PageStreamErrorCode.ChecksumMismatch, Undecodable(bytes).Code);
    }

    [Fact]
    public void ReaderInputInSegments_DecodesTheSame()
    {
        var text = PageData.Text(40, seed: 9);
        var mixed = PageData.Mixed("tztrrzozt", seed: 9);
        var bytes = Write(w =>
        {
            w.WriteOpen(Pid42);
            w.WritePages(Pid42, Vaddr, PagemapFlags.Present, text);
            w.WritePages(Pid42, Vaddr + 0x100000, PagemapFlags.Present, mixed);
            w.WriteRoundEnd(1);
        });

        var random = new Random(9);
        foreach (var buffer in new[]
        {
            Segment.Chunked(bytes, 1),
            Segment.Chunked(bytes, 7),
            Segment.Chunked(bytes, 4096),
            Segment.Random(bytes, random, 300),
            Segment.Random(bytes, random, 30000),
        })
        {
            var frames = ReadAll(buffer);
            Assert.Equal(4, frames.Count);
            Assert.Equal(text, frames[1].Pages);
            Assert.Equal(mixed, frames[2].Pages);
        }
    }

    [Fact]
    public void Batch_EveryTruncation_IsIncomplete_AndConsumesNothing()
    {
        var bytes = Batch(PageData.Mixed("tzrzo", seed: 10), Vaddr);
        for (int n = 0; n < bytes.Length; n++)
        {
            var buffer = new ReadOnlySequence<byte>(bytes, 0, n);
            var status = PageFrameReader.TryReadFrame(ref buffer, out _, out var error);
            Assert.True(status == PageFrameStatus.Incomplete, $"{n} of {bytes.Length} bytes: {status} {error}");
            Assert.Equal(n, buffer.Length);
        }

        // Also when the prefix arrives in small segments.
        for (int n = 0; n < bytes.Length; n += 97)
        {
            var buffer = Segment.Chunked(bytes[..n], 5);
            Assert.Equal(PageFrameStatus.Incomplete, PageFrameReader.TryReadFrame(ref buffer, out _, out _));
        }
    }

    [Fact]
    public void Writer_RefusesBadArguments()
    {
        var page = PageData.Text(1, seed: 11);
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Parent, page)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Present | PagemapFlags.Parent, page)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Present, page.AsSpan(0, 100))));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, Vaddr, PagemapFlags.Present, ReadOnlySpan<byte>.Empty)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, Vaddr + 1, PagemapFlags.Present, page)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(Pid42, PageFacts.MaxUserAddress, PagemapFlags.Present, page)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(new PageTarget(0, PageImageType.Pid), Vaddr, PagemapFlags.Present, page)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WritePages(new PageTarget(1, (PageImageType)9), Vaddr, PagemapFlags.Present, page)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WriteRun(Pid42, Vaddr, 1, PagemapFlags.Present)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WriteRun(Pid42, Vaddr, 0, PagemapFlags.Parent)));
        Assert.Throws<ArgumentException>(() => Write(w => w.WriteOpen(new PageTarget(0, PageImageType.Shmem))));
    }

    [Fact]
    public void Decode_RefusesCallerMistakes()
    {
        var frame = ReadOne(Batch(PageData.Text(2, seed: 12), Vaddr));
        Assert.Throws<ArgumentException>(() => PageFrameReader.TryDecodeBatch(frame, new byte[PageSize], out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => frame.IsZeroPage(2));

        var end = ReadOne(Write(w => w.WriteEnd()));
        Assert.Throws<ArgumentException>(() => PageFrameReader.TryDecodeBatch(end, [], out _));
        Assert.Throws<ArgumentException>(() => PageFrameReader.TryDecodeBatch(default, [], out _));
    }

    [Fact]
    public void Stats_Add()
    {
        var a = new PageStreamStats(1, 2, 3, 4, 5, 6, 7);
        Assert.Equal(new PageStreamStats(2, 4, 6, 8, 10, 12, 14), a + a);
        Assert.Equal(1.0, default(PageStreamStats).CompressionRatio);
    }

    private static void AssertRoundTrip(byte[] bytes, byte[] pages, ulong vaddr)
    {
        var frames = ReadAll(new ReadOnlySequence<byte>(bytes));
        Assert.Equal(pages, frames.SelectMany(f => f.Pages));
        Assert.Equal(vaddr, frames[0].Frame.Vaddr);
        Assert.All(frames, f => Assert.Equal(Pid42, f.Frame.Target));
    }
}

using Migration.PageServer.Streaming;
using Xunit;

namespace Migration.PageServer.Tests.Streaming;

public class Lz4Tests
{
    /// <summary>
    /// A block liblz4 1.9.4 made (LZ4_compress_fast, acceleration 1) of <see cref="LiblzText"/>: a peer still on the
    /// system library sends the same block format.
    /// </summary>
    private static readonly byte[] LiblzBlock =
    [
        0xff, 0x22, 0x6d, 0x69, 0x67, 0x72, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x20, 0x70, 0x61, 0x67, 0x65,
        0x20, 0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0x3a, 0x20, 0x63, 0x68, 0x65, 0x63, 0x6b, 0x70, 0x6f,
        0x69, 0x6e, 0x74, 0x20, 0x31, 0x37, 0x20, 0x72, 0x65, 0x73, 0x74, 0x6f, 0x72, 0x65, 0x20, 0x31,
        0x37, 0x3b, 0x20, 0x31, 0x00, 0x10, 0x16, 0x38, 0x31, 0x00, 0x1f, 0x38, 0x31, 0x00, 0x12, 0x16,
        0x39, 0x31, 0x00, 0x71, 0x39, 0x3b, 0x20, 0x6c, 0x61, 0x7a, 0x79, 0x8e, 0x00, 0x21, 0x73, 0x2c,
        0x07, 0x00, 0x30, 0x6d, 0x61, 0x70, 0x09, 0x00, 0xf0, 0x0b, 0x72, 0x65, 0x6e, 0x74, 0x20, 0x69,
        0x6d, 0x61, 0x67, 0x65, 0x2c, 0x20, 0x76, 0x61, 0x64, 0x64, 0x72, 0x20, 0x30, 0x78, 0x37, 0x66,
        0x30, 0x30, 0x2e, 0x20,
    ];

    private const string LiblzText =
        "migration page server: checkpoint 17 restore 17; migration page server: checkpoint 18 restore 18; "
        + "migration page server: checkpoint 19 restore 19; lazy pages, pagemap, parent image, vaddr 0x7f00. ";

    [Fact]
    public void CompressBound_IsLz4sFormula()
    {
        // LZ4_COMPRESSBOUND(isize) = isize + isize / 255 + 16 (lz4.h).
        Assert.Equal(16, Lz4.CompressBound(0));
        Assert.Equal((1 << 20) + (1 << 20) / 255 + 16, Lz4.CompressBound(1 << 20));
        Assert.Throws<ArgumentOutOfRangeException>(() => Lz4.CompressBound(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Lz4.CompressBound(Lz4.MaxInputSize + 1));
    }

    [Fact]
    public void TextLike_RoundTrips_AndShrinks()
    {
        var source = PageData.Text(16, seed: 1);
        var compressed = new byte[Lz4.CompressBound(source.Length)];

        Assert.True(Lz4.TryCompress(source, compressed, out int n));
        Assert.InRange(n, 1, source.Length / 2);

        var back = new byte[source.Length];
        Assert.True(Lz4.TryDecompress(compressed.AsSpan(0, n), back, out int m));
        Assert.Equal(source.Length, m);
        Assert.Equal(source, back);
    }

    [Theory]
    [InlineData("zzzz")]
    [InlineData("oooo")]
    [InlineData("trot")]
    [InlineData("rrtz")]
    public void Mixed_RoundTrips_InAnExactDestination(string pattern)
    {
        var source = PageData.Mixed(pattern, seed: 7);
        var compressed = new byte[Lz4.CompressBound(source.Length)];
        Assert.True(Lz4.TryCompress(source, compressed, out int n));

        var back = new byte[source.Length];
        Assert.True(Lz4.TryDecompress(compressed.AsSpan(0, n), back, out int m));
        Assert.Equal(source.Length, m);
        Assert.Equal(source, back);
    }

    [Fact]
    public void Empty_IsTheOneByteBlock_AndRoundTrips()
    {
        var compressed = new byte[Lz4.CompressBound(0)];
        Assert.True(Lz4.TryCompress([], compressed, out int n));
        Assert.Equal(1, n);
        Assert.Equal(0, compressed[0]);

        Assert.True(Lz4.TryDecompress(compressed.AsSpan(0, n), new byte[16], out int m));
        Assert.Equal(0, m);
        Assert.True(Lz4.TryDecompress(compressed.AsSpan(0, n), [], out m));
        Assert.Equal(0, m);
        Assert.False(Lz4.TryCompress([], [], out _));
    }

    [Fact]
    public void Random_DoesNotFitInLessThanItsOwnSize()
    {
        var source = PageData.Random(4, seed: 2);
        var destination = new byte[source.Length - 1];

        Assert.False(Lz4.TryCompress(source, destination, out int n));
        Assert.Equal(0, n);
    }

    [Fact]
    public void Compress_ShortDestination_WritesNothingPastIt()
    {
        var source = PageData.Random(4, seed: 8);
        var buffer = new byte[source.Length + 64];
        buffer.AsSpan().Fill(0xa5);

        Assert.False(Lz4.TryCompress(source, buffer.AsSpan(0, source.Length / 2), out _));
        Assert.All(buffer[(source.Length / 2)..], b => Assert.Equal(0xa5, b));
    }

    [Fact]
    public void Random_WithRoomToExpand_RoundTrips()
    {
        var source = PageData.Random(2, seed: 3);
        var compressed = new byte[Lz4.CompressBound(source.Length)];

        Assert.True(Lz4.TryCompress(source, compressed, out int n));
        Assert.True(n >= source.Length, $"random data compressed to {n} < {source.Length} bytes");

        var back = new byte[source.Length];
        Assert.True(Lz4.TryDecompress(compressed.AsSpan(0, n), back, out int m));
        Assert.Equal(source, back[..m]);
    }

    [Fact]
    public void Decompresses_ABlockLiblz4Made()
    {
        var back = new byte[LiblzText.Length];
        Assert.True(Lz4.TryDecompress(LiblzBlock, back, out int m));
        Assert.Equal(LiblzText.Length, m);
        Assert.Equal(LiblzText, System.Text.Encoding.ASCII.GetString(back));
    }

    [Fact]
    public void Decompress_TooSmallDestination_Fails_WithoutWritingPastIt()
    {
        var source = PageData.Text(2, seed: 5);
        var compressed = new byte[Lz4.CompressBound(source.Length)];
        Assert.True(Lz4.TryCompress(source, compressed, out int n));

        var destination = new byte[source.Length];
        Assert.False(Lz4.TryDecompress(compressed.AsSpan(0, n), destination.AsSpan(0, source.Length - 1), out _));
        Assert.Equal(0, destination[^1]);
    }

    [Fact]
    public void Decompress_LargerDestination_TellsTheShorterLength()
    {
        // The frame reader refuses a batch whose block does not fill exactly the length the frame declares; it learns
        // that from bytesWritten.
        var source = PageData.Text(1, seed: 6);
        var compressed = new byte[Lz4.CompressBound(source.Length)];
        Assert.True(Lz4.TryCompress(source, compressed, out int n));

        var destination = new byte[2 * source.Length];
        Assert.True(Lz4.TryDecompress(compressed.AsSpan(0, n), destination, out int m));
        Assert.Equal(source.Length, m);
        Assert.Equal(source, destination[..m]);
    }

    [Theory]
    [InlineData(new byte[] { })]
    [InlineData(new byte[] { 0xff })]
    [InlineData(new byte[] { 0x10 })]
    [InlineData(new byte[] { 0xf0, 0x01, 0x02 })]
    [InlineData(new byte[] { 0x1f, 0x61, 0xff, 0xff, 0x00 })]
    [InlineData(new byte[] { 0x11, 0x61, 0x02, 0x00, 0x10, 0x61 })] // match offset before the start of the output
    [InlineData(new byte[] { 0x00, 0x00 })]
    public void Decompress_Garbage_Fails(byte[] garbage)
    {
        Assert.False(Lz4.TryDecompress(garbage, new byte[4096], out int n));
        Assert.Equal(0, n);
        Assert.False(Lz4.TryDecompress(garbage, [], out _));
    }

    [Fact]
    public void Decompress_MatchOffsetZero_IsRefused_WhateverTheDestinationHeld()
    {
        // Found by the fuzzer (tests/Fuzz, page-frame): a batch decoded in one buffer and failed its checksum in
        // another. 16 literals, then a match of offset 0 (not in the format; LZ4's safe decoder copies the unwritten
        // bytes at the write position), then 16 literals: the output would be whatever the buffer held before.
        byte[] block = [0xF0, 0x01, .. Enumerable.Repeat((byte)'L', 16), 0x00, 0x00, 0xF0, 0x01, .. Enumerable.Repeat((byte)'T', 16)];
        var stale = new byte[36];
        stale.AsSpan().Fill(0xAB);

        Assert.False(Lz4.TryDecompress(block, new byte[36], out _));
        Assert.False(Lz4.TryDecompress(block, stale, out _));
    }

    [Fact]
    public void Decompress_OverlappingMatches_StillDecode()
    {
        // Offsets 1 and 4 (runs and repeats: what zero-heavy pages compress to) are the format's, not offset 0.
        var pages = new byte[2 * 4096];
        pages.AsSpan(100, 50).Fill(7);
        for (int i = 5000; i < 6000; i += 4)
        {
            pages[i] = 1;
        }

        var compressed = new byte[Lz4.CompressBound(pages.Length)];
        Assert.True(Lz4.TryCompress(pages, compressed, out int n));
        var back = new byte[pages.Length];

        Assert.True(Lz4.TryDecompress(compressed.AsSpan(0, n), back, out int m));
        Assert.Equal(pages.Length, m);
        Assert.Equal(pages, back);
    }

    [Fact]
    public void Decompress_DamagedBlocks_NeverThrow_NorWritePastTheDestination()
    {
        // Untrusted input: truncated and bit-flipped blocks of every kind of page, into a destination of exactly the
        // original length inside a guarded buffer. Each must come back false or as some output within the destination.
        var random = new Random(9);
        const int Guard = 64;
        foreach (var pattern in new[] { "tttt", "ootz", "rtot", "zzzz" })
        {
            var source = PageData.Mixed(pattern, seed: 10);
            var compressed = new byte[Lz4.CompressBound(source.Length)];
            Assert.True(Lz4.TryCompress(source, compressed, out int n));
            var buffer = new byte[source.Length + 2 * Guard];
            for (int trial = 0; trial < 300; trial++)
            {
                var damaged = compressed.AsSpan(0, n).ToArray();
                if (trial % 3 == 0)
                {
                    damaged = damaged[..random.Next(damaged.Length)];
                }
                else
                {
                    for (int flips = 1 + random.Next(4); flips > 0; flips--)
                    {
                        damaged[random.Next(damaged.Length)] ^= (byte)(1 << random.Next(8));
                    }
                }

                buffer.AsSpan().Fill(0xa5);
                bool ok = Lz4.TryDecompress(damaged, buffer.AsSpan(Guard, source.Length), out int m);
                Assert.InRange(m, 0, ok ? source.Length : 0);
                Assert.All(buffer[..Guard], b => Assert.Equal(0xa5, b));
                Assert.All(buffer[(Guard + source.Length)..], b => Assert.Equal(0xa5, b));
            }
        }
    }
}

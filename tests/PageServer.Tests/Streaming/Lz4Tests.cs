using Migration.PageServer.Streaming;
using Xunit;

namespace Migration.PageServer.Tests.Streaming;

public class Lz4Tests
{
    [Fact]
    public void SystemLibrary_LoadsAndIsNewEnough()
    {
        Assert.True(Lz4.IsAvailable, "liblz4.so.1 did not load: apt-get install liblz4-1");
        Assert.True(Lz4.Version >= Lz4.MinimumVersion, $"liblz4 version {Lz4.Version}");
    }

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

    [Fact]
    public void Random_DoesNotFitInLessThanItsOwnSize()
    {
        var source = PageData.Random(4, seed: 2);
        var destination = new byte[source.Length - 1];

        Assert.False(Lz4.TryCompress(source, destination, out int n));
        Assert.Equal(0, n);
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
    public void Acceleration_IsHonouredAndRangeChecked()
    {
        var source = PageData.Text(16, seed: 4);
        var compressed = new byte[Lz4.CompressBound(source.Length)];
        Assert.True(Lz4.TryCompress(source, compressed, out int slowest, 1));
        Assert.True(Lz4.TryCompress(source, compressed, out int fastest, Lz4.MaxAcceleration));
        Assert.True(fastest >= slowest, $"acceleration {Lz4.MaxAcceleration} gave {fastest} bytes, 1 gave {slowest}");

        Assert.Throws<ArgumentOutOfRangeException>(() => Lz4.TryCompress(source, compressed, out _, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Lz4.TryCompress(source, compressed, out _, Lz4.MaxAcceleration + 1));
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

    [Theory]
    [InlineData(new byte[] { })]
    [InlineData(new byte[] { 0xff })]
    [InlineData(new byte[] { 0xf0, 0x01, 0x02 })]
    [InlineData(new byte[] { 0x1f, 0x61, 0xff, 0xff, 0x00 })]
    public void Decompress_Garbage_Fails(byte[] garbage)
    {
        Assert.False(Lz4.TryDecompress(garbage, new byte[4096], out _));
    }

    [Fact]
    public void Options_RangeCheckAcceleration()
    {
        Assert.Equal(Lz4.DefaultAcceleration, PageFrameWriterOptions.Default.Lz4Acceleration);
        Assert.Throws<ArgumentOutOfRangeException>(() => new PageFrameWriterOptions(lz4Acceleration: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PageFrameWriterOptions(lz4Acceleration: Lz4.MaxAcceleration + 1));
    }
}

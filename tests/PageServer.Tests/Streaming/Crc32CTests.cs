using System.Text;
using Migration.PageServer.Streaming;
using Xunit;

namespace Migration.PageServer.Tests.Streaming;

public class Crc32CTests
{
    [Theory]
    [InlineData("", 0x00000000u)]
    [InlineData("123456789", 0xE3069283u)] // the CRC catalogue's check value for CRC-32/ISCSI
    [InlineData("a", 0xC1D04330u)]
    public void KnownAnswers(string text, uint expected)
    {
        Assert.Equal(expected, Crc32C.Compute(Encoding.ASCII.GetBytes(text)));
    }

    [Fact]
    public void Rfc3720_B4_Vectors()
    {
        Assert.Equal(0x8A9136AAu, Crc32C.Compute(new byte[32]));
        Assert.Equal(0x62A8AB43u, Crc32C.Compute(Enumerable.Repeat((byte)0xff, 32).ToArray()));
        Assert.Equal(0x46DD794Eu, Crc32C.Compute(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray()));
        Assert.Equal(0x113FDB5Cu, Crc32C.Compute(Enumerable.Range(0, 32).Select(i => (byte)(31 - i)).ToArray()));
    }

    [Fact]
    public void Update_InPieces_EqualsOneShot_AtEveryAlignment()
    {
        var data = PageData.Random(1, seed: 9).AsSpan(0, 1000).ToArray();
        uint whole = Crc32C.Compute(data);
        for (int cut = 0; cut <= 17; cut++)
        {
            uint state = Crc32C.Update(Crc32C.InitialState, data.AsSpan(0, cut));
            state = Crc32C.Update(state, data.AsSpan(cut));
            Assert.Equal(whole, Crc32C.Finish(state));
        }
    }

    [Theory]
    [InlineData(4079)]
    [InlineData(4080)] // exactly one stripe of three blocks
    [InlineData(4081)]
    [InlineData(4096)] // a page: one stripe and 16 bytes
    [InlineData(8160)]
    [InlineData(8167)]
    [InlineData(1 << 20)]
    public void Striped_EqualsOneByteAtATime(int length)
    {
        var data = new byte[length];
        new Random(length).NextBytes(data);
        foreach (uint initial in new[] { Crc32C.InitialState, 0u, 0x12345678u })
        {
            Assert.Equal(Reference(initial, data), Crc32C.Update(initial, data));
        }
    }

    [Fact]
    public void Striped_ZerosAndOnes_EqualOneByteAtATime()
    {
        // The shift tables are exercised by every bit of the first two chains' states: all-zero and all-ones data
        // drive those states to very different values.
        foreach (byte fill in new byte[] { 0x00, 0xff, 0x80 })
        {
            var data = Enumerable.Repeat(fill, 3 * Crc32C.BlockBytes * 2).ToArray();
            Assert.Equal(Reference(Crc32C.InitialState, data), Crc32C.Update(Crc32C.InitialState, data));
        }
    }

    [Fact]
    public void Update_InPieces_AcrossStripes_EqualsOneShot()
    {
        var data = new byte[3 * 4096];
        new Random(5).NextBytes(data);
        uint whole = Crc32C.Compute(data);
        foreach (int cut in new[] { 1, 8, 4079, 4080, 4081, 4096, 8191, 3 * 4096 - 1 })
        {
            uint state = Crc32C.Update(Crc32C.InitialState, data.AsSpan(0, cut));
            state = Crc32C.Update(state, data.AsSpan(cut));
            Assert.Equal(whole, Crc32C.Finish(state));
        }
    }

    /// <summary>The definition, one byte per instruction: what the striped path must equal.</summary>
    private static uint Reference(uint state, ReadOnlySpan<byte> data)
    {
        foreach (byte b in data)
        {
            state = System.Numerics.BitOperations.Crc32C(state, b);
        }

        return state;
    }
}

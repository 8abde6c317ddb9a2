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
}

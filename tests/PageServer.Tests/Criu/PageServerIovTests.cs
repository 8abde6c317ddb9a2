using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Xunit;

namespace Migration.PageServer.Tests.Criu;

public class PageServerIovTests
{
    /// <summary>ADD_F | PE_PRESENT, 0x0102 pages at 0x7f0011223000 for pid 0x1234: CRIU's struct byte by byte.</summary>
    private static readonly byte[] AddFPresent =
    [
        0x06, 0x00, 0x04, 0x00,                         // u32 cmd = PE_PRESENT (4) << 16 | PS_IOV_ADD_F (6), little-endian
        0x00, 0x00, 0x00, 0x00,                         // u32 pad (alignment hole before the u64s)
        0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // u64 nr_pages = 0x102
        0x00, 0x30, 0x22, 0x11, 0x00, 0x7f, 0x00, 0x00, // u64 vaddr = 0x7f0011223000
        0x01, 0x34, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, // u64 dst_id = 0x1234 << 8 | PS_TYPE_PID (1)
    ];

    [Fact]
    public void Write_IsCriusThirtyTwoByteStruct()
    {
        var iov = PageServerIov.Create(PageServerCommand.AddF, PagemapFlags.Present, 0x102, 0x7f0011223000, (0x1234UL << 8) | 1);
        var bytes = new byte[PageServerIov.Size];

        iov.Write(bytes);

        Assert.Equal(32, PageServerIov.Size);
        Assert.Equal(AddFPresent, bytes);
    }

    [Fact]
    public void Read_DecodesEveryField()
    {
        var iov = PageServerIov.Read(AddFPresent);

        Assert.Equal(0x00040006u, iov.Cmd);
        Assert.Equal(PageServerCommand.AddF, iov.Command);
        Assert.Equal(4u, iov.FlagBits);
        Assert.Equal(PagemapFlags.Present, iov.Flags);
        Assert.Equal(0x102UL, iov.NrPages);
        Assert.Equal(0x7f0011223000UL, iov.Vaddr);
        Assert.Equal(0x123401UL, iov.DstId);
    }

    [Fact]
    public void Read_IgnoresThePad_WriteZeroesIt()
    {
        var withPad = (byte[])AddFPresent.Clone();
        withPad[4] = 0xde;
        withPad[7] = 0xad;

        var iov = PageServerIov.Read(withPad);
        var rewritten = new byte[PageServerIov.Size];
        iov.Write(rewritten);

        Assert.Equal(PageServerIov.Read(AddFPresent), iov);
        Assert.Equal(AddFPresent, rewritten);
    }

    [Theory]
    [InlineData(PageServerCommand.Add, 0u, 0x00000001u)]
    [InlineData(PageServerCommand.Hole, 0u, 0x00000002u)]
    [InlineData(PageServerCommand.Open, 0u, 0x00000003u)]
    [InlineData(PageServerCommand.Open2, 0u, 0x00000004u)]
    [InlineData(PageServerCommand.Parent, 0u, 0x00000005u)]
    [InlineData(PageServerCommand.AddF, 1u, 0x00010006u)] // PE_PARENT
    [InlineData(PageServerCommand.AddF, 2u, 0x00020006u)] // PE_LAZY
    [InlineData(PageServerCommand.AddF, 6u, 0x00060006u)] // PE_PRESENT | PE_LAZY
    [InlineData(PageServerCommand.Get, 0u, 0x00000007u)]
    [InlineData(PageServerCommand.Close, 0u, 0x00001023u)]
    [InlineData(PageServerCommand.ForceClose, 0u, 0x00001024u)]
    public void Cmd_IsFlagsShiftedSixteenOrCommand(ushort command, uint flags, uint cmd)
    {
        Assert.Equal(cmd, PageServerIov.EncodeCmd(command, (PagemapFlags)flags));

        var iov = new PageServerIov(cmd, 0, 0, 0);
        Assert.Equal(command, iov.Command);
        Assert.Equal(flags, iov.FlagBits);
    }

    [Fact]
    public void CommandNumbers_AreCriusPsIovValues()
    {
        Assert.Equal(1, PageServerCommand.Add);
        Assert.Equal(2, PageServerCommand.Hole);
        Assert.Equal(3, PageServerCommand.Open);
        Assert.Equal(4, PageServerCommand.Open2);
        Assert.Equal(5, PageServerCommand.Parent);
        Assert.Equal(6, PageServerCommand.AddF);
        Assert.Equal(7, PageServerCommand.Get);
        Assert.Equal(0x1023, PageServerCommand.Close);
        Assert.Equal(0x1024, PageServerCommand.ForceClose);
        Assert.Equal(1u, (uint)PagemapFlags.Parent);
        Assert.Equal(2u, (uint)PagemapFlags.Lazy);
        Assert.Equal(4u, (uint)PagemapFlags.Present);
    }

    [Fact]
    public void RunFlags_LegacyAddIsPresent_LegacyHoleIsParent_AddFCarriesItsOwn()
    {
        Assert.Equal(PagemapFlags.Present, new PageServerIov(PageServerCommand.Add, 1, 0, 0).RunFlags);
        Assert.Equal(PagemapFlags.Parent, new PageServerIov(PageServerCommand.Hole, 1, 0, 0).RunFlags);
        Assert.Equal(PagemapFlags.Present | PagemapFlags.Lazy, new PageServerIov(0x00060006, 1, 0, 0).RunFlags);
        Assert.Equal(PagemapFlags.None, new PageServerIov(PageServerCommand.Open2, 0, 0, 0).RunFlags);
    }

    [Fact]
    public void Cmd_UnknownHighBits_AreKeptInFlagBits()
    {
        var iov = new PageServerIov(0xabcd0006, 0, 0, 0);

        Assert.Equal(PageServerCommand.AddF, iov.Command);
        Assert.Equal(0xabcdu, iov.FlagBits);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(31)]
    public void TryRead_FewerThanThirtyTwoBytes_IsFalse_AndConsumesNothing(int available)
    {
        var buffer = new ReadOnlySequence<byte>(AddFPresent.AsMemory(0, available));
        var before = buffer;

        Assert.False(PageServerIov.TryRead(ref buffer, out var iov));

        Assert.Equal(before, buffer);
        Assert.Equal(default, iov);
    }

    [Fact]
    public void TryRead_ExactlyOneHeader_ConsumesAllThirtyTwo()
    {
        var buffer = new ReadOnlySequence<byte>(AddFPresent);

        Assert.True(PageServerIov.TryRead(ref buffer, out var iov));

        Assert.Equal(0, buffer.Length);
        Assert.Equal(PageServerIov.Read(AddFPresent), iov);
    }

    [Fact]
    public void TryRead_HeaderThenData_ConsumesOnlyTheHeader()
    {
        byte[] bytes = [.. AddFPresent, 0xaa, 0xbb];
        var whole = new ReadOnlySequence<byte>(bytes);
        var buffer = whole;

        Assert.True(PageServerIov.TryRead(ref buffer, out _));

        Assert.Equal(whole.GetPosition(32), buffer.Start); // consumed: the 32 header bytes, not one more
        Assert.Equal(whole.End, buffer.End);
        Assert.Equal(new byte[] { 0xaa, 0xbb }, buffer.ToArray());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]   // cmd | pad
    [InlineData(8)]   // pad | nr_pages
    [InlineData(13)]  // inside nr_pages
    [InlineData(24)]  // vaddr | dst_id
    [InlineData(31)]
    public void TryRead_HeaderSplitAcrossSegments_ReadsTheSameHeader(int split)
    {
        byte[] bytes = [.. AddFPresent, 0x77];
        var buffer = Segments(bytes[..split], bytes[split..]);
        Assert.False(buffer.IsSingleSegment);

        Assert.True(PageServerIov.TryRead(ref buffer, out var iov));

        Assert.Equal(PageServerIov.Read(AddFPresent), iov);
        Assert.Equal(new byte[] { 0x77 }, buffer.ToArray());
    }

    [Fact]
    public void TryRead_HeaderInManyOneByteSegments_ReadsTheSameHeader()
    {
        var buffer = Segments([.. AddFPresent.Select(b => new[] { b })]);

        Assert.True(PageServerIov.TryRead(ref buffer, out var iov));

        Assert.Equal(PageServerIov.Read(AddFPresent), iov);
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void TryRead_TwoHeadersBackToBack_ReadsBothInOrder()
    {
        var close = CriuWire.Close();
        var buffer = Segments(AddFPresent[..20], [.. AddFPresent[20..], .. close[..5]], close[5..]);

        Assert.True(PageServerIov.TryRead(ref buffer, out var first));
        Assert.True(PageServerIov.TryRead(ref buffer, out var second));
        Assert.False(PageServerIov.TryRead(ref buffer, out _));

        Assert.Equal(PageServerCommand.AddF, first.Command);
        Assert.Equal(new PageServerIov(PageServerCommand.Close, 0, 0, 0), second);
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void ReadAndWrite_RejectShortSpans()
    {
        Assert.Throws<ArgumentException>(() => PageServerIov.Read(new byte[31]));
        Assert.Throws<ArgumentException>(() => default(PageServerIov).Write(new byte[31]));
    }

    [Fact]
    public void ToString_NamesCommandAndFields()
    {
        var text = PageServerIov.Read(AddFPresent).ToString();

        Assert.Equal("ADD_F flags 0x4 nr_pages 258 vaddr 0x7f0011223000 dst_id 0x123401", text);
    }

    /// <summary>A sequence made of the given segments, in order.</summary>
    internal static ReadOnlySequence<byte> Segments(params byte[][] parts)
    {
        var first = new Segment(parts[0], 0);
        var last = first;
        foreach (var part in parts.Skip(1))
        {
            last = last.Append(part);
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}

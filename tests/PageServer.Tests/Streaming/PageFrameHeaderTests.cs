using System.Buffers;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;
using Xunit;
using static Migration.PageServer.Tests.Streaming.Frames;

namespace Migration.PageServer.Tests.Streaming;

public class PageFrameHeaderTests
{
    [Fact]
    public void End_IsHeaderOnly()
    {
        byte[] expected =
        [
            0x4d, 0x50, 0x53, 0x4d, // magic "MPSM" (0x4D53504D little-endian)
            0x07,                   // kind END
            0x00,                   // reserved
            0x0c, 0x00,             // header length 12
            0x00, 0x00, 0x00, 0x00, // body length 0
        ];
        Assert.Equal(expected, Write(w => w.WriteEnd()));
    }

    [Fact]
    public void RoundEnd_And_RoundAck_CarryTheRoundIdLittleEndian()
    {
        byte[] header(byte kind) => [0x4d, 0x50, 0x53, 0x4d, kind, 0x00, 0x0c, 0x00, 0x08, 0x00, 0x00, 0x00];
        byte[] roundId = [0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]; // 0x0102030405060708

        Assert.Equal([.. header(0x04), .. roundId], Write(w => w.WriteRoundEnd(0x0102030405060708)));
        Assert.Equal([.. header(0x05), .. roundId], Write(w => w.WriteRoundAck(0x0102030405060708)));
    }

    [Fact]
    public void Open_IsTargetIdThenType()
    {
        byte[] expected =
        [
            0x4d, 0x50, 0x53, 0x4d, 0x02, 0x00, 0x0c, 0x00, // magic, kind OPEN, reserved, header length
            0x05, 0x00, 0x00, 0x00,                         // body length 5
            0xd2, 0x04, 0x00, 0x00,                         // id 1234
            0x02,                                           // type shmem
        ];
        Assert.Equal(expected, Write(w => w.WriteOpen(new PageTarget(1234, PageImageType.Shmem))));

        var frame = ReadOne(expected);
        Assert.Equal(PageFrameKind.Open, frame.Kind);
        Assert.Equal(new PageTarget(1234, PageImageType.Shmem), frame.Target);
        Assert.Equal(17, frame.Length);
    }

    [Fact]
    public void Hello_IsVersionThenLengthPrefixedUtf8Id()
    {
        byte[] expected =
        [
            0x4d, 0x50, 0x53, 0x4d, 0x01, 0x00, 0x0c, 0x00, // magic, kind HELLO, reserved, header length
            0x09, 0x00, 0x00, 0x00,                         // body length 9
            0x01, 0x00, 0x00, 0x00,                         // protocol version 1
            0x03, 0x00,                                     // id length 3
            0x6d, 0xc3, 0xa9,                               // "mé" in UTF-8
        ];
        Assert.Equal(expected, Write(w => w.WriteHello("mé")));

        var frame = ReadOne(expected);
        Assert.Equal(PageFrameKind.Hello, frame.Kind);
        Assert.Equal(1u, frame.ProtocolVersion);
        Assert.Equal("mé", frame.MigrationId);
    }

    [Fact]
    public void Error_IsLengthPrefixedUtf8Message()
    {
        byte[] expected =
        [
            0x4d, 0x50, 0x53, 0x4d, 0x06, 0x00, 0x0c, 0x00, // magic, kind ERROR, reserved, header length
            0x04, 0x00, 0x00, 0x00,                         // body length 4
            0x02, 0x00,                                     // message length 2
            0x6e, 0x6f,                                     // "no"
        ];
        Assert.Equal(expected, Write(w => w.WriteError("no")));
        Assert.Equal("no", ReadOne(expected).ErrorMessage);
    }

    [Fact]
    public void Error_LongMessage_IsTruncatedAtACharacterBoundary()
    {
        // 'é' is two bytes: 600 of them are 1200 bytes; 512 whole ones fit in 1024.
        var frame = ReadOne(Write(w => w.WriteError(new string('é', 600))));
        Assert.Equal(new string('é', 512), frame.ErrorMessage);

        // A 3-byte character straddling the limit is dropped whole.
        frame = ReadOne(Write(w => w.WriteError(new string('x', 1022) + "€tail")));
        Assert.Equal(new string('x', 1022), frame.ErrorMessage);
    }

    [Fact]
    public void Hello_IdOutsideLimits_IsRefusedByTheWriter()
    {
        Assert.Throws<ArgumentException>(() => Write(w => w.WriteHello("")));
        Assert.Throws<ArgumentException>(() => Write(w => w.WriteHello(new string('x', PageStreamProtocol.MaxMigrationIdBytes + 1))));
        Assert.Equal(64, ReadOne(Write(w => w.WriteHello(new string('x', 64)))).MigrationId!.Length);
    }

    [Fact]
    public void TryReadFrame_ConsumesOneFrameAtATime()
    {
        var bytes = Write(w =>
        {
            w.WriteEnd();         // 12 bytes
            w.WriteRoundAck(7);   // 20 bytes
        });
        var original = new ReadOnlySequence<byte>(bytes);
        var buffer = original;

        Assert.Equal(PageFrameStatus.Complete, PageFrameReader.TryReadFrame(ref buffer, out var first, out _));
        Assert.Equal(PageFrameKind.End, first.Kind);
        Assert.Equal(12, original.GetOffset(buffer.Start)); // consumed: the END frame
        Assert.Equal(original.End, buffer.End);

        Assert.Equal(PageFrameStatus.Complete, PageFrameReader.TryReadFrame(ref buffer, out var second, out _));
        Assert.Equal(PageFrameKind.RoundAck, second.Kind);
        Assert.Equal(7ul, second.RoundId);
        Assert.Equal(32, original.GetOffset(buffer.Start));

        // Nothing left: Incomplete, nothing consumed; the caller examines to buffer.End.
        Assert.Equal(PageFrameStatus.Incomplete, PageFrameReader.TryReadFrame(ref buffer, out _, out var error));
        Assert.False(error.IsError);
        Assert.Equal(32, original.GetOffset(buffer.Start));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(11)]
    public void TryReadFrame_PartialHeader_IsIncomplete_AndConsumesNothing(int available)
    {
        var bytes = Write(w => w.WriteEnd())[..available];
        var buffer = new ReadOnlySequence<byte>(bytes);
        var before = buffer;

        Assert.Equal(PageFrameStatus.Incomplete, PageFrameReader.TryReadFrame(ref buffer, out var frame, out var error));
        Assert.Equal(before.Start, buffer.Start);
        Assert.Equal(before.End, buffer.End);
        Assert.Equal(default, frame.Kind);
        Assert.False(error.IsError);
    }

    [Fact]
    public void TryReadFrame_HeaderCompleteBodyShort_IsIncomplete_AndConsumesNothing()
    {
        byte[] bytes =
        [
            0x4d, 0x50, 0x53, 0x4d, 0x04, 0x00, 0x0c, 0x00, // ROUND_END
            0x08, 0x00, 0x00, 0x00,                         // body length 8
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,       // only 7 of them
        ];
        var buffer = new ReadOnlySequence<byte>(bytes);

        Assert.Equal(PageFrameStatus.Incomplete, PageFrameReader.TryReadFrame(ref buffer, out _, out _));
        Assert.Equal(19, buffer.Length);
    }

    [Fact]
    public void TryReadFrame_BodyLengthOverTheMaximum_IsRefusedBeforeTheBodyArrives()
    {
        byte[] bytes =
        [
            0x4d, 0x50, 0x53, 0x4d, 0x03, 0x00, 0x0c, 0x00, // BATCH
            0xff, 0xff, 0xff, 0x7f,                         // body length 2 GiB - 1, and no body
        ];
        var error = Refused(bytes);
        Assert.Equal(PageStreamErrorCode.BadBodyLength, error.Code);
        Assert.Contains("2147483647", error.Message);
        Assert.Contains(PageStreamProtocol.MaxBatchBodyLength.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message);
    }

    [Fact]
    public void TryReadFrame_MaximalBatchBody_IsWaitedFor()
    {
        byte[] bytes = [0x4d, 0x50, 0x53, 0x4d, 0x03, 0x00, 0x0c, 0x00, 0, 0, 0, 0];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), PageStreamProtocol.MaxBatchBodyLength);
        var buffer = new ReadOnlySequence<byte>(bytes);
        Assert.Equal(PageFrameStatus.Incomplete, PageFrameReader.TryReadFrame(ref buffer, out _, out _));
    }

    [Fact]
    public void TryReadFrame_HeaderSplitAcrossSegments_AtEveryOffset()
    {
        var bytes = Write(w =>
        {
            w.WriteRoundEnd(0xabcdef);
            w.WriteEnd();
        });
        for (int cut = 1; cut < bytes.Length; cut++)
        {
            var buffer = Segment.Split(bytes, cut);
            Assert.Equal(PageFrameStatus.Complete, PageFrameReader.TryReadFrame(ref buffer, out var frame, out _));
            Assert.Equal(0xabcdeful, frame.RoundId);
            Assert.Equal(PageFrameStatus.Complete, PageFrameReader.TryReadFrame(ref buffer, out frame, out _));
            Assert.Equal(PageFrameKind.End, frame.Kind);
            Assert.True(buffer.IsEmpty);
        }
    }

    [Fact]
    public void TryReadFrame_EveryKind_EveryTruncation_IsIncomplete()
    {
        var frames = new[]
        {
            Write(w => w.WriteHello("migration-1")),
            Write(w => w.WriteOpen(Pid42)),
            Write(w => w.WriteRoundEnd(1)),
            Write(w => w.WriteRoundAck(1)),
            Write(w => w.WriteError("it broke")),
            Write(w => w.WriteEnd()),
            Write(w => w.WriteRun(Pid42, 0x10000, 5, Engine.Images.PagemapFlags.Parent)),
        };
        foreach (var bytes in frames)
        {
            for (int n = 0; n < bytes.Length; n++)
            {
                var buffer = new ReadOnlySequence<byte>(bytes, 0, n);
                var status = PageFrameReader.TryReadFrame(ref buffer, out _, out var error);
                Assert.True(status == PageFrameStatus.Incomplete, $"{n} of {bytes.Length} bytes of kind {bytes[4]}: {status} {error}");
                Assert.Equal(n, buffer.Length);
            }

            ReadOne(bytes);
        }
    }

    [Fact]
    public void Stats_CountEveryWireByte()
    {
        var output = new ArrayBufferWriter<byte>();
        using var writer = new PageFrameWriter(output);
        writer.WriteHello("m");
        writer.WriteOpen(Pid42);
        writer.WriteEnd();

        Assert.Equal(output.WrittenCount, writer.Stats.WireBytes);
        Assert.Equal(0, writer.Stats.Pages);
    }

    [Fact]
    public void Writer_AfterDispose_Throws()
    {
        var writer = new PageFrameWriter(new ArrayBufferWriter<byte>());
        writer.Dispose();
        writer.Dispose();
        Assert.Throws<ObjectDisposedException>(() => writer.WriteEnd());
        Assert.Throws<ObjectDisposedException>(() => writer.WritePages(Pid42, 0, Engine.Images.PagemapFlags.Present, new byte[4096]));
    }
}

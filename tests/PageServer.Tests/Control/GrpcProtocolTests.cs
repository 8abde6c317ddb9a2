using System.Buffers;
using Migration.Engine.Network;
using Migration.PageServer.Control;
using Xunit;

namespace Migration.PageServer.Tests.Control;

public class GrpcProtocolFrameTests
{
    private const int Max = 1024;

    [Fact]
    public void Frame_IsFlagThenBigEndianLengthThenPayload()
    {
        var frame = GrpcProtocol.Frame([0xaa, 0xbb, 0xcc]);

        byte[] expected =
        [
            0x00,                   // compressed flag: no
            0x00, 0x00, 0x00, 0x03, // length 3, big-endian
            0xaa, 0xbb, 0xcc,       // payload
        ];
        Assert.Equal(expected, frame);
    }

    [Fact]
    public void Frame_LengthUsesAllFourBytesBigEndian()
    {
        var frame = GrpcProtocol.Frame(new byte[0x010203]);

        Assert.Equal(new byte[] { 0x00, 0x00, 0x01, 0x02, 0x03 }, frame[..5]);
        Assert.Equal(5 + 0x010203, frame.Length);
    }

    [Fact]
    public void Frame_EmptyMessage_IsHeaderOnly()
    {
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0 }, GrpcProtocol.Frame([]));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4)]
    public void TryReadFrame_FewerThanHeaderBytes_IsIncomplete_AndConsumesNothing(int available)
    {
        var bytes = new byte[] { 0x00, 0x00, 0x00, 0x00, 0x02, 0x61, 0x62 }[..available];
        var buffer = new ReadOnlySequence<byte>(bytes);
        var before = buffer;

        var status = GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload);

        Assert.Equal(GrpcProtocol.FrameStatus.Incomplete, status);
        Assert.Equal(before, buffer);
        Assert.True(payload.IsEmpty);
    }

    [Fact]
    public void TryReadFrame_HeaderCompleteBodyShort_IsIncomplete_AndConsumesNothing()
    {
        byte[] bytes =
        [
            0x00, 0x00, 0x00, 0x00, 0x04, // flag 0, length 4
            0x61, 0x62, 0x63,             // only 3 of the 4 payload bytes
        ];
        var buffer = new ReadOnlySequence<byte>(bytes);
        var before = buffer;

        var status = GrpcProtocol.TryReadFrame(ref buffer, Max, out _);

        Assert.Equal(GrpcProtocol.FrameStatus.Incomplete, status);
        Assert.Equal(before, buffer);
        Assert.Equal(8, buffer.Length);
    }

    [Fact]
    public void TryReadFrame_ExactFrame_IsComplete_AndConsumesAll()
    {
        byte[] bytes =
        [
            0x00, 0x00, 0x00, 0x00, 0x03, // flag 0, length 3
            0x61, 0x62, 0x63,             // "abc"
        ];
        var buffer = new ReadOnlySequence<byte>(bytes);

        var status = GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload);

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, status);
        Assert.Equal("abc"u8.ToArray(), payload.ToArray());
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void TryReadFrame_EmptyMessage_IsComplete()
    {
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 0, 0 });

        var status = GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload);

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, status);
        Assert.True(payload.IsEmpty);
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void TryReadFrame_TwoFramesBackToBack_ConsumesOnlyTheFirst()
    {
        byte[] bytes =
        [
            0x00, 0x00, 0x00, 0x00, 0x02, 0x61, 0x62,       // frame 1: "ab"
            0x00, 0x00, 0x00, 0x00, 0x03, 0x78, 0x79, 0x7a, // frame 2: "xyz"
        ];
        var buffer = new ReadOnlySequence<byte>(bytes);

        var first = GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload1);

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, first);
        Assert.Equal("ab"u8.ToArray(), payload1.ToArray());
        Assert.Equal(bytes[7..], buffer.ToArray());

        var second = GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload2);

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, second);
        Assert.Equal("xyz"u8.ToArray(), payload2.ToArray());
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void TryReadFrame_FrameThenPartialFrame_LeavesThePartOfTheSecond()
    {
        byte[] bytes =
        [
            0x00, 0x00, 0x00, 0x00, 0x01, 0x61, // frame 1: "a"
            0x00, 0x00, 0x00,                   // first 3 header bytes of frame 2
        ];
        var buffer = new ReadOnlySequence<byte>(bytes);

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, GrpcProtocol.TryReadFrame(ref buffer, Max, out _));
        var rest = buffer;
        Assert.Equal(GrpcProtocol.FrameStatus.Incomplete, GrpcProtocol.TryReadFrame(ref buffer, Max, out _));

        Assert.Equal(rest, buffer);
        Assert.Equal(new byte[] { 0, 0, 0 }, buffer.ToArray());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void TryReadFrame_HeaderSplitAcrossSegments_IsComplete(int split)
    {
        var frame = GrpcProtocol.Frame("hello"u8);
        // [0..split) | [split..3) | [3..) : the 5-byte header spans two or three segments.
        var buffer = Segments(frame[..split], frame[split..Math.Max(split, 3)], frame[Math.Max(split, 3)..]);
        Assert.True(buffer.First.Length < GrpcProtocol.FrameHeaderSize);

        var status = GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload);

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, status);
        Assert.Equal("hello"u8.ToArray(), payload.ToArray());
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void TryReadFrame_OneByteSegments_ReadsTwoFrames()
    {
        var bytes = GrpcProtocol.Frame("ab"u8).Concat(GrpcProtocol.Frame("c"u8)).ToArray();
        var buffer = Segments(bytes.Select(b => new[] { b }).ToArray());

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, GrpcProtocol.TryReadFrame(ref buffer, Max, out var p1));
        Assert.Equal("ab"u8.ToArray(), p1.ToArray());
        Assert.Equal(6, buffer.Length);
        Assert.Equal(GrpcProtocol.FrameStatus.Complete, GrpcProtocol.TryReadFrame(ref buffer, Max, out var p2));
        Assert.Equal("c"u8.ToArray(), p2.ToArray());
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void TryReadFrame_SplitHeaderWithShortBody_IsIncomplete_AndConsumesNothing()
    {
        var frame = GrpcProtocol.Frame("hello"u8);
        var buffer = Segments(frame[..2], frame[2..7]); // header split, 2 of 5 payload bytes
        var before = buffer;

        Assert.Equal(GrpcProtocol.FrameStatus.Incomplete, GrpcProtocol.TryReadFrame(ref buffer, Max, out _));

        Assert.Equal(before, buffer);
    }

    [Fact]
    public void TryReadFrame_CompressedFlag_IsUnimplemented()
    {
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0x01, 0x00, 0x00, 0x00, 0x01, 0x61 });

        var ex = Assert.Throws<GrpcCallException>(() => GrpcProtocol.TryReadFrame(ref buffer, Max, out _));

        Assert.Equal(GrpcStatusCode.Unimplemented, ex.Status);
        Assert.Contains("compressed", ex.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0x02)]
    [InlineData(0x80)]
    [InlineData(0xff)]
    public void TryReadFrame_OtherFlag_IsInternal(byte flag)
    {
        var buffer = new ReadOnlySequence<byte>(new byte[] { flag, 0x00, 0x00, 0x00, 0x01, 0x61 });

        var ex = Assert.Throws<GrpcCallException>(() => GrpcProtocol.TryReadFrame(ref buffer, Max, out _));

        Assert.Equal(GrpcStatusCode.Internal, ex.Status);
        Assert.Contains($"invalid frame flag {flag}", ex.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void TryReadFrame_FlagInSplitHeader_IsStillChecked()
    {
        var buffer = Segments([0x01], [0x00, 0x00], [0x00, 0x01, 0x61]);

        var ex = Assert.Throws<GrpcCallException>(() => GrpcProtocol.TryReadFrame(ref buffer, Max, out _));

        Assert.Equal(GrpcStatusCode.Unimplemented, ex.Status);
    }

    [Fact]
    public void TryReadFrame_LengthOverMax_IsResourceExhausted_BeforeTheBodyArrives()
    {
        // Only the 5 header bytes: the refusal must not wait for 1025 bytes of body.
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0x00, 0x00, 0x00, 0x04, 0x01 }); // length 1025

        var ex = Assert.Throws<GrpcCallException>(() => GrpcProtocol.TryReadFrame(ref buffer, Max, out _));

        Assert.Equal(GrpcStatusCode.ResourceExhausted, ex.Status);
        Assert.Contains($"1025 bytes exceeds the {Max} byte limit", ex.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void TryReadFrame_LengthWithHighBitSet_IsResourceExhausted()
    {
        // 0x80000000 would be negative as an int.
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0x00, 0x80, 0x00, 0x00, 0x00 });

        var ex = Assert.Throws<GrpcCallException>(() => GrpcProtocol.TryReadFrame(ref buffer, GrpcProtocol.MaxMessageBytes, out _));

        Assert.Equal(GrpcStatusCode.ResourceExhausted, ex.Status);
    }

    [Fact]
    public void TryReadFrame_LengthExactlyMax_IsAccepted()
    {
        var frame = GrpcProtocol.Frame(new byte[Max]);
        var buffer = new ReadOnlySequence<byte>(frame);

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload));
        Assert.Equal(Max, payload.Length);
    }

    [Fact]
    public void Frame_ThenTryReadFrame_RoundTrips()
    {
        var message = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray();
        var buffer = new ReadOnlySequence<byte>(GrpcProtocol.Frame(message));

        Assert.Equal(GrpcProtocol.FrameStatus.Complete, GrpcProtocol.TryReadFrame(ref buffer, Max, out var payload));
        Assert.Equal(message, payload.ToArray());
    }

    /// <summary>A multi-segment sequence, one segment per array (empty arrays allowed).</summary>
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

public class GrpcProtocolTimeoutTests
{
    [Theory]
    [InlineData("100m", 100 * TimeSpan.TicksPerMillisecond)]
    [InlineData("5S", 5 * TimeSpan.TicksPerSecond)]
    [InlineData("2M", 2 * TimeSpan.TicksPerMinute)]
    [InlineData("1H", TimeSpan.TicksPerHour)]
    [InlineData("250u", 250 * TimeSpan.TicksPerMicrosecond)]
    [InlineData("1000000n", TimeSpan.TicksPerMillisecond)]
    [InlineData("0m", 0L)]
    [InlineData("99999999S", 99_999_999 * TimeSpan.TicksPerSecond)]
    public void TryParseTimeout_ParsesEachUnit(string value, long expectedTicks)
    {
        Assert.True(GrpcProtocol.TryParseTimeout(value, out var timeout));
        Assert.Equal(TimeSpan.FromTicks(expectedTicks), timeout);
    }

    [Theory]
    [InlineData("100m")]
    [InlineData("5S")]
    [InlineData("1H")]
    [InlineData("250u")]
    [InlineData("1000000n")]
    public void EncodeThenParse_RoundTrips_RoundingUpToWholeMilliseconds(string value)
    {
        Assert.True(GrpcProtocol.TryParseTimeout(value, out var timeout));

        var encoded = GrpcProtocol.EncodeTimeout(timeout);

        Assert.True(GrpcProtocol.TryParseTimeout(encoded, out var back), encoded);
        Assert.True(back >= timeout && back - timeout < TimeSpan.FromMilliseconds(1), $"{value} -> {encoded} -> {back}");
    }

    [Theory]
    [InlineData(100, "100m")]
    [InlineData(5000, "5000m")]
    [InlineData(0.25, "1m")]     // rounded up, never down to 0
    [InlineData(0, "1m")]        // a zero deadline is still a deadline
    [InlineData(1.5, "2m")]
    [InlineData(99_999_999, "99999999m")]
    [InlineData(100_000_000, "100000S")]
    public void EncodeTimeout_IsMillisecondsUnlessTooManyDigits(double ms, string expected)
    {
        Assert.Equal(expected, GrpcProtocol.EncodeTimeout(TimeSpan.FromMilliseconds(ms)));
    }

    [Fact]
    public void EncodeTimeout_Huge_IsClampedToEightDigits()
    {
        var encoded = GrpcProtocol.EncodeTimeout(TimeSpan.FromDays(10_000));

        Assert.Equal("99999999S", encoded);
        Assert.True(GrpcProtocol.TryParseTimeout(encoded, out _));
    }

    [Theory]
    [InlineData("")]
    [InlineData("m")]
    [InlineData("5")]
    [InlineData("12x")]
    [InlineData("123456789m")] // 9 digits: over the 8 allowed
    [InlineData("-5m")]
    [InlineData("+5m")]
    [InlineData(" 5m")]
    [InlineData("5 m")]
    [InlineData("1.5S")]
    [InlineData("5s")]         // seconds are upper-case S
    [InlineData("5h")]
    public void TryParseTimeout_RejectsMalformed(string value)
    {
        Assert.False(GrpcProtocol.TryParseTimeout(value, out _));
    }

    [Fact]
    public void TryParseTimeout_RejectsNull()
    {
        Assert.False(GrpcProtocol.TryParseTimeout(null, out _));
    }
}

public class GrpcProtocolMessageTests
{
    [Theory]
    [InlineData("plain ASCII message: ok!")]
    [InlineData("100% done")]
    [InlineData("%")]
    [InlineData("%25")]
    [InlineData("line one\nline two\r\n\ttab")]
    [InlineData("naïve ✓")]
    [InlineData("emoji \U0001F600 and 日本語")]
    [InlineData("")]
    public void EncodeThenDecode_RoundTrips(string message)
    {
        Assert.Equal(message, GrpcProtocol.DecodeMessage(GrpcProtocol.EncodeMessage(message)));
    }

    [Theory]
    [InlineData("naïve ✓")]
    [InlineData("a\u0000b\u007fc\nd%")]
    public void EncodeMessage_OutputIsPrintableAscii(string message)
    {
        var encoded = GrpcProtocol.EncodeMessage(message);

        Assert.All(encoded, c => Assert.InRange(c, ' ', '~'));
    }

    [Theory]
    [InlineData("abc XYZ 0-9 :/()", "abc XYZ 0-9 :/()")]
    [InlineData("%", "%25")]
    [InlineData("\n", "%0A")]
    [InlineData("~\u007f", "~%7F")]
    [InlineData("ï", "%C3%AF")]          // UTF-8 bytes, upper-case hex
    [InlineData("✓", "%E2%9C%93")]
    public void EncodeMessage_PercentEncodesUtf8BytesOutsidePrintableAsciiAndPercent(string message, string expected)
    {
        Assert.Equal(expected, GrpcProtocol.EncodeMessage(message));
    }

    [Theory]
    [InlineData("%c3%af", "ï")]          // lower-case hex is accepted
    [InlineData("100%", "100%")]         // '%' at the end is kept
    [InlineData("%4", "%4")]             // truncated escape is kept
    [InlineData("%zz", "%zz")]           // invalid escape is kept
    [InlineData("a%41", "aA")]           // escape at the very end is decoded
    public void DecodeMessage_IsLenientWithInvalidEscapes(string encoded, string expected)
    {
        Assert.Equal(expected, GrpcProtocol.DecodeMessage(encoded));
    }

    [Fact]
    public void DecodeMessage_EscapeWithWhitespace_IsKeptLiterally()
    {
        Assert.Equal("% 1x", GrpcProtocol.DecodeMessage("% 1x"));
    }

    [Fact]
    public void DecodeMessage_NullOrEmpty_IsEmpty()
    {
        Assert.Equal("", GrpcProtocol.DecodeMessage(null));
        Assert.Equal("", GrpcProtocol.DecodeMessage(""));
    }
}

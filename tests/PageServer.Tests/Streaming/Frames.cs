using System.Buffers;
using System.Buffers.Binary;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;
using Xunit;

namespace Migration.PageServer.Tests.Streaming;

/// <summary>Writing frames to arrays, reading them back, and building frames field by field.</summary>
internal static class Frames
{
    public const int H = PageStreamProtocol.HeaderLength;
    public const int PageSize = PageFacts.PageSize;

    public static readonly PageTarget Pid42 = new(42, PageImageType.Pid);

    /// <summary>The offsets of a BATCH frame's fields (frame header included) for a bitmap of <paramref name="b"/> bytes.</summary>
    public readonly record struct BatchOffsets(int B)
    {
        public const int Id = H + 0;
        public const int Type = H + 4;
        public const int Flags = H + 5;
        public const int Vaddr = H + 6;
        public const int NrPages = H + 14;
        public const int Bitmap = H + 18;

        public int Encoding => H + 18 + B;

        public int PayloadLength => H + 19 + B;

        public int UncompressedLength => H + 23 + B;

        public int Checksum => H + 27 + B;

        public int Payload => H + 31 + B;
    }

    public static byte[] Write(Action<PageFrameWriter> write, PageFrameWriterOptions? options = null)
    {
        var output = new ArrayBufferWriter<byte>();
        using var writer = new PageFrameWriter(output, options);
        write(writer);
        return output.WrittenSpan.ToArray();
    }

    public static byte[] Batch(byte[] pages, ulong vaddr = 0x10000, PagemapFlags flags = PagemapFlags.Present, PageFrameWriterOptions? options = null) =>
        Write(w => w.WritePages(Pid42, vaddr, flags, pages), options);

    /// <summary>Reads one frame that must be complete and valid, and the whole buffer.</summary>
    public static PageFrame ReadOne(ReadOnlySequence<byte> buffer)
    {
        var status = PageFrameReader.TryReadFrame(ref buffer, out var frame, out var error);
        Assert.True(status == PageFrameStatus.Complete, $"{status}: {error}");
        Assert.Equal(0, buffer.Length);
        return frame;
    }

    public static PageFrame ReadOne(byte[] bytes) => ReadOne(new ReadOnlySequence<byte>(bytes));

    /// <summary>Reads every frame (all must be valid) and decodes the batches.</summary>
    public static List<(PageFrame Frame, byte[] Pages)> ReadAll(ReadOnlySequence<byte> buffer)
    {
        var frames = new List<(PageFrame, byte[])>();
        while (true)
        {
            var status = PageFrameReader.TryReadFrame(ref buffer, out var frame, out var error);
            if (status == PageFrameStatus.Incomplete)
            {
                Assert.Equal(0, buffer.Length);
                return frames;
            }

            Assert.True(status == PageFrameStatus.Complete, $"{status}: {error}");
            var pages = Array.Empty<byte>();
            if (frame.Kind == PageFrameKind.Batch)
            {
                pages = new byte[frame.DecodedLength];
                Assert.True(PageFrameReader.TryDecodeBatch(frame, pages, out error), error.ToString());
            }

            frames.Add((frame, pages));
        }
    }

    /// <summary>Reads one frame that must be refused, and returns why.</summary>
    public static PageStreamError Refused(byte[] bytes)
    {
        var buffer = new ReadOnlySequence<byte>(bytes);
        var status = PageFrameReader.TryReadFrame(ref buffer, out _, out var error);
        Assert.True(status == PageFrameStatus.Invalid, $"{status}, expected Invalid");
        Assert.Equal(bytes.Length, buffer.Length);
        Assert.True(error.IsError);
        return error;
    }

    /// <summary>Reads one frame that must parse, then fails to decode it, and returns why.</summary>
    public static PageStreamError Undecodable(byte[] bytes)
    {
        var frame = ReadOne(bytes);
        var pages = new byte[frame.DecodedLength];
        pages.AsSpan().Fill(0xaa);
        Assert.False(PageFrameReader.TryDecodeBatch(frame, pages, out var error), "decoded");
        Assert.True(error.IsError);
        Assert.True(Array.TrueForAll(pages, b => b == 0), "a failed decode left bytes in the destination");
        return error;
    }

    /// <summary>A BATCH frame from its fields, each as given (nothing checked); the checksum over
    /// <paramref name="checksumPages"/> unless <paramref name="checksum"/> is given.</summary>
    public static byte[] RawBatch(uint id, byte type, byte flags, ulong vaddr, uint nr, byte[] bitmap, byte encoding,
        uint payloadLength, uint uncompressedLength, byte[] payload, byte[] checksumPages, uint? checksum = null)
    {
        int bodyLength = PageStreamProtocol.BatchPrefixLength + bitmap.Length + PageStreamProtocol.BatchTrailerLength + payload.Length;
        var frame = new byte[H + bodyLength];
        var body = frame.AsSpan(H);
        Header(frame, PageFrameKind.Batch, (uint)bodyLength);
        BinaryPrimitives.WriteUInt32LittleEndian(body, id);
        body[4] = type;
        body[5] = flags;
        BinaryPrimitives.WriteUInt64LittleEndian(body[6..], vaddr);
        BinaryPrimitives.WriteUInt32LittleEndian(body[14..], nr);
        bitmap.CopyTo(body[18..]);
        int t = 18 + bitmap.Length;
        body[t] = encoding;
        BinaryPrimitives.WriteUInt32LittleEndian(body[(t + 1)..], payloadLength);
        BinaryPrimitives.WriteUInt32LittleEndian(body[(t + 5)..], uncompressedLength);
        uint crc = checksum ?? Crc32C.Finish(Crc32C.Update(Crc32C.Update(Crc32C.InitialState, body[..t]), checksumPages));
        BinaryPrimitives.WriteUInt32LittleEndian(body[(t + 9)..], crc);
        payload.CopyTo(body[(t + 13)..]);
        return frame;
    }

    public static void Header(Span<byte> frame, PageFrameKind kind, uint bodyLength)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(frame, PageStreamProtocol.Magic);
        frame[4] = (byte)kind;
        frame[5] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(frame[6..], PageStreamProtocol.HeaderLength);
        BinaryPrimitives.WriteUInt32LittleEndian(frame[8..], bodyLength);
    }

    /// <summary>A frame of <paramref name="kind"/> with <paramref name="body"/> as is.</summary>
    public static byte[] Raw(PageFrameKind kind, params byte[] body)
    {
        var frame = new byte[H + body.Length];
        Header(frame, kind, (uint)body.Length);
        body.CopyTo(frame, H);
        return frame;
    }

    /// <summary>LZ4 of <paramref name="data"/> (which must compress).</summary>
    public static byte[] Lz4Of(byte[] data)
    {
        var compressed = new byte[Lz4.CompressBound(data.Length)];
        Assert.True(Lz4.TryCompress(data, compressed, out int n));
        return compressed[..n];
    }
}

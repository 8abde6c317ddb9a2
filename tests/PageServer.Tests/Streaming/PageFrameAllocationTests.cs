using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Streaming;
using Xunit;
using static Migration.PageServer.Tests.Streaming.Frames;

namespace Migration.PageServer.Tests.Streaming;

/// <summary>No per-page (or per-batch) allocation on the hot path, measured on this thread.</summary>
public class PageFrameAllocationTests
{
    private const int Batches = 1000;

    /// <summary>Bytes 1000 batches may allocate in all: nothing per batch, slack for a stray runtime allocation.</summary>
    private const long Bound = 8 * 1024;

    // 16 pages of each kind of content: LZ4 and raw batches, the zero-page gather path and the direct path.
    private static readonly byte[][] Inputs =
    [
        PageData.Mixed("tzrtozttzrtttzzt", seed: 1),
        PageData.Text(16, seed: 2),
        PageData.Random(16, seed: 3),
        PageData.Zero(16),
    ];

    [Fact]
    public void Encoding1000Batches_AllocatesNothingPerBatch()
    {
        var output = new ArrayBufferWriter<byte>(1 << 20);
        using var writer = new PageFrameWriter(output);
        void Encode(int i)
        {
            writer.WritePages(Pid42, 0x10000, PagemapFlags.Present, Inputs[i % Inputs.Length]);
            output.ResetWrittenCount();
        }

        long allocated = Measure(Encode);

        Assert.True(allocated < Bound, $"encoding {Batches} batches allocated {allocated} bytes");
        Assert.Equal(Batches + 20, writer.Stats.Batches);
    }

    [Fact]
    public void EncodingFromSegments_AllocatesNothingPerBatch()
    {
        var inputs = Inputs.Select(p => Segment.Chunked(p, 1500)).ToArray();
        var output = new ArrayBufferWriter<byte>(1 << 20);
        using var writer = new PageFrameWriter(output);
        void Encode(int i)
        {
            writer.WritePages(Pid42, 0x10000, PagemapFlags.Present, inputs[i % inputs.Length]);
            output.ResetWrittenCount();
        }

        long allocated = Measure(Encode);

        Assert.True(allocated < Bound, $"encoding {Batches} batches from segments allocated {allocated} bytes");
    }

    [Fact]
    public void EncodingRaw_FromSpansAndSegments_AllocatesNothingPerBatch()
    {
        var segmented = Inputs.Select(p => Segment.Chunked(p, 1500)).ToArray();
        var output = new ArrayBufferWriter<byte>(1 << 20);
        using var writer = new PageFrameWriter(output, new PageFrameWriterOptions(disableCompression: true));
        void Encode(int i)
        {
            if ((i & 1) == 0)
            {
                writer.WritePages(Pid42, 0x10000, PagemapFlags.Present, Inputs[i / 2 % Inputs.Length]);
            }
            else
            {
                writer.WritePages(Pid42, 0x10000, PagemapFlags.Present, segmented[i / 2 % segmented.Length]);
            }

            output.ResetWrittenCount();
        }

        long allocated = Measure(Encode);

        Assert.True(allocated < Bound, $"encoding {Batches} raw batches allocated {allocated} bytes");
        Assert.Equal(0, writer.Stats.CompressedBatches);
    }

    [Fact]
    public void DecodingRawBatches_AllocatesNothingPerBatch()
    {
        // Raw batches with zero pages: each page is copied to its place from a payload in one or several segments.
        var raw = new PageFrameWriterOptions(disableCompression: true);
        var encoded = Inputs.Select(p => new ReadOnlySequence<byte>(Batch(p, options: raw))).ToArray();
        var split = Inputs.Select(p => Segment.Chunked(Batch(p, options: raw), 5000)).ToArray();
        var destination = new byte[16 * PageSize];
        int decoded = 0;
        void Decode(int i)
        {
            var buffer = (i & 1) == 0 ? encoded[i / 2 % encoded.Length] : split[i / 2 % split.Length];
            if (PageFrameReader.TryReadFrame(ref buffer, out var frame, out _) == PageFrameStatus.Complete
                && PageFrameReader.TryDecodeBatch(frame, destination, out _))
            {
                decoded++;
            }
        }

        long allocated = Measure(Decode);

        Assert.Equal(Batches + 20, decoded);
        Assert.True(allocated < Bound, $"decoding {Batches} raw batches allocated {allocated} bytes");
    }

    [Fact]
    public void Decoding1000Batches_AllocatesNothingPerBatch()
    {
        var encoded = Inputs.Select(p => new ReadOnlySequence<byte>(Batch(p))).ToArray();
        var split = Inputs.Select(p => Segment.Chunked(Batch(p), 5000)).ToArray(); // LZ4 payloads across segments
        var destination = new byte[16 * PageSize];
        int decoded = 0;
        void Decode(int i)
        {
            var buffer = (i & 1) == 0 ? encoded[i / 2 % encoded.Length] : split[i / 2 % split.Length];
            if (PageFrameReader.TryReadFrame(ref buffer, out var frame, out _) == PageFrameStatus.Complete
                && PageFrameReader.TryDecodeBatch(frame, destination, out _))
            {
                decoded++;
            }
        }

        long allocated = Measure(Decode);

        Assert.Equal(Batches + 20, decoded);
        Assert.True(allocated < Bound, $"decoding {Batches} batches allocated {allocated} bytes");
    }

    private static long Measure(Action<int> step)
    {
        for (int i = 0; i < 20; i++)
        {
            step(i); // JIT, the writer's scratch buffer, the LZ4 codec
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Batches; i++)
        {
            step(i);
        }

        return GC.GetAllocatedBytesForCurrentThread() - before;
    }
}

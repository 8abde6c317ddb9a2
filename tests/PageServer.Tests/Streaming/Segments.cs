using System.Buffers;

namespace Migration.PageServer.Tests.Streaming;

/// <summary>Builds multi-segment sequences, as a PipeReader hands them out.</summary>
internal sealed class Segment : ReadOnlySequenceSegment<byte>
{
    public Segment(ReadOnlyMemory<byte> memory, Segment? previous)
    {
        Memory = memory;
        if (previous is not null)
        {
            RunningIndex = previous.RunningIndex + previous.Memory.Length;
            previous.Next = this;
        }
    }

    /// <summary><paramref name="data"/> cut at <paramref name="cuts"/> (offsets, ascending; repeats make empty segments).</summary>
    public static ReadOnlySequence<byte> Split(byte[] data, params int[] cuts)
    {
        var first = new Segment(Copy(data, 0, cuts.Length > 0 ? cuts[0] : data.Length), null);
        var last = first;
        for (int i = 0; i < cuts.Length; i++)
        {
            int end = i + 1 < cuts.Length ? cuts[i + 1] : data.Length;
            last = new Segment(Copy(data, cuts[i], end), last);
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary><paramref name="data"/> in segments of <paramref name="size"/> bytes.</summary>
    public static ReadOnlySequence<byte> Chunked(byte[] data, int size)
    {
        var cuts = new List<int>();
        for (int c = size; c < data.Length; c += size)
        {
            cuts.Add(c);
        }

        return Split(data, [.. cuts]);
    }

    /// <summary><paramref name="data"/> in segments of random sizes (1..<paramref name="maxSize"/>), some empty.</summary>
    public static ReadOnlySequence<byte> Random(byte[] data, Random random, int maxSize)
    {
        var cuts = new List<int>();
        for (int c = random.Next(0, maxSize + 1); c < data.Length; c += random.Next(0, maxSize + 1))
        {
            cuts.Add(c);
        }

        return Split(data, [.. cuts]);
    }

    // Each segment gets its own array so that reading past a segment's end cannot land in the next one's bytes.
    private static byte[] Copy(byte[] data, int start, int end) => data.AsSpan(start, end - start).ToArray();
}

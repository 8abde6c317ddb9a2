using System.Buffers;

namespace Migration.Fuzz.Harness;

/// <summary>An input cut into segments, as a PipeReader hands a socket's bytes out.</summary>
public sealed class Segment : ReadOnlySequenceSegment<byte>
{
    private Segment(ReadOnlyMemory<byte> memory, Segment? previous)
    {
        Memory = memory;
        if (previous is not null)
        {
            RunningIndex = previous.RunningIndex + previous.Memory.Length;
            previous.Next = this;
        }
    }

    /// <summary><paramref name="data"/> in pieces of <paramref name="size"/> bytes (one piece when it is that short).</summary>
    public static ReadOnlySequence<byte> Chunked(byte[] data, int size)
    {
        if (data.Length <= size)
        {
            return new ReadOnlySequence<byte>(data);
        }

        var first = new Segment(data.AsMemory(0, size), null);
        var last = first;
        for (int at = size; at < data.Length; at += size)
        {
            last = new Segment(data.AsMemory(at, Math.Min(size, data.Length - at)), last);
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }
}

/// <summary>A broken promise of a decoder: not a refusal but a wrong answer. The runner counts it as a crash.</summary>
public sealed class InvariantViolationException(string message) : Exception(message);

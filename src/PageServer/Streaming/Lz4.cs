using K4os.Compression.LZ4;

namespace Migration.PageServer.Streaming;

/// <summary>
/// LZ4 block compression, managed: K4os.Compression.LZ4, a port of the reference lz4 C code, whose blocks are the same
/// format as liblz4's either way (scripts/bench/lz4.sh checks that each decodes the other's and compares their
/// speed). Block format only: the page stream frames each batch itself and carries the uncompressed length, so the
/// LZ4 frame format is not needed. Always LZ4's fast mode at acceleration 1: K4os has no other.
/// </summary>
public static class Lz4
{
    /// <summary>Largest input LZ4 compresses in one block (lz4.h LZ4_MAX_INPUT_SIZE).</summary>
    public const int MaxInputSize = 0x7E000000;

    /// <summary>Worst-case compressed size of <paramref name="inputSize"/> bytes (LZ4_compressBound).</summary>
    public static int CompressBound(int inputSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(inputSize);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(inputSize, MaxInputSize);
        return LZ4Codec.MaximumOutputSize(inputSize);
    }

    /// <summary>
    /// Compresses <paramref name="source"/> into <paramref name="destination"/> (LZ4_compress_fast, acceleration 1).
    /// Returns false, writing nothing useful, when the compressed block does not fit: give a destination shorter than
    /// the source to learn in one pass whether compression pays. A destination of at least
    /// <see cref="CompressBound"/> lets LZ4 skip its output checks, which is faster.
    /// </summary>
    public static bool TryCompress(ReadOnlySpan<byte> source, Span<byte> destination, out int bytesWritten)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(source.Length, MaxInputSize, nameof(source));
        bytesWritten = 0;
        if (destination.IsEmpty)
        {
            return false;
        }

        if (source.IsEmpty)
        {
            // The block of nothing: one token, no literals (what liblz4 writes; K4os answers 0 for it).
            destination[0] = 0;
            bytesWritten = 1;
            return true;
        }

        int n = LZ4Codec.Encode(source, destination, LZ4Level.L00_FAST);
        if (n <= 0)
        {
            return false;
        }

        bytesWritten = n;
        return true;
    }

    /// <summary>
    /// Decompresses one block (LZ4_decompress_safe: never reads past <paramref name="source"/> nor writes past
    /// <paramref name="destination"/>, whatever the input). Returns false for a malformed block or one that would
    /// not fit; <paramref name="bytesWritten"/> may be shorter than the destination, so a caller that knows the
    /// uncompressed length checks it.
    /// </summary>
    public static bool TryDecompress(ReadOnlySpan<byte> source, Span<byte> destination, out int bytesWritten)
    {
        bytesWritten = 0;
        if (source.IsEmpty)
        {
            return false;
        }

        if (source is [0])
        {
            // The block of nothing, which K4os reports as an error (it answers -1 for every 0-byte result).
            return true;
        }

        if (HasZeroOffset(source))
        {
            return false;
        }

        int n = LZ4Codec.Decode(source, destination);
        if (n <= 0)
        {
            return false;
        }

        bytesWritten = n;
        return true;
    }

    /// <summary>
    /// Whether a match of the block has offset 0, which the format does not allow and LZ4's safe decoder (K4os as
    /// liblz4) does not refuse: it copies the destination's bytes at the write position, not yet written, so the output
    /// would hold whatever the buffer held before (a pooled buffer's earlier pages) and differ from one buffer to the
    /// next. Found by the fuzzer (tests/Fuzz, page-frame). Walks the block's sequences only, not the output; a block
    /// that does not parse is left to the decoder, which refuses it.
    /// </summary>
    private static bool HasZeroOffset(ReadOnlySpan<byte> block)
    {
        int i = 0;
        while (i < block.Length)
        {
            int token = block[i++];
            if (!TrySkipLength(block, ref i, token >> 4, out long literals) || literals > block.Length - i)
            {
                return false;
            }

            i += (int)literals;
            if (i + 2 > block.Length)
            {
                return false; // the last sequence has literals only
            }

            if ((block[i] | (block[i + 1] << 8)) == 0)
            {
                return true;
            }

            i += 2;
            if (!TrySkipLength(block, ref i, token & 15, out _))
            {
                return false;
            }
        }

        return false;
    }

    /// <summary>A token's 4-bit length, continued by 255-bytes and a last byte below 255 when it is 15.</summary>
    private static bool TrySkipLength(ReadOnlySpan<byte> block, ref int i, int nibble, out long length)
    {
        length = nibble;
        if (nibble != 15)
        {
            return true;
        }

        byte b;
        do
        {
            if (i >= block.Length)
            {
                return false;
            }

            b = block[i++];
            length += b;
        }
        while (b == 255);
        return true;
    }
}

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

        int n = LZ4Codec.Decode(source, destination);
        if (n <= 0)
        {
            return false;
        }

        bytesWritten = n;
        return true;
    }
}

using System.Runtime.InteropServices;

namespace Migration.PageServer.Streaming;

/// <summary>
/// LZ4 block compression through the system liblz4 (lz4/lib/lz4.h). Block format only: the page stream
/// frames each batch itself and carries the uncompressed length, so the LZ4 frame format is not needed.
/// Every entry point checks once that the library loads and is new enough.
/// </summary>
public static class Lz4
{
    /// <summary>The library's soname (Debian's liblz4-1 package).</summary>
    public const string LibraryName = "liblz4.so.1";

    /// <summary>LZ4's own default: acceleration 1 is "fast mode" at its best ratio (lz4.h LZ4_ACCELERATION_DEFAULT).</summary>
    public const int DefaultAcceleration = 1;

    /// <summary>Largest acceleration liblz4 honours; larger values are clamped by it (lz4.c LZ4_ACCELERATION_MAX).</summary>
    public const int MaxAcceleration = 65537;

    /// <summary>Largest input LZ4 compresses in one block (lz4.h LZ4_MAX_INPUT_SIZE).</summary>
    public const int MaxInputSize = 0x7E000000;

    /// <summary>
    /// Oldest liblz4 accepted: 1.8.0 (2017) has LZ4_compress_fast and a hardened LZ4_decompress_safe;
    /// as encoded by LZ4_versionNumber (major * 10000 + minor * 100 + release).
    /// </summary>
    public const int MinimumVersion = 1_08_00;

    private const string MissingMessage = LibraryName + " not found: apt-get install liblz4-1";

    private static volatile int s_version;

    /// <summary>The loaded library's version (e.g. 10904 for 1.9.4); throws <see cref="DllNotFoundException"/> when it is missing.</summary>
    public static int Version
    {
        get
        {
            EnsureLoaded();
            return s_version;
        }
    }

    /// <summary>Whether liblz4 loads and is at least <see cref="MinimumVersion"/>.</summary>
    public static bool IsAvailable
    {
        get
        {
            try
            {
                EnsureLoaded();
                return true;
            }
            catch (DllNotFoundException)
            {
                // The question asked is exactly "does it load"; the message is for callers of the other members.
                return false;
            }
        }
    }

    /// <summary>Worst-case compressed size of <paramref name="inputSize"/> bytes (LZ4_compressBound).</summary>
    public static int CompressBound(int inputSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(inputSize);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(inputSize, MaxInputSize);
        EnsureLoaded();
        return Lz4Native.LZ4_compressBound(inputSize);
    }

    /// <summary>
    /// Compresses <paramref name="source"/> into <paramref name="destination"/> (LZ4_compress_fast). Returns false,
    /// writing nothing useful, when the compressed block does not fit: give a destination shorter than the source
    /// to learn in one pass whether compression pays.
    /// </summary>
    public static unsafe bool TryCompress(ReadOnlySpan<byte> source, Span<byte> destination, out int bytesWritten, int acceleration = DefaultAcceleration)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(source.Length, MaxInputSize, nameof(source));
        ArgumentOutOfRangeException.ThrowIfLessThan(acceleration, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(acceleration, MaxAcceleration);
        EnsureLoaded();
        bytesWritten = 0;
        if (destination.IsEmpty)
        {
            return false;
        }

        fixed (byte* src = &MemoryMarshal.GetReference(source))
        fixed (byte* dst = &MemoryMarshal.GetReference(destination))
        {
            int n = Lz4Native.LZ4_compress_fast(src, dst, source.Length, destination.Length, acceleration);
            if (n <= 0)
            {
                return false;
            }

            bytesWritten = n;
            return true;
        }
    }

    /// <summary>
    /// Decompresses one block (LZ4_decompress_safe: never reads past <paramref name="source"/> nor writes past
    /// <paramref name="destination"/>, whatever the input). Returns false for a malformed block or one that would
    /// not fit; <paramref name="bytesWritten"/> may be shorter than the destination.
    /// </summary>
    public static unsafe bool TryDecompress(ReadOnlySpan<byte> source, Span<byte> destination, out int bytesWritten)
    {
        EnsureLoaded();
        bytesWritten = 0;
        if (source.IsEmpty)
        {
            return false;
        }

        fixed (byte* src = &MemoryMarshal.GetReference(source))
        fixed (byte* dst = &MemoryMarshal.GetReference(destination))
        {
            int n = Lz4Native.LZ4_decompress_safe(src, dst, source.Length, destination.Length);
            if (n < 0)
            {
                return false;
            }

            bytesWritten = n;
            return true;
        }
    }

    private static void EnsureLoaded()
    {
        if (s_version != 0)
        {
            return;
        }

        int version;
        try
        {
            version = Lz4Native.LZ4_versionNumber();
        }
        catch (DllNotFoundException e)
        {
            throw new DllNotFoundException(MissingMessage, e);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new DllNotFoundException($"{LibraryName} has no LZ4_versionNumber: not liblz4? apt-get install liblz4-1", e);
        }

        if (version < MinimumVersion)
        {
            throw new DllNotFoundException(
                $"{LibraryName} is version {version / 10000}.{version / 100 % 100}.{version % 100}, older than the 1.8.0 this needs: upgrade liblz4-1");
        }

        s_version = version;
    }
}

/// <summary>The liblz4 entry points (lz4/lib/lz4.h), all blittable: no marshalling, no allocation per call.</summary>
internal static partial class Lz4Native
{
    [LibraryImport(Lz4.LibraryName)]
    public static partial int LZ4_versionNumber();

    [LibraryImport(Lz4.LibraryName)]
    public static partial int LZ4_compressBound(int inputSize);

    [LibraryImport(Lz4.LibraryName)]
    public static unsafe partial int LZ4_compress_fast(byte* src, byte* dst, int srcSize, int dstCapacity, int acceleration);

    [LibraryImport(Lz4.LibraryName)]
    public static unsafe partial int LZ4_decompress_safe(byte* src, byte* dst, int compressedSize, int dstCapacity);
}

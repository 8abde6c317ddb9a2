using System.Buffers.Binary;
using Google.Protobuf;

namespace Migration.Engine.Images;

/// <summary>
/// CRIU image file framing (criu/include/magic.h, criu/protobuf.c): a u32 common magic (absent for the
/// inventory), a u32 type magic, then entries of u32 length (native order) + packed protobuf until EOF.
/// </summary>
public static class ImageFile
{
    public const uint CommonMagic = 0x54564319;
    public const uint ServiceMagic = 0x55105940;
    public const uint InventoryMagic = 0x58313116;
    public const uint PagemapMagic = 0x56084025;
    public const uint StatsMagic = 0x57093306;
    public const uint CoreMagic = 0x55053847;
    public const uint TcpStreamMagic = 0x51465506;

    /// <summary>An entry larger than this is not a CRIU metadata entry: refuse instead of allocating it.</summary>
    public const int MaxEntryBytes = 16 << 20;

    /// <summary>Bytes read into before an entry's body shows it is larger: real CRIU entries are mostly under 1 KiB.</summary>
    private const int InitialEntryBuffer = 64 << 10;

    /// <summary>Writes the two magics of a regular image file.</summary>
    public static void WriteHeader(Stream s, uint typeMagic)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(b, CommonMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], typeMagic);
        s.Write(b);
    }

    public static void WriteEntry(Stream s, IMessage message)
    {
        int size = message.CalculateSize();
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)size);
        s.Write(len);
        message.WriteTo(s);
    }

    /// <summary>Reads and checks the two magics; throws <see cref="InvalidDataException"/> naming what was found.</summary>
    public static void ReadHeader(Stream s, uint expectedTypeMagic, string what)
    {
        Span<byte> b = stackalloc byte[8];
        int got = s.ReadAtLeast(b, 8, throwOnEndOfStream: false);
        if (got < 8)
        {
            throw new InvalidDataException($"{what}: {got} bytes, too short for an image header");
        }

        uint common = BinaryPrimitives.ReadUInt32LittleEndian(b);
        uint type = BinaryPrimitives.ReadUInt32LittleEndian(b[4..]);
        if (common != CommonMagic && common != ServiceMagic)
        {
            throw new InvalidDataException($"{what}: common magic 0x{common:x8}, expected 0x{CommonMagic:x8}");
        }

        if (type != expectedTypeMagic)
        {
            throw new InvalidDataException($"{what}: image magic 0x{type:x8}, expected 0x{expectedTypeMagic:x8}");
        }
    }

    /// <summary>
    /// Reads the next entry, or returns false at a clean end of file. A truncated length or body, or a
    /// length over <see cref="MaxEntryBytes"/>, is an error.
    /// </summary>
    public static bool TryReadEntry<T>(Stream s, MessageParser<T> parser, string what, out T entry)
        where T : IMessage<T>
    {
        entry = default!;
        Span<byte> len = stackalloc byte[4];
        int got = s.ReadAtLeast(len, 4, throwOnEndOfStream: false);
        if (got == 0)
        {
            return false;
        }

        if (got < 4)
        {
            throw new InvalidDataException($"{what}: truncated entry length ({got} of 4 bytes)");
        }

        uint size = BinaryPrimitives.ReadUInt32LittleEndian(len);
        if (size > MaxEntryBytes)
        {
            throw new InvalidDataException($"{what}: entry of {size} bytes exceeds the {MaxEntryBytes} byte limit");
        }

        var body = ReadBody(s, (int)size);
        if (body.Length < size)
        {
            throw new InvalidDataException($"{what}: truncated entry ({body.Length} of {size} bytes)");
        }

        try
        {
            entry = parser.ParseFrom(body);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new InvalidDataException($"{what}: malformed entry: {ex.Message}", ex);
        }

        return true;
    }

    /// <summary>
    /// Up to <paramref name="size"/> bytes of an entry body (fewer at end of file). The length prefix is the peer's word:
    /// the buffer grows with the bytes that actually arrive, from <see cref="InitialEntryBuffer"/>, so a short file that
    /// claims a 16 MiB entry costs what it holds, not 16 MiB.
    /// </summary>
    private static byte[] ReadBody(Stream s, int size)
    {
        if (s.CanSeek && s.Length - s.Position is var left && left < size)
        {
            size = (int)Math.Max(left, 0);
            var rest = new byte[size];
            return rest[..s.ReadAtLeast(rest, size, throwOnEndOfStream: false)];
        }

        var body = new byte[Math.Min(size, InitialEntryBuffer)];
        int got = 0;
        while (got < size)
        {
            if (got == body.Length)
            {
                Array.Resize(ref body, (int)Math.Min(size, 2L * body.Length));
            }

            int n = s.Read(body, got, body.Length - got);
            if (n == 0)
            {
                return body[..got];
            }

            got += n;
        }

        return body;
    }
}

using System.Buffers.Binary;

namespace Migration.Fuzz.Harness;

/// <summary>
/// Structure-aware mutations of a seed, deterministic from the <see cref="Random"/> given: lies in the seed's length and
/// count fields (edge values, off by one, huge counts), bit flips, random bytes, truncation, insertion, deletion,
/// duplication, splicing with another seed and repeated chunks.
/// </summary>
public static class Mutator
{
    private static readonly ulong[] Interesting =
    [
        0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0x1001, 0x7fff, 0x8000, 0xffff, 0x10000, 0x100000,
        0x3fffffff, 0x40000000, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000, 1UL << 32 | 1, 1UL << 47, 1UL << 57,
        0x7fffffffffffffff, 0x8000000000000000, ulong.MaxValue, ulong.MaxValue - 1,
    ];

    /// <summary>A mutated copy of <paramref name="seed"/>; <paramref name="corpus"/> supplies splice partners.</summary>
    public static byte[] Mutate(Seed seed, IReadOnlyList<Seed> corpus, Random rng)
    {
        var bytes = new List<byte>(seed.Bytes);
        int mutations = rng.Next(4) == 0 ? rng.Next(4, 12) : rng.Next(1, 4);
        for (int m = 0; m < mutations; m++)
        {
            int op = rng.Next(14);
            if (bytes.Count == 0 && op is not (9 or 10))
            {
                op = 9;
            }

            switch (op)
            {
                case 0 or 1 or 2:
                    // A lie in a known field: structure-aware, so the decoder sees it past its magic and framing.
                    if (seed.Fields.Count > 0)
                    {
                        LieInField(bytes, seed.Fields[rng.Next(seed.Fields.Count)], rng);
                        break;
                    }

                    goto case 3;
                case 3:
                    {
                        int at = rng.Next(bytes.Count);
                        bytes[at] ^= (byte)(1 << rng.Next(8));
                        break;
                    }

                case 4:
                    bytes[rng.Next(bytes.Count)] = (byte)rng.Next(256);
                    break;
                case 5:
                    {
                        // An interesting integer of 1, 2, 4 or 8 bytes anywhere.
                        int width = 1 << rng.Next(4);
                        int at = rng.Next(bytes.Count);
                        WriteLittleEndian(bytes, at, Math.Min(width, bytes.Count - at), Pick(rng, 0));
                        break;
                    }

                case 6:
                    {
                        // Truncation.
                        int keep = rng.Next(bytes.Count);
                        bytes.RemoveRange(keep, bytes.Count - keep);
                        break;
                    }

                case 7:
                    {
                        int at = rng.Next(bytes.Count);
                        bytes.RemoveRange(at, Math.Min(bytes.Count - at, rng.Next(1, 65)));
                        break;
                    }

                case 8:
                    {
                        int at = rng.Next(bytes.Count);
                        int n = Math.Min(bytes.Count - at, rng.Next(1, 129));
                        int times = rng.Next(8) == 0 ? rng.Next(2, 200) : 1;
                        var chunk = bytes.GetRange(at, n);
                        for (int t = 0; t < times && bytes.Count < (1 << 20); t++)
                        {
                            bytes.InsertRange(at, chunk);
                        }

                        break;
                    }

                case 9:
                    {
                        var insert = new byte[rng.Next(1, 33)];
                        rng.NextBytes(insert);
                        bytes.InsertRange(rng.Next(bytes.Count + 1), insert);
                        break;
                    }

                case 10:
                    {
                        // Splice: a head of this input and a tail of another seed.
                        var other = corpus[rng.Next(corpus.Count)].Bytes;
                        int head = rng.Next(bytes.Count + 1);
                        int tail = rng.Next(other.Length + 1);
                        bytes.RemoveRange(head, bytes.Count - head);
                        bytes.AddRange(other.AsSpan(tail).ToArray());
                        break;
                    }

                case 11:
                    {
                        // A protobuf varint at a random place: a huge length or value, or an over-long encoding.
                        byte[] varint = rng.Next(3) == 0 ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01] : Varint(Pick(rng, 0));
                        bytes.InsertRange(rng.Next(bytes.Count + 1), varint);
                        break;
                    }

                case 12:
                    {
                        int at = rng.Next(bytes.Count), other = rng.Next(bytes.Count);
                        (bytes[at], bytes[other]) = (bytes[other], bytes[at]);
                        break;
                    }

                default:
                    {
                        // A small delta on a 32-bit little-endian word.
                        int at = rng.Next(bytes.Count);
                        int width = Math.Min(4, bytes.Count - at);
                        ulong old = ReadLittleEndian(bytes, at, width);
                        WriteLittleEndian(bytes, at, width, old + (ulong)(long)rng.Next(-33, 34));
                        break;
                    }
            }
        }

        return [.. bytes];
    }

    private static void LieInField(List<byte> bytes, SeedField field, Random rng)
    {
        if (field.Offset >= bytes.Count)
        {
            return;
        }

        if (field.Encoding == FieldEncoding.Varint)
        {
            int width = Math.Min(field.Width, bytes.Count - field.Offset);
            ulong old = ReadVarint(bytes, field.Offset, width);
            bytes.RemoveRange(field.Offset, width);
            bytes.InsertRange(field.Offset, rng.Next(8) == 0
                ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01] // 11 bytes: longer than any varint
                : Varint(Pick(rng, old)));
            return;
        }

        int w = Math.Min(field.Width, bytes.Count - field.Offset);
        WriteLittleEndian(bytes, field.Offset, w, Pick(rng, ReadLittleEndian(bytes, field.Offset, w)));
    }

    /// <summary>An edge value, a near miss of <paramref name="old"/>, or a random one.</summary>
    private static ulong Pick(Random rng, ulong old) => rng.Next(6) switch
    {
        0 or 1 => Interesting[rng.Next(Interesting.Length)],
        2 => old + 1,
        3 => old - 1,
        4 => old * (ulong)rng.Next(2, 4097),
        _ => (ulong)rng.NextInt64() >> rng.Next(64),
    };

    private static ulong ReadLittleEndian(List<byte> bytes, int at, int width)
    {
        ulong v = 0;
        for (int i = 0; i < width; i++)
        {
            v |= (ulong)bytes[at + i] << (8 * i);
        }

        return v;
    }

    private static void WriteLittleEndian(List<byte> bytes, int at, int width, ulong value)
    {
        for (int i = 0; i < width; i++)
        {
            bytes[at + i] = (byte)(value >> (8 * i));
        }
    }

    private static ulong ReadVarint(List<byte> bytes, int at, int width)
    {
        ulong v = 0;
        for (int i = 0; i < width && i < 10; i++)
        {
            v |= (ulong)(bytes[at + i] & 0x7f) << (7 * i);
        }

        return v;
    }

    public static byte[] Varint(ulong value)
    {
        var b = new List<byte>(10);
        do
        {
            byte low = (byte)(value & 0x7f);
            value >>= 7;
            b.Add(value != 0 ? (byte)(low | 0x80) : low);
        }
        while (value != 0);
        return [.. b];
    }

    /// <summary>Writes a little-endian u16 (for harness framing of seeds).</summary>
    public static void WriteU16(Span<byte> b, int value) => BinaryPrimitives.WriteUInt16LittleEndian(b, (ushort)value);
}

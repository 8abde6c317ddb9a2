namespace Migration.Fuzz.Harness;

/// <summary>
/// Finds the varints of a protobuf encoding (tags, length prefixes, integer values), nested messages included, so that
/// mutations lie in them: a length prefix longer than what follows, a huge count, a wrong wire type.
/// </summary>
public static class ProtoFields
{
    private const int MaxDepth = 4;

    /// <summary>The varint fields of the message in <paramref name="bytes"/>[<paramref name="offset"/>, +<paramref name="length"/>).</summary>
    public static List<SeedField> Find(byte[] bytes, int offset, int length)
    {
        var fields = new List<SeedField>();
        Walk(bytes, offset, offset + length, fields, 0);
        return fields;
    }

    private static bool Walk(byte[] b, int at, int end, List<SeedField> fields, int depth)
    {
        int found = fields.Count;
        while (at < end)
        {
            if (!TryVarint(b, ref at, end, out ulong tag, out int tagAt))
            {
                fields.RemoveRange(found, fields.Count - found);
                return false;
            }

            fields.Add(new(tagAt, at - tagAt, FieldEncoding.Varint));
            switch (tag & 7)
            {
                case 0:
                    if (!TryVarint(b, ref at, end, out _, out int valueAt))
                    {
                        goto default;
                    }

                    fields.Add(new(valueAt, at - valueAt, FieldEncoding.Varint));
                    break;
                case 1:
                    fields.Add(new(at, 8));
                    at += 8;
                    break;
                case 2:
                    {
                        if (!TryVarint(b, ref at, end, out ulong n, out int lengthAt) || n > (ulong)(end - at))
                        {
                            goto default;
                        }

                        fields.Add(new(lengthAt, at - lengthAt, FieldEncoding.Varint));
                        if (depth < MaxDepth && n > 0)
                        {
                            Walk(b, at, at + (int)n, fields, depth + 1);
                        }

                        at += (int)n;
                        break;
                    }

                case 5:
                    fields.Add(new(at, 4));
                    at += 4;
                    break;
                default:
                    fields.RemoveRange(found, fields.Count - found);
                    return false;
            }
        }

        if (at != end)
        {
            fields.RemoveRange(found, fields.Count - found);
            return false;
        }

        return true;
    }

    private static bool TryVarint(byte[] b, ref int at, int end, out ulong value, out int start)
    {
        start = at;
        value = 0;
        for (int shift = 0; shift < 64 && at < end; shift += 7)
        {
            byte x = b[at++];
            value |= (ulong)(x & 0x7f) << shift;
            if ((x & 0x80) == 0)
            {
                return true;
            }
        }

        return false;
    }
}

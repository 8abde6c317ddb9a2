using System.Buffers;
using System.Buffers.Binary;
using Migration.Engine.Images;
using Migration.Fuzz.Harness;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;

namespace Migration.Fuzz.Targets;

/// <summary>
/// The page stream's frames (PageFrameReader): every frame of the input parsed, every BATCH decoded and unpacked, the
/// input whole or cut into segments. The reader answers with a status and an error value; it must never throw, never
/// consume bytes it did not parse, and never hand on a batch whose checksum did not hold.
/// </summary>
public sealed class PageFrameTarget : FuzzTarget
{
    private const int PageSize = PageFacts.PageSize;
    private readonly byte[] _decoded = new byte[PageStreamProtocol.MaxBatchPages * PageSize];
    private readonly byte[] _scratch = new byte[PageFrameReader.UnpackScratchBytes];

    public PageFrameTarget() => Seeds = BuildSeeds();

    public override string Name => "page-frame";

    public override string Description => "page stream frames: PageFrameReader.TryReadFrame, TryDecodeBatch, TryUnpackBatch";

    public override IReadOnlyList<Seed> Seeds { get; }

    public override ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        // The same bytes whole, or in segments as a socket delivers them (headers and bitmaps spanning segments).
        // At most 64 segments: the harness's own allocation stays small beside the reader's.
        int cut = input.Length == 0 ? 1 : Math.Max(1 + (input[^1] * 31 % 4099), input.Length / 64);
        var buffer = input.Length % 3 == 0 ? Segment.Chunked(input, cut) : new ReadOnlySequence<byte>(input);
        while (true)
        {
            var before = buffer;
            var status = PageFrameReader.TryReadFrame(ref buffer, out var frame, out var error);
            if (status != PageFrameStatus.Complete)
            {
                if (!before.Start.Equals(buffer.Start) || before.Length != buffer.Length)
                {
                    throw new InvariantViolationException($"{status} but the buffer moved");
                }

                if ((status == PageFrameStatus.Invalid) != error.IsError || (error.IsError && string.IsNullOrWhiteSpace(error.Message)))
                {
                    throw new InvariantViolationException($"{status} with error '{error.Message}'");
                }

                // Incomplete at the end of a connection is the receiver's "incomplete frame" refusal.
                return ValueTask.FromResult(status == PageFrameStatus.Incomplete && buffer.IsEmpty ? FuzzOutcome.Accepted : FuzzOutcome.Rejected);
            }

            if (before.Length - buffer.Length != frame.Length)
            {
                throw new InvariantViolationException($"{frame} says {frame.Length} bytes, {before.Length - buffer.Length} were consumed");
            }

            if (frame.Kind != PageFrameKind.Batch)
            {
                continue;
            }

            var destination = _decoded.AsSpan(0, frame.DecodedLength);
            if (!PageFrameReader.TryDecodeBatch(frame, destination, out error))
            {
                if (!error.IsError || destination.ContainsAnyExcept((byte)0))
                {
                    throw new InvariantViolationException($"{frame} refused ({error.Message}) but left decoded bytes behind");
                }

                return ValueTask.FromResult(FuzzOutcome.Rejected);
            }

            if (frame.HasData)
            {
                if (!PageFrameReader.TryUnpackBatch(frame, _scratch, out var packed, out var unpackError))
                {
                    throw new InvariantViolationException($"{frame} decoded but does not unpack: {unpackError.Message}");
                }

                if (packed.NrPages != frame.NrPages)
                {
                    throw new InvariantViolationException($"{frame} unpacked to {packed.NrPages} pages");
                }
            }
        }
    }

    /// <summary>Every BATCH whose fields still frame it gets the checksum of what it now holds: mutated targets,
    /// addresses, bitmaps and pages then pass the checksum and meet the checks behind it.</summary>
    public override byte[] FixUp(byte[] input) => FixChecksums(input);

    internal static byte[] FixChecksums(byte[] input)
    {
        const int H = PageStreamProtocol.HeaderLength;
        var bytes = (byte[])input.Clone();
        byte[]? pages = null;
        long o = 0;
        while (o + H <= bytes.Length)
        {
            int at = (int)o;
            long body = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 8));
            if (at + H + body > bytes.Length)
            {
                break;
            }

            int b = at + H;
            if (bytes[at + 4] == (byte)PageFrameKind.Batch && body >= PageStreamProtocol.BatchPrefixLength + PageStreamProtocol.BatchTrailerLength)
            {
                bool present = (bytes[b + 5] & (byte)PagemapFlags.Present) != 0;
                uint nr = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(b + 14));
                int bitmap = present && nr <= PageStreamProtocol.MaxBatchPages ? (int)((nr + 7) / 8) : 0;
                int t = b + PageStreamProtocol.BatchPrefixLength + bitmap;
                if (t + PageStreamProtocol.BatchTrailerLength <= b + body)
                {
                    uint p = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(t + 1));
                    uint u = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(t + 5));
                    int payload = t + PageStreamProtocol.BatchTrailerLength;
                    uint crc = Crc32C.Update(Crc32C.InitialState, bytes.AsSpan(b, t - b));
                    bool ok = true;
                    if (present && payload + (long)p <= b + body)
                    {
                        var data = bytes.AsSpan(payload, (int)p);
                        if (bytes[t] == (byte)PageEncoding.Lz4 && u <= PageStreamProtocol.MaxBatchPages * PageSize)
                        {
                            pages ??= new byte[PageStreamProtocol.MaxBatchPages * PageSize];
                            ok = Lz4.TryDecompress(data, pages.AsSpan(0, (int)u), out int n);
                            crc = Crc32C.Update(crc, pages.AsSpan(0, n));
                        }
                        else
                        {
                            crc = Crc32C.Update(crc, data);
                        }
                    }

                    if (ok)
                    {
                        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(t + 9), Crc32C.Finish(crc));
                    }
                }
            }

            o += H + body;
        }

        return bytes;
    }

    private static List<Seed> BuildSeeds()
    {
        var pid = new PageTarget(42, PageImageType.Pid);
        var shmem = new PageTarget(7, PageImageType.Shmem);
        var text = Pages(3, i => (byte)('a' + (i % 26)));
        var random = Pages(2, i => (byte)(i * 2654435761u >> 13));
        var mixed = Pages(9, i => (i / PageSize) % 3 == 0 ? (byte)0 : (byte)(i % 251));
        var full = Pages(PageStreamProtocol.MaxBatchPages, i => (i / PageSize) % 5 == 0 ? (byte)0 : (byte)(i / PageSize));
        var zero = new byte[4 * PageSize];
        var seeds = new List<Seed>
        {
            Frames("hello", w => w.WriteHello("20261207233000-fuzz")),
            Frames("open", w => w.WriteOpen(pid)),
            Frames("batch-text-lz4", w => w.WritePages(pid, 0x10000, PagemapFlags.Present, text)),
            Frames("batch-random-raw", w => w.WritePages(pid, 0x20000, PagemapFlags.Present, random)),
            Frames("batch-mixed", w => w.WritePages(shmem, 0x7fff_0000_0000, PagemapFlags.Present | PagemapFlags.Lazy, mixed)),
            Frames("batch-zero", w => w.WritePages(pid, 0x40000, PagemapFlags.Present, zero)),
            Frames("batch-full-raw", w => w.WritePages(pid, 0x100000, PagemapFlags.Present, full), new PageFrameWriterOptions(disableCompression: true)),
            Frames("runs", w =>
            {
                w.WriteRun(pid, 0x50000, 9, PagemapFlags.Parent);
                w.WriteRun(shmem, 0x60000, 1 << 20, PagemapFlags.Lazy);
            }),
            Frames("rounds", w =>
            {
                w.WriteRoundEnd(1);
                w.WriteRoundAck(ulong.MaxValue);
                w.WriteError("source gave up: ünïcödé");
                w.WriteEnd();
            }),
            Frames("stream", w =>
            {
                w.WriteHello("m1");
                w.WriteOpen(pid);
                w.WritePages(pid, 0x10000, PagemapFlags.Present, mixed);
                w.WriteRun(pid, 0x30000, 2, PagemapFlags.Parent);
                w.WriteRoundEnd(7);
                w.WriteEnd();
            }),
        };
        return seeds;
    }

    private static byte[] Pages(int n, Func<int, byte> fill)
    {
        var bytes = new byte[n * PageSize];
        for (int i = 0; i < bytes.Length; i++)
        {
            bytes[i] = fill(i);
        }

        return bytes;
    }

    private static Seed Frames(string name, Action<PageFrameWriter> write, PageFrameWriterOptions? options = null)
    {
        var output = new ArrayBufferWriter<byte>();
        using (var writer = new PageFrameWriter(output, options))
        {
            write(writer);
        }

        var bytes = output.WrittenSpan.ToArray();
        return new Seed(name, bytes, FieldsOf(bytes));
    }

    /// <summary>The length, count and id fields of each frame (the byte table in PageFrame.cs).</summary>
    internal static List<SeedField> FieldsOf(byte[] bytes)
    {
        const int H = PageStreamProtocol.HeaderLength;
        var fields = new List<SeedField>();
        int o = 0;
        while (o + H <= bytes.Length)
        {
            var kind = (PageFrameKind)bytes[o + 4];
            int body = (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(o + 8));
            fields.Add(new(o + 4, 1));
            fields.Add(new(o + 6, 2));
            fields.Add(new(o + 8, 4));
            int b = o + H;
            switch (kind)
            {
                case PageFrameKind.Hello:
                    fields.Add(new(b, 4));
                    fields.Add(new(b + 4, 2));
                    break;
                case PageFrameKind.Error:
                    fields.Add(new(b, 2));
                    break;
                case PageFrameKind.Open:
                    fields.Add(new(b, 4));
                    fields.Add(new(b + 4, 1));
                    break;
                case PageFrameKind.RoundEnd or PageFrameKind.RoundAck:
                    fields.Add(new(b, 8));
                    break;
                case PageFrameKind.Batch:
                    {
                        var flags = (PagemapFlags)bytes[b + 5];
                        uint nr = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(b + 14));
                        int bitmap = PageStreamProtocol.BitmapBytes(flags, nr);
                        fields.Add(new(b, 4));
                        fields.Add(new(b + 4, 1));
                        fields.Add(new(b + 5, 1));
                        fields.Add(new(b + 6, 8));
                        fields.Add(new(b + 14, 4));
                        if (bitmap > 0)
                        {
                            fields.Add(new(b + 18, Math.Min(bitmap, 8)));
                        }

                        int t = b + 18 + bitmap;
                        fields.Add(new(t, 1));
                        fields.Add(new(t + 1, 4));
                        fields.Add(new(t + 5, 4));
                        fields.Add(new(t + 9, 4));
                        break;
                    }
            }

            o += H + body;
        }

        return fields;
    }
}

using Migration.Engine.Images;
using Migration.Fuzz.Harness;

namespace Migration.Fuzz.Targets;

/// <summary>
/// CRIU image files (ImageFile framing: magics, u32-length-prefixed protobuf entries) through the pagemap decoder
/// (<see cref="PagemapImage.Read"/>), from a seekable file or from a stream that cannot say its length (as a pipe or
/// a socket), then marked lazy with its own runs, as a lazy restore does with <c>lazy-pagemap-*.img</c>. The documented
/// rejection is <see cref="InvalidDataException"/>.
/// </summary>
public sealed class PagemapImageTarget : FuzzTarget
{
    public PagemapImageTarget()
    {
        Seeds =
        [
            Image("pagemap", 1,
                new PagemapRun(0x10000, 3, PagemapFlags.Present), new PagemapRun(0x13000, 9, PagemapFlags.Parent),
                new PagemapRun(0x400000, 1 << 20, PagemapFlags.Lazy), new PagemapRun(0x7fff_ffff_0000, 16, PagemapFlags.Present | PagemapFlags.Lazy)),
            Image("pagemap-one", 0x10000, new PagemapRun(0x1000, 1, PagemapFlags.Present)),
            Image("pagemap-empty", 7),
            Legacy(),
        ];
    }

    public override string Name => "criu-image";

    public override string Description => "CRIU image files: ImageFile header and entries, PagemapImage.Read, MarkLazy";

    public override IReadOnlyList<Seed> Seeds { get; }

    public override bool IsRejection(Exception ex) => ex is InvalidDataException;

    public override ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        using Stream stream = input.Length % 2 == 0 ? new MemoryStream(input, writable: false) : new UnseekableStream(input);
        var image = PagemapImage.Read(stream, "pagemap-1.img");
        var marked = image.MarkLazy(image.Runs);
        if (marked.PresentPages != image.PresentPages)
        {
            throw new InvariantViolationException($"marking lazy changed the present pages: {image.PresentPages} -> {marked.PresentPages}");
        }

        return ValueTask.FromResult(FuzzOutcome.Accepted);
    }

    private static Seed Image(string name, uint pagesId, params PagemapRun[] runs)
    {
        var s = new MemoryStream();
        new PagemapImage(pagesId, runs).Write(s);
        return WithFields(name, s.ToArray());
    }

    /// <summary>An image as older CRIU wrote it: compat_nr_pages and in_parent instead of nr_pages and flags.</summary>
    private static Seed Legacy()
    {
        var s = new MemoryStream();
        ImageFile.WriteHeader(s, ImageFile.PagemapMagic);
        ImageFile.WriteEntry(s, new Engine.Images.Pb.PagemapHead { PagesId = 3 });
        ImageFile.WriteEntry(s, new Engine.Images.Pb.PagemapEntry { Vaddr = 0x1000, CompatNrPages = 4 });
        ImageFile.WriteEntry(s, new Engine.Images.Pb.PagemapEntry { Vaddr = 0x9000, CompatNrPages = 2, InParent = true });
        return WithFields("pagemap-legacy", s.ToArray());
    }

    /// <summary>The magics, each entry's u32 length and the varints inside it.</summary>
    private static Seed WithFields(string name, byte[] bytes)
    {
        var fields = new List<SeedField> { new(0, 4), new(4, 4) };
        int at = 8;
        while (at + 4 <= bytes.Length)
        {
            int n = BitConverter.ToInt32(bytes, at);
            fields.Add(new(at, 4));
            fields.AddRange(ProtoFields.Find(bytes, at + 4, n));
            at += 4 + n;
        }

        return new Seed(name, bytes, fields);
    }

    /// <summary>A stream that reads in small pieces and cannot seek or say its length.</summary>
    private sealed class UnseekableStream(byte[] data) : Stream
    {
        private int _at;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = Math.Min(Math.Min(count, 1000), data.Length - _at);
            data.AsSpan(_at, n).CopyTo(buffer.AsSpan(offset));
            _at += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

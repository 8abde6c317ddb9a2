using System.Buffers;
using System.Buffers.Binary;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Xunit;

namespace Migration.PageServer.Tests.Store;

/// <summary>A fresh directory under the temp directory, removed with everything in it on Dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory(string prefix)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Sub(string name)
    {
        string p = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(p);
        return p;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Safe to ignore: a leftover temp directory does not affect other tests (each has its own).
        }
    }
}

/// <summary>Recognizable page contents and the plumbing to feed and read back a store.</summary>
internal static class PageData
{
    public const int Page = PageFacts.PageSize;

    public static readonly PageTarget Pid1 = new(1, PageImageType.Pid);
    public static readonly PageTarget Pid42 = new(42, PageImageType.Pid);
    public static readonly PageTarget Shm7 = new(7, PageImageType.Shmem);

    /// <summary>
    /// Page at <paramref name="vaddr"/> in version <paramref name="version"/>: the vaddr and version in the first
    /// 12 bytes, then bytes that depend on both, so a page at the wrong place or of the wrong round is caught.
    /// </summary>
    public static byte[] Expected(ulong vaddr, int version)
    {
        var page = new byte[Page];
        Fill(page, vaddr, version);
        return page;
    }

    public static byte[] Make(ulong vaddr, int nrPages, int version)
    {
        var data = new byte[nrPages * Page];
        for (int i = 0; i < nrPages; i++)
        {
            Fill(data.AsSpan(i * Page, Page), vaddr + ((ulong)i * Page), version);
        }

        return data;
    }

    public static ValueTask Write(this PageStore store, PageTarget target, ulong vaddr, int nrPages, int version) =>
        store.WritePagesAsync(target, vaddr, (uint)nrPages, PagemapFlags.Present, new ReadOnlySequence<byte>(Make(vaddr, nrPages, version)), CancellationToken.None);

    public static ValueTask Mark(this PageStore store, PageTarget target, ulong vaddr, int nrPages, PagemapFlags flags) =>
        store.WritePagesAsync(target, vaddr, (uint)nrPages, flags, ReadOnlySequence<byte>.Empty, CancellationToken.None);

    /// <summary><paramref name="data"/> as a sequence of segments of <paramref name="segmentBytes"/> (as a pipe hands it over).</summary>
    public static ReadOnlySequence<byte> Segmented(byte[] data, int segmentBytes)
    {
        Segment? first = null;
        Segment? last = null;
        for (int off = 0; off < data.Length; off += segmentBytes)
        {
            var memory = data.AsMemory(off, Math.Min(segmentBytes, data.Length - off));
            last = last is null ? (first = new Segment(memory, 0)) : last.Append(memory);
        }

        return first is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(first, 0, last!, last!.Memory.Length);
    }

    /// <summary>Asserts that <paramref name="actual"/> holds the pages from <paramref name="vaddr"/> of the given versions.</summary>
    public static void AssertPages(ReadOnlySpan<byte> actual, ulong vaddr, params int[] versions)
    {
        Assert.Equal(versions.Length * Page, actual.Length);
        for (int i = 0; i < versions.Length; i++)
        {
            ulong va = vaddr + ((ulong)i * Page);
            var page = actual.Slice(i * Page, Page);
            if (!page.SequenceEqual(Expected(va, versions[i])))
            {
                Assert.Fail($"page 0x{va:x}: holds vaddr 0x{BinaryPrimitives.ReadUInt64LittleEndian(page):x} version {BinaryPrimitives.ReadInt32LittleEndian(page[8..])}, expected version {versions[i]}");
            }
        }
    }

    /// <summary>Bytes of disk (or page cache) a file takes: holes take none (stat's %b, in 512-byte blocks).</summary>
    public static long AllocatedBytes(string path) => long.Parse(Stat("-c", "%b", path), System.Globalization.CultureInfo.InvariantCulture) * 512;

    /// <summary>stat -f's name of the filesystem type of <paramref name="path"/> (ext4 reports as "ext2/ext3").</summary>
    public static string FileSystemType(string path) => Stat("-f", "-c", "%T", path);

    private static string Stat(params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("stat", args) { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = System.Diagnostics.Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return output.Trim();
    }

    /// <summary><paramref name="run"/> in the page stream's form: its zero pages in a bitmap, the others back to back.</summary>
    public static PackedPages Pack(byte[] run)
    {
        int nr = run.Length / Page;
        var bitmap = new byte[(nr + 7) / 8];
        var nonZero = new List<byte>();
        for (int i = 0; i < nr; i++)
        {
            var page = run.AsSpan(i * Page, Page);
            if (page.ContainsAnyExcept((byte)0))
            {
                nonZero.AddRange(page.ToArray());
            }
            else
            {
                bitmap[i / 8] |= (byte)(1 << (i % 8));
            }
        }

        return new PackedPages((uint)nr, bitmap, nonZero.ToArray());
    }

    /// <summary>Reads back a written target: its pagemap and its pages file.</summary>
    public static (PagemapImage Pagemap, byte[] Pages) ReadImages(string dir, PageTarget target)
    {
        string pagemapPath = System.IO.Path.Combine(dir, target.PagemapFileName);
        PagemapImage pagemap;
        using (var f = File.OpenRead(pagemapPath))
        {
            pagemap = PagemapImage.Read(f, pagemapPath);
        }

        var pages = File.ReadAllBytes(System.IO.Path.Combine(dir, $"pages-{pagemap.PagesId}.img"));
        Assert.Equal((long)pagemap.PresentPages * Page, pages.LongLength);
        return (pagemap, pages);
    }

    /// <summary>Asserts a pages image holds, for each present run in order, the pages of the version <paramref name="versionOf"/> says.</summary>
    public static void AssertImagePages(PagemapImage pagemap, byte[] pages, Func<ulong, int> versionOf)
    {
        long off = 0;
        foreach (var run in pagemap.Runs.Where(r => r.Flags == PagemapFlags.Present))
        {
            for (ulong i = 0; i < run.NrPages; i++)
            {
                ulong va = run.Vaddr + (i * Page);
                AssertPages(pages.AsSpan((int)off, Page), va, versionOf(va));
                off += Page;
            }
        }

        Assert.Equal(pages.LongLength, off);
    }

    private static void Fill(Span<byte> page, ulong vaddr, int version)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(page, vaddr);
        BinaryPrimitives.WriteInt32LittleEndian(page[8..], version);
        uint x = (uint)(vaddr >> 12) * 2654435761u ^ (uint)version * 40503u;
        for (int i = 12; i < page.Length; i++)
        {
            x = (x * 1103515245u) + 12345u;
            page[i] = (byte)(x >> 24);
        }
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}

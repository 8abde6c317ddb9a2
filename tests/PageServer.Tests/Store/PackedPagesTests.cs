using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Xunit;
using static Migration.PageServer.Tests.Store.PageData;

namespace Migration.PageServer.Tests.Store;

/// <summary>Runs in the page stream's form (<see cref="PackedPages"/>) stored as they come, against the same runs stored plain.</summary>
public sealed class PackedPagesTests : IDisposable
{
    private const ulong Base = 0x7f0000000000;
    private static readonly CancellationToken None = CancellationToken.None;

    private readonly TempDirectory _tmp = new("packedpages");

    public void Dispose() => _tmp.Dispose();

    /// <summary>A run of <paramref name="nr"/> pages of version <paramref name="version"/> whose pages <paramref name="zero"/> selects are all zeros.</summary>
    private static byte[] Run(ulong vaddr, int nr, int version, Func<int, bool> zero)
    {
        var run = Make(vaddr, nr, version);
        for (int i = 0; i < nr; i++)
        {
            if (zero(i))
            {
                Array.Clear(run, i * Page, Page);
            }
        }

        return run;
    }

    public static TheoryData<string> Patterns => ["one in three", "none", "all", "long stretches", "small run"];

    private static (int Nr, Func<int, bool> Zero) Pattern(string name) => name switch
    {
        "one in three" => (256, i => i % 3 == 0),
        "none" => (256, _ => false),
        "all" => (200, _ => true),
        "long stretches" => (256, i => i < 20 || (i >= 100 && i < 140) || i >= 230 || i % 5 == 0),
        _ => (7, i => i % 2 == 1), // below DirectWriteBytes: through the write buffer
    };

    [Theory]
    [MemberData(nameof(Patterns))]
    public async Task PackedRun_StoresExactlyWhatThePlainRunStores(string pattern)
    {
        var (nr, zero) = Pattern(pattern);
        using var plain = NewStore();
        using var packed = NewStore();
        foreach (var store in new[] { plain, packed })
        {
            await store.Write(Pid1, Base - (3 * Page), 3, version: 1); // buffered bytes in front of the run
        }

        var run = Run(Base, nr, 2, zero);
        await plain.WritePagesAsync(Pid1, Base, (uint)nr, PagemapFlags.Present, new ReadOnlySequence<byte>(run), None);
        await packed.WritePackedPagesAsync(Pid1, Base, PagemapFlags.Present, Pack(run), None);
        foreach (var store in new[] { plain, packed })
        {
            await store.Write(Pid1, Base + ((ulong)nr * Page), 2, version: 3); // after the run (and a trailing hole): at the right offset
            await store.CompleteRoundAsync(None);
        }

        string plainData = Path.Combine(plain.DataDirectory, "pid-1.data");
        string packedData = Path.Combine(packed.DataDirectory, "pid-1.data");
        Assert.Equal(File.ReadAllBytes(plainData), File.ReadAllBytes(packedData));
        var expected = new byte[(nr + 5) * Page];
        Make(Base - (3 * Page), 3, 1).CopyTo(expected, 0);
        run.CopyTo(expected, 3 * Page);
        Make(Base + ((ulong)nr * Page), 2, 3).CopyTo(expected, (nr + 3) * Page);
        var dest = new byte[expected.Length];
        Assert.Equal(nr + 5, packed.ReadPages(Pid1, Base - (3 * Page), nr + 5, dest));
        Assert.Equal(expected, dest);

        // Both leave the same zero stretches as holes: a packed run takes no more disk than a plain one.
        Assert.True(AllocatedBytes(packedData) <= AllocatedBytes(plainData) + (8 * Page),
            $"packed: {AllocatedBytes(packedData)} bytes allocated, plain: {AllocatedBytes(plainData)}");

        string images = _tmp.Sub($"images-{Guid.NewGuid():N}");
        packed.WriteImages(images);
        var (pagemap, pages) = ReadImages(images, Pid1);
        Assert.Equal(new[] { new PagemapRun(Base - (3 * Page), (ulong)nr + 5, PagemapFlags.Present) }, pagemap.Runs);
        Assert.Equal(expected, pages);
    }

    [Fact]
    public async Task PackedRun_LeavesLongZeroStretchesAsHoles()
    {
        using var store = NewStore();
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        var run = Run(Base, 256, 1, i => i < 100 || i >= 156); // 56 pages of data between two long stretches of zeros
        await store.WritePackedPagesAsync(Pid1, Base, PagemapFlags.Present, Pack(run), None);
        await store.CompleteRoundAsync(None);

        Assert.Equal(256L * Page, new FileInfo(data).Length);
        Assert.Equal(run, File.ReadAllBytes(data));

        // As the pages image (space preallocated past the end is given back then): the holes take no disk.
        string images = _tmp.Sub($"images-{Guid.NewGuid():N}");
        Assert.True(Assert.Single(store.WriteImages(images)).Moved);
        var (_, pages) = ReadImages(images, Pid1);
        Assert.Equal(run, pages);
        string image = Directory.GetFiles(images, "pages-*.img").Single();
        Assert.True(AllocatedBytes(image) <= 64L * Page, $"{AllocatedBytes(image)} bytes allocated for 56 pages of data");
    }

    [Fact]
    public async Task DataFiles_GetTheirSpaceAhead_OnExt4_AndGiveBackWhatTheyDidNotUse()
    {
        using var store = NewStore();
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        await store.WritePackedPagesAsync(Pid1, Base, PagemapFlags.Present, Pack(Make(Base, 100, 1)), None);
        await store.CompleteRoundAsync(None);

        bool ext4 = FileSystemType(store.DataDirectory) == "ext2/ext3";
        long allocated = AllocatedBytes(data);
        if (ext4)
        {
            Assert.True(allocated >= Preallocator.MinPreallocateBytes, $"{allocated} bytes allocated for 100 pages: nothing ahead");
        }
        else
        {
            Assert.True(allocated <= 104L * Page, $"{allocated} bytes allocated for 100 pages on {FileSystemType(store.DataDirectory)}");
        }

        string images = _tmp.Sub($"images-{Guid.NewGuid():N}");
        store.WriteImages(images);
        string image = Directory.GetFiles(images, "pages-*.img").Single();
        Assert.Equal(100L * Page, new FileInfo(image).Length);
        Assert.InRange(AllocatedBytes(image), 100L * Page, 104L * Page); // exactly its pages
    }

    [Fact]
    public async Task NewerPackedCopy_OverwritesInPlace_ZeroPagesIncluded()
    {
        using var store = NewStore();
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        await store.Write(Pid1, Base, 256, version: 1); // the ascending prefix: a newer copy is written over it
        var newer = Run(Base, 256, 2, i => i % 3 == 0 || (i >= 40 && i < 90));
        await store.WritePackedPagesAsync(Pid1, Base, PagemapFlags.Present, Pack(newer), None);
        await store.CompleteRoundAsync(None);

        Assert.Equal(256L * Page, new FileInfo(data).Length); // in place, not appended
        Assert.Equal(newer, File.ReadAllBytes(data)); // the old copies of the zero pages are gone, not left under holes
        var dest = new byte[256 * Page];
        Assert.Equal(256, store.ReadPages(Pid1, Base, 256, dest));
        Assert.Equal(newer, dest);
    }

    [Fact]
    public async Task ASinkWithoutAPackedPath_GetsTheRunExpanded()
    {
        var sink = new PlainSink();
        var run = Run(Base, 20, 1, i => i % 4 == 1);
        IPageSink asSink = sink;
        await asSink.WritePackedPagesAsync(Pid1, Base, PagemapFlags.Present | PagemapFlags.Lazy, Pack(run), None);

        var (target, vaddr, nr, flags, bytes) = Assert.Single(sink.Calls);
        Assert.Equal((Pid1, Base, 20u, PagemapFlags.Present | PagemapFlags.Lazy), (target, vaddr, nr, flags));
        Assert.Equal(run, bytes);
    }

    [Fact]
    public async Task PackedPages_ForLazyOrParentFlags_AreRefused()
    {
        using var store = NewStore();
        var packed = Pack(Make(Base, 2, 1));
        await Assert.ThrowsAsync<ArgumentException>(() => store.WritePackedPagesAsync(Pid1, Base, PagemapFlags.Lazy, packed, None).AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => store.WritePackedPagesAsync(Pid1, Base, PagemapFlags.Parent, packed, None).AsTask());
        Assert.Equal(0, store.Stats.PagesReceived);
    }

    [Fact]
    public void Constructor_ChecksTheBitmapAgainstTheBytes()
    {
        var page = Make(Base, 1, 1);
        Assert.Throws<ArgumentException>(() => new PackedPages(9, new byte[1], new byte[9 * Page])); // 9 pages need 2 bitmap bytes
        Assert.Throws<ArgumentException>(() => new PackedPages(3, new byte[] { 0b1000 }, new byte[3 * Page])); // bit past the last page
        Assert.Throws<ArgumentException>(() => new PackedPages(3, new byte[] { 0b010 }, new byte[3 * Page])); // one zero page: 2 pages of bytes
        Assert.Throws<ArgumentOutOfRangeException>(() => new PackedPages(0, Array.Empty<byte>(), Array.Empty<byte>()));

        var ok = new PackedPages(3, new byte[] { 0b101 }, page);
        Assert.Equal((3u, 2, 3L * Page), (ok.NrPages, ok.ZeroPages, ok.Length));
        Assert.Equal(1, ok.Stretch(0, out bool zero));
        Assert.True(zero);
        Assert.Equal(1, ok.Stretch(1, out zero));
        Assert.False(zero);
        var expanded = new byte[3 * Page];
        ok.ExpandTo(expanded);
        Assert.Equal(new byte[Page].Concat(page).Concat(new byte[Page]), expanded);
    }

    private PageStore NewStore() => new(_tmp.Sub($"store-{Guid.NewGuid():N}"));

    /// <summary>A sink with only the plain path (the interface's default expands packed runs for it).</summary>
    private sealed class PlainSink : IPageSink
    {
        public List<(PageTarget Target, ulong Vaddr, uint NrPages, PagemapFlags Flags, byte[] Bytes)> Calls { get; } = [];

        public ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct) => ValueTask.FromResult(false);

        public ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct)
        {
            Calls.Add((target, vaddr, nrPages, flags, data.ToArray()));
            return ValueTask.CompletedTask;
        }

        public ValueTask CompleteRoundAsync(CancellationToken ct) => ValueTask.CompletedTask;
    }
}

using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Xunit;
using static Migration.PageServer.Tests.Store.PageData;

namespace Migration.PageServer.Tests.Store;

public sealed class PageStoreImagesTests : IDisposable
{
    private const ulong Base = 0x7f0000000000;
    private const ulong P = Page;
    private static readonly CancellationToken None = CancellationToken.None;

    private readonly TempDirectory _tmp = new("pagestore-img");

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task FastPath_AscendingSingleCopies_MovesTheDataFileIntoPlace()
    {
        string images = _tmp.Sub("images");
        using var store = new PageStore(_tmp.Sub("store"));
        await store.Write(Pid1, Base, 10, version: 1);
        await store.Write(Pid1, Base + (10 * P), 6, version: 1); // adjacent: merges
        await store.Write(Pid1, Base + (20 * P), 5, version: 1);
        await store.CompleteRoundAsync(None);

        var composed = Assert.Single(store.WriteImages(images));

        Assert.True(composed.Moved);
        Assert.Equal(PageStore.DefaultFirstPagesId, composed.PagesId);
        Assert.Equal(Path.Combine(images, "pagemap-1.img"), composed.PagemapPath);
        Assert.Equal(Path.Combine(images, "pages-65536.img"), composed.PagesPath);
        Assert.Equal((2, 21L), (composed.Entries, composed.PresentPages));
        Assert.False(File.Exists(Path.Combine(store.DataDirectory, "pid-1.data")));

        var (pagemap, pages) = ReadImages(images, Pid1);
        Assert.Equal(0x10000u, pagemap.PagesId);
        Assert.Equal(new[] { new PagemapRun(Base, 16, PagemapFlags.Present), new PagemapRun(Base + (20 * P), 5, PagemapFlags.Present) }, pagemap.Runs);
        AssertImagePages(pagemap, pages, _ => 1);

        var dest = new byte[5 * Page];
        Assert.Equal(5, store.ReadPages(Pid1, Base + (20 * P), 5, dest)); // the moved file still serves reads
        AssertPages(dest, Base + (20 * P), 1, 1, 1, 1, 1);

        store.Dispose();
        Assert.True(File.Exists(composed.PagesPath)); // images are not the store's to delete
        Assert.Equal(21L * Page, new FileInfo(composed.PagesPath).Length);
    }

    [Fact]
    public async Task PagemapEntries_CarryCompatNrPages_WhichCriuRequires()
    {
        string images = _tmp.Sub("images");
        using var store = new PageStore(_tmp.Sub("store"));
        await store.Write(Pid1, 0x1000, 2, version: 1);
        await store.Mark(Pid1, 0x3000, 1, PagemapFlags.Lazy);
        store.WriteImages(images);

        var bytes = File.ReadAllBytes(Path.Combine(images, "pagemap-1.img"));
        byte[] expected =
        [
            0x19, 0x43, 0x56, 0x54, 0x25, 0x40, 0x08, 0x56, // common magic 0x54564319, pagemap magic 0x56084025
            0x04, 0x00, 0x00, 0x00, 0x08, 0x80, 0x80, 0x04, // head: 4 bytes, pages_id (1) = 0x10000
            0x09, 0x00, 0x00, 0x00, // entry: 9 bytes
            0x08, 0x80, 0x20, //   vaddr (1) = 0x1000
            0x10, 0x00, //         compat_nr_pages (2) = 0: required in images/pagemap.proto
            0x20, 0x04, //         flags (4) = PE_PRESENT
            0x28, 0x02, //         nr_pages (5) = 2
            0x09, 0x00, 0x00, 0x00, 0x08, 0x80, 0x60, 0x10, 0x00, 0x20, 0x02, 0x28, 0x01, // 0x3000, PE_LAZY, 1 page
        ];
        Assert.Equal(expected, bytes);
    }

    [Fact]
    public async Task ReorderPath_RoundsWithOverwritesAndMarks_NewestWinsAndEntriesMergeExactly()
    {
        string images = _tmp.Sub("images");
        using var store = new PageStore(_tmp.Sub("store"));

        // round 1
        await store.Write(Pid42, Base + (100 * P), 1, version: 1); // out of address order
        await store.Write(Pid42, Base, 16, version: 1);
        await store.Mark(Pid42, Base + (16 * P), 4, PagemapFlags.Lazy);
        await store.Write(Pid42, Base + (32 * P), 4, version: 1);
        await store.Mark(Pid42, Base + (40 * P), 2, PagemapFlags.Parent);
        await store.Write(Pid42, Base + (60 * P), 4, version: 1); // 60..63 and 64..70 straddle an index chunk
        await store.Write(Pid42, Base + (64 * P), 7, version: 1);
        await store.CompleteRoundAsync(None);

        // round 2
        await store.Write(Pid42, Base + (4 * P), 2, version: 2);
        await store.Write(Pid42, Base + (16 * P), 1, version: 2); // present replaces lazy
        await store.Mark(Pid42, Base + (33 * P), 1, PagemapFlags.Lazy); // lazy replaces present
        await store.Write(Pid42, Base + (36 * P), 2, version: 2);
        await store.Mark(Pid42, Base + (62 * P), 1, PagemapFlags.Parent);
        await store.CompleteRoundAsync(None);

        // round 3
        await store.Write(Pid42, Base + (100 * P), 1, version: 3);
        await store.Write(Pid42, Base + (62 * P), 1, version: 3); // present again
        await store.CompleteRoundAsync(None);

        var composed = Assert.Single(store.WriteImages(images));
        Assert.False(composed.Moved);

        var (pagemap, pages) = ReadImages(images, Pid42);
        PagemapRun[] expected =
        [
            new(Base, 17, PagemapFlags.Present),
            new(Base + (17 * P), 3, PagemapFlags.Lazy),
            new(Base + (32 * P), 1, PagemapFlags.Present),
            new(Base + (33 * P), 1, PagemapFlags.Lazy),
            new(Base + (34 * P), 4, PagemapFlags.Present),
            new(Base + (40 * P), 2, PagemapFlags.Parent),
            new(Base + (60 * P), 11, PagemapFlags.Present),
            new(Base + (100 * P), 1, PagemapFlags.Present),
        ];
        Assert.Equal(expected, pagemap.Runs);
        Assert.Equal(composed.Entries, pagemap.Runs.Count);
        AssertImagePages(pagemap, pages, va => ((va - Base) / P) switch
        {
            4 or 5 or 16 or 36 or 37 => 2,
            62 or 100 => 3,
            _ => 1,
        });
        Assert.Equal(34, composed.PresentPages);
        Assert.Equal(34, store.Stats.LivePages);
    }

    [Fact]
    public async Task FastPathAndCopy_WriteIdenticalImages()
    {
        string movedDir = _tmp.Sub("moved");
        string copiedDir = _tmp.Sub("copied");
        using var moving = new PageStore(_tmp.Sub("store-a"));
        using var copying = new PageStore(_tmp.Sub("store-b"), new PageStoreOptions { MoveDataFiles = false, CopyBufferBytes = 5 * Page });
        foreach (var store in new[] { moving, copying })
        {
            for (int i = 0; i < 40; i++)
            {
                await store.Write(Pid1, Base + ((ulong)i * 9 * P), 1 + (i % 7), version: i);
            }

            await store.Mark(Pid1, Base + (1000 * P), 3, PagemapFlags.Lazy);
            await store.CompleteRoundAsync(None);
        }

        Assert.True(Assert.Single(moving.WriteImages(movedDir)).Moved);
        Assert.False(Assert.Single(copying.WriteImages(copiedDir)).Moved);

        foreach (var name in new[] { "pagemap-1.img", "pages-65536.img" })
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(movedDir, name)), File.ReadAllBytes(Path.Combine(copiedDir, name)));
        }

        var (pagemap, pages) = ReadImages(copiedDir, Pid1);
        Assert.Equal(41, pagemap.Runs.Count); // 40 present runs (gaps between them) + 1 lazy
        AssertImagePages(pagemap, pages, va => (int)((va - Base) / P / 9));
    }

    [Fact]
    public async Task CopyPath_ManyRandomOverwrites_MatchesAModel()
    {
        string images = _tmp.Sub("images");
        using var store = new PageStore(_tmp.Sub("store"), new PageStoreOptions { WriteBufferBytes = 7 * Page, CopyBufferBytes = 3 * Page });
        var model = new Dictionary<ulong, int>();
        var rng = new Random(1234);
        for (int round = 1; round <= 5; round++)
        {
            for (int i = 0; i < 300; i++)
            {
                ulong page = (ulong)rng.Next(0, 3000);
                int n = rng.Next(1, 9);
                await store.Write(Pid1, Base + (page * P), n, version: round);
                for (ulong k = 0; k < (ulong)n; k++)
                {
                    model[page + k] = round;
                }
            }

            await store.CompleteRoundAsync(None);
        }

        var composed = Assert.Single(store.WriteImages(images));
        Assert.False(composed.Moved);
        var (pagemap, pages) = ReadImages(images, Pid1);
        Assert.Equal(model.Count, (int)pagemap.PresentPages);
        Assert.Equal(model.Keys.Order().Select(p => Base + (p * P)), pagemap.Runs.SelectMany(r => Enumerable.Range(0, (int)r.NrPages).Select(i => r.Vaddr + ((ulong)i * P))));
        AssertImagePages(pagemap, pages, va => model[(va - Base) / P]);
    }

    [Fact]
    public async Task SeveralTargets_NamedAsCriuReadsThem_WithDistinctPagesIds()
    {
        string images = _tmp.Sub("images");
        using var store = new PageStore(_tmp.Sub("store"));
        await store.Write(Shm7, 0, 3, version: 7);
        await store.Write(Pid42, Base, 2, version: 42);
        await store.Write(Pid1, Base, 1, version: 1);
        await store.CompleteRoundAsync(None);

        var composed = store.WriteImages(images, firstPagesId: 5);

        Assert.Equal(new[] { (Pid1, 5u), (Pid42, 6u), (Shm7, 7u) }, composed.Select(c => (c.Target, c.PagesId)));
        Assert.Equal(
            new[] { "pagemap-1.img", "pagemap-42.img", "pagemap-shmem-7.img", "pages-5.img", "pages-6.img", "pages-7.img" },
            Directory.GetFiles(images).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal));
        foreach (var (target, version) in new[] { (Pid1, 1), (Pid42, 42), (Shm7, 7) })
        {
            var (pagemap, pages) = ReadImages(images, target);
            AssertImagePages(pagemap, pages, _ => version);
        }
    }

    [Fact]
    public async Task TargetsWithoutPresentPages_GetAnEmptyPagesImage()
    {
        string images = _tmp.Sub("images");
        using var store = new PageStore(_tmp.Sub("store"));
        await store.OpenAsync(Pid1, None);
        await store.Mark(Pid42, Base, 5, PagemapFlags.Lazy);
        await store.Mark(Pid42, Base + (5 * P), 2, PagemapFlags.Parent);

        store.WriteImages(images);

        var (empty, emptyPages) = ReadImages(images, Pid1);
        Assert.Empty(empty.Runs);
        Assert.Empty(emptyPages);
        var (marks, markPages) = ReadImages(images, Pid42);
        Assert.Equal(new[] { new PagemapRun(Base, 5, PagemapFlags.Lazy), new PagemapRun(Base + (5 * P), 2, PagemapFlags.Parent) }, marks.Runs);
        Assert.Empty(markPages);
    }

    [Fact]
    public async Task ExistingImage_IsNeverOverwritten_AndNothingIsWritten()
    {
        string images = _tmp.Sub("images");
        string squatter = Path.Combine(images, "pages-65537.img");
        await File.WriteAllTextAsync(squatter, "dump's own");
        using var store = new PageStore(_tmp.Sub("store"));
        await store.Write(Pid1, Base, 2, version: 1);
        await store.Write(Pid42, Base, 2, version: 1);

        var ex = Assert.Throws<IOException>(() => store.WriteImages(images));
        Assert.Contains(squatter, ex.Message, StringComparison.Ordinal);
        Assert.Equal(new[] { squatter }, Directory.GetFiles(images));
        Assert.Equal("dump's own", await File.ReadAllTextAsync(squatter));

        File.Delete(squatter);
        Assert.Equal(2, store.WriteImages(images).Count); // nothing was sealed or moved: a retry works
    }

    [Theory]
    [InlineData("PagesWritten")]
    [InlineData("PagemapWritten")]
    public async Task FailurePartWay_RemovesWhatWasWritten_AndMovesDataFilesBack(string point)
    {
        string images = _tmp.Sub("images");
        string metadata = Path.Combine(images, "core-1.img");
        await File.WriteAllTextAsync(metadata, "metadata");
        using var store = new PageStore(_tmp.Sub("store"));
        await store.Write(Pid1, Base, 4, version: 1); // fast path: moved
        await store.Write(Pid42, Base + P, 2, version: 1);
        await store.Write(Pid42, Base, 2, version: 2); // overwrite: copied
        await store.CompleteRoundAsync(None);
        var failAt = Enum.Parse<ImageComposer.FaultPoint>(point);
        store.InjectFault = (target, at) =>
        {
            if (target == Pid42 && at == failAt)
            {
                throw new IOException($"injected at {at}");
            }
        };

        var ex = Assert.Throws<IOException>(() => store.WriteImages(images));
        Assert.Equal($"injected at {point}", ex.Message);
        Assert.Equal(new[] { metadata }, Directory.GetFiles(images));
        Assert.True(File.Exists(Path.Combine(store.DataDirectory, "pid-1.data")));
        Assert.True(File.Exists(Path.Combine(store.DataDirectory, "pid-42.data")));

        store.InjectFault = null;
        await store.Write(Pid1, Base + (4 * P), 1, version: 1); // still takes pages
        var composed = store.WriteImages(images);
        Assert.Equal(new[] { true, false }, composed.Select(c => c.Moved));
        var (pagemap, pages) = ReadImages(images, Pid42);
        Assert.Equal(new[] { new PagemapRun(Base, 3, PagemapFlags.Present) }, pagemap.Runs);
        AssertImagePages(pagemap, pages, va => va == Base + (2 * P) ? 1 : 2);
        var (pagemap1, pages1) = ReadImages(images, Pid1);
        Assert.Equal(new[] { new PagemapRun(Base, 5, PagemapFlags.Present) }, pagemap1.Runs);
        AssertImagePages(pagemap1, pages1, _ => 1);
    }

    [Fact]
    public async Task AfterImagesAreWritten_TheStoreTakesNoMorePages()
    {
        string images = _tmp.Sub("images");
        using var store = new PageStore(_tmp.Sub("store"));
        await store.Write(Pid1, Base, 1, version: 1);
        store.WriteImages(images);

        await Assert.ThrowsAsync<InvalidOperationException>(() => store.Write(Pid1, Base + P, 1, version: 1).AsTask());
        await Assert.ThrowsAsync<InvalidOperationException>(() => store.CompleteRoundAsync(None).AsTask());
        Assert.Throws<InvalidOperationException>(() => store.WriteImages(_tmp.Sub("again")));
    }

    [Fact]
    public async Task MissingImagesDirectory_OrPagesIdOverflow_IsRefused()
    {
        using var store = new PageStore(_tmp.Sub("store"));
        await store.OpenAsync(Pid1, None);
        await store.OpenAsync(Pid42, None);

        Assert.Throws<DirectoryNotFoundException>(() => store.WriteImages(Path.Combine(_tmp.Path, "absent")));
        Assert.Throws<ArgumentOutOfRangeException>(() => store.WriteImages(_tmp.Sub("images"), firstPagesId: uint.MaxValue));
        Assert.Equal(2, store.WriteImages(_tmp.Sub("images"), firstPagesId: uint.MaxValue - 1).Count);
    }
}

using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Xunit;
using static Migration.PageServer.Tests.Store.PageData;

namespace Migration.PageServer.Tests.Store;

/// <summary>
/// The lazy fill serves from the composed images, not from the store: what <see cref="ImagePageSource"/> reads back
/// must be the store's latest pages, through the parent image where the final one references it, and nothing else.
/// </summary>
public sealed class ImagePageSourceTests : IDisposable
{
    private const ulong Base = 0x7f0000000000;
    private const ulong P = Page;
    private static readonly PageTarget s_task = new(7, PageImageType.Pid);
    private readonly TempDirectory _tmp = new("image-source");

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task ReadsTheLatestPagesThroughTheParentImage_StopsAtAHole()
    {
        using var store = await BuildStoreAsync();
        var images = ComposeLazy(store);
        using var source = new ImagePageSource(images);
        var buffer = new byte[20 * Page];

        // Pages 0-7: 4 and 5 rewritten in the final round, the rest only in the parent image; 8-15 a hole.
        Assert.Equal(8, source.ReadPages(s_task, Base, 20, buffer));
        AssertPages(buffer.AsSpan(0, 8 * Page), Base, 1, 1, 1, 1, 2, 2, 1, 1);

        // From inside a run, across the parent run and the final round's own pages.
        Assert.Equal(6, source.ReadPages(s_task, Base + (16 * P), 6, buffer));
        AssertPages(buffer.AsSpan(0, 6 * Page), Base + (16 * P), 1, 1, 1, 1, 2, 2);
        Assert.Equal(1, source.ReadPages(s_task, Base + (21 * P), 1, buffer));
        AssertPages(buffer.AsSpan(0, Page), Base + (21 * P), 2);
        Assert.Equal(8 + 6 + 1, source.PagesRead);

        Assert.Equal(0, source.ReadPages(s_task, Base + (8 * P), 1, buffer));
        Assert.Equal(0, source.ReadPages(new PageTarget(99, PageImageType.Pid), Base, 1, buffer));
        Assert.Equal(0, source.ReadPages(new PageTarget(7, PageImageType.Shmem), Base, 1, buffer));
        Assert.Equal(14, ImagePageSource.CountLazyPages(images));
    }

    [Fact]
    public void PagesFileShorterThanItsPagemap_IsRefused()
    {
        var dir = _tmp.Sub("short");
        using (var fs = File.Create(Path.Combine(dir, "pagemap-7.img")))
        {
            new PagemapImage(1, [new PagemapRun(Base, 4, PagemapFlags.Present | PagemapFlags.Lazy)]).Write(fs);
        }

        File.WriteAllBytes(Path.Combine(dir, "pages-1.img"), Make(Base, 2, 1));
        using var source = new ImagePageSource(dir);
        var ex = Assert.Throws<InvalidDataException>(() => source.ReadPages(s_task, Base, 1, new byte[Page]));
        Assert.Contains("pages-1.img", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ParentPagesWithoutAParentImage_AreNotHeld()
    {
        var dir = _tmp.Sub("orphan");
        using (var fs = File.Create(Path.Combine(dir, "pagemap-7.img")))
        {
            new PagemapImage(1, [new PagemapRun(Base, 2, PagemapFlags.Present | PagemapFlags.Lazy), new PagemapRun(Base + (2 * P), 2, PagemapFlags.Lazy)]).Write(fs);
        }

        File.WriteAllBytes(Path.Combine(dir, "pages-1.img"), Make(Base, 2, 3));
        using var source = new ImagePageSource(dir);
        var buffer = new byte[4 * Page];
        Assert.Equal(2, source.ReadPages(s_task, Base, 4, buffer));
        AssertPages(buffer.AsSpan(0, 2 * Page), Base, 3, 3);
        Assert.Equal(0, source.ReadPages(s_task, Base + (2 * P), 1, buffer));
    }

    /// <summary>Round 1: pages 0-7 and 16-19; parent image; round 2: 4-5 and 20-21 rewritten or new, the rest unchanged.</summary>
    private async Task<PageStore> BuildStoreAsync()
    {
        var store = new PageStore(_tmp.Sub("store"));
        await store.OpenAsync(s_task, default);
        await store.Write(s_task, Base, 8, version: 1);
        await store.Write(s_task, Base + (16 * P), 4, version: 1);
        await store.CompleteRoundAsync(default);
        store.WriteParentImages(_tmp.Sub("parent-images"));

        Assert.True(await store.OpenAsync(s_task, default));
        await store.Mark(s_task, Base, 4, PagemapFlags.Parent);
        await store.Write(s_task, Base + (4 * P), 2, version: 2);
        await store.Mark(s_task, Base + (6 * P), 2, PagemapFlags.Parent);
        await store.Mark(s_task, Base + (16 * P), 4, PagemapFlags.Parent);
        await store.WritePagesAsync(s_task, Base + (20 * P), 2, PagemapFlags.Present, new ReadOnlySequence<byte>(Make(Base + (20 * P), 2, 2)), default);
        await store.CompleteRoundAsync(default);
        return store;
    }

    /// <summary>The store's images, every run marked lazy as a lazy restore marks them (LazyPageFill.MarkLazyRuns).</summary>
    private string ComposeLazy(PageStore store)
    {
        var images = _tmp.Sub("images");
        store.WriteImages(images);
        var path = Path.Combine(images, "pagemap-7.img");
        PagemapImage map;
        using (var fs = File.OpenRead(path))
        {
            map = PagemapImage.Read(fs, path);
        }

        var lazy = map.MarkLazy([new PagemapRun(Base, 64, PagemapFlags.Lazy)]);
        using (var fs = File.Create(path))
        {
            lazy.Write(fs);
        }

        return images;
    }
}

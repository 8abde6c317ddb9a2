using Migration.PageServer.Store;
using Xunit;

namespace Migration.PageServer.Tests.Store;

public class PageIndexTests
{
    private const ulong Chunk = PageIndex.ChunkPages;

    [Fact]
    public void Set_ReturnsPrevious_AndCountsDistinctPages()
    {
        var index = new PageIndex();

        Assert.Equal(PageEntry.None, index.Set(5, PageEntry.Present(0)));
        Assert.Equal(PageEntry.Present(0), index.Set(5, PageEntry.Lazy));
        Assert.Equal(PageEntry.Lazy, index.Set(5, PageEntry.Present(7)));
        index.Set(Chunk * 1000, PageEntry.Parent);

        Assert.Equal(2, index.Count);
        Assert.Equal(PageKind.Present, index.Get(5).Kind);
        Assert.Equal(7, index.Get(5).DataPage);
        Assert.Equal(PageKind.Parent, index.Get(Chunk * 1000).Kind);
        Assert.Equal(PageEntry.None, index.Get(6));
        Assert.Equal(PageEntry.None, index.Get(Chunk * 999));
    }

    [Fact]
    public void PresentEntry_KeepsLargeDataPageIndexes()
    {
        long far = (1L << 40) + 3; // a data file of 4 PiB: far beyond any limit, still exact
        var e = PageEntry.Present(far);

        Assert.Equal(PageKind.Present, e.Kind);
        Assert.Equal(far, e.DataPage);
    }

    [Fact]
    public void CountMissing_SpansChunks()
    {
        var index = new PageIndex();
        for (ulong p = Chunk - 2; p < Chunk + 2; p++)
        {
            index.Set(p, PageEntry.Lazy);
        }

        Assert.Equal((0L, 0L), (index.CountMissing(Chunk - 2, 4, out long chunks), chunks));
        Assert.Equal((2L, 0L), (index.CountMissing(Chunk - 4, 4, out chunks), chunks));
        Assert.Equal(((long)(Chunk * 3) - 4, 1L), (index.CountMissing(0, Chunk * 3, out chunks), chunks));
        Assert.Equal(((long)Chunk * 10, 11L), (index.CountMissing((Chunk * 100) + 1, Chunk * 10, out chunks), chunks));
        Assert.Equal(2, index.Chunks);
    }

    [Fact]
    public void OrderedChunks_AreAscending_WithTheirFirstPage()
    {
        var index = new PageIndex();
        foreach (ulong p in new ulong[] { Chunk * 900, 3, Chunk * 7 + 1, 1UL << 40 })
        {
            index.Set(p, PageEntry.Present(0));
        }

        var chunks = index.OrderedChunks();

        Assert.Equal(new[] { 0UL, Chunk * 7, Chunk * 900, 1UL << 40 }, chunks.Select(c => c.Key));
        Assert.Equal(PageEntry.Present(0).Raw, chunks[1].Value[1]);
    }
}

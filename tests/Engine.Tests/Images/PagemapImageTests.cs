using Migration.Engine.Images;
using Migration.Engine.Images.Pb;
using Xunit;
using static Migration.Engine.Tests.Images.ImageFileTests;

namespace Migration.Engine.Tests.Images;

public class PagemapImageTests
{
    private const string What = "pagemap-42.img";
    private const ulong Page = PagemapImage.PageSize;

    /// <summary>Common magic 0x54564319 then pagemap magic 0x56084025, both little-endian.</summary>
    private static readonly byte[] s_header = [0x19, 0x43, 0x56, 0x54, 0x25, 0x40, 0x08, 0x56];

    private static readonly PagemapImage s_sample = new(
        PagesId: 5,
        Runs:
        [
            new PagemapRun(0x400000, 3, PagemapFlags.Present),
            new PagemapRun(0x403000, 16, PagemapFlags.Parent),
            new PagemapRun(0x7f0000000000, 1, PagemapFlags.Lazy | PagemapFlags.Present),
            new PagemapRun(0x7ffffff00000, 256, PagemapFlags.Lazy),
        ]);

    [Fact]
    public void MarkLazy_SplitsRunsAtLazyBoundariesAndKeepsEverythingElse()
    {
        // Composed: present 0x1000..0x5000 (4 pages), parent 0x5000..0x8000 (3), present 0x10000 (1), present 0x20000 (2).
        var composed = new PagemapImage(7,
        [
            new PagemapRun(0x1000, 4, PagemapFlags.Present),
            new PagemapRun(0x5000, 3, PagemapFlags.Parent),
            new PagemapRun(0x10000, 1, PagemapFlags.Present),
            new PagemapRun(0x20000, 2, PagemapFlags.Present),
        ]);

        // CRIU's lazy runs: 0x3000..0x7000 (across the present/parent boundary) and 0x20000..0x21000 (half a run).
        var marked = composed.MarkLazy([new PagemapRun(0x3000, 4, PagemapFlags.Lazy), new PagemapRun(0x20000, 1, PagemapFlags.Lazy)]);

        Assert.Equal(7u, marked.PagesId);
        Assert.Equal(
        [
            new PagemapRun(0x1000, 2, PagemapFlags.Present),
            new PagemapRun(0x3000, 2, PagemapFlags.Present | PagemapFlags.Lazy),
            new PagemapRun(0x5000, 2, PagemapFlags.Lazy),
            new PagemapRun(0x7000, 1, PagemapFlags.Parent),
            new PagemapRun(0x10000, 1, PagemapFlags.Present),
            new PagemapRun(0x20000, 1, PagemapFlags.Present | PagemapFlags.Lazy),
            new PagemapRun(0x21000, 1, PagemapFlags.Present),
        ], marked.Runs);

        // Every page keeps its place; the present count (data in the pages file) is unchanged.
        Assert.Equal(composed.PresentPages, marked.PresentPages);
        Assert.Equal(composed.Runs.Sum(r => (long)r.NrPages), marked.Runs.Sum(r => (long)r.NrPages));
    }

    [Fact]
    public void MarkLazy_WithNoLazyRunsChangesNothing_AndWholeCoverMarksEverything()
    {
        var composed = new PagemapImage(1, [new PagemapRun(0x1000, 4, PagemapFlags.Present), new PagemapRun(0x5000, 3, PagemapFlags.Parent)]);
        Assert.Equal(composed.Runs, composed.MarkLazy([]).Runs);
        Assert.Equal(
            [new PagemapRun(0x1000, 4, PagemapFlags.Present | PagemapFlags.Lazy), new PagemapRun(0x5000, 3, PagemapFlags.Lazy)],
            composed.MarkLazy([new PagemapRun(0, 0x100, PagemapFlags.Lazy)]).Runs);
    }

    [Fact]
    public void Without_CutsRunsAtTheEdgesOfTheRange()
    {
        var map = new PagemapImage(3, [new PagemapRun(0x1000, 4, PagemapFlags.Lazy), new PagemapRun(0x8000, 2, PagemapFlags.Lazy), new PagemapRun(0x20000, 1, PagemapFlags.Present)]);

        // Unaligned edges widen to whole pages: [0x2800, 0x8001) drops 0x2000..0x9000.
        var cut = map.Without(0x2800, 0x8001);

        Assert.Equal([new PagemapRun(0x1000, 1, PagemapFlags.Lazy), new PagemapRun(0x9000, 1, PagemapFlags.Lazy), new PagemapRun(0x20000, 1, PagemapFlags.Present)], cut.Runs);
        Assert.Equal(map.Runs, map.Without(0x40000, 0x50000).Runs);
    }

    [Fact]
    public void WriteThenRead_RoundTripsPagesIdRunsAndFlags()
    {
        using var ms = new MemoryStream();
        s_sample.Write(ms);
        ms.Position = 0;

        var read = PagemapImage.Read(ms, What);

        Assert.Equal(5u, read.PagesId);
        Assert.Equal(s_sample.Runs, read.Runs);
        Assert.Equal(ms.Length, ms.Position);
    }

    [Fact]
    public void Write_ProducesHeaderThenHeadThenOneEntryPerRun()
    {
        using var ms = new MemoryStream();
        s_sample.Write(ms);
        var bytes = ms.ToArray();

        Assert.Equal(s_header, bytes[..8]);
        // PagemapHead { pages_id = 5 }: length 2 (LE u32), then tag 0x08, varint 5.
        Assert.Equal(new byte[] { 0x02, 0x00, 0x00, 0x00, 0x08, 0x05 }, bytes[8..14]);

        using var rest = new MemoryStream(bytes[14..]);
        var entries = new List<PagemapEntry>();
        while (ImageFile.TryReadEntry(rest, PagemapEntry.Parser, What, out var e))
        {
            entries.Add(e);
        }

        Assert.Equal(4, entries.Count);
        Assert.All(entries, e => Assert.True(e.HasNrPages && e.HasFlags));
        Assert.Equal(0x7f0000000000ul, entries[2].Vaddr);
        Assert.Equal(1ul, entries[2].NrPages);
        Assert.Equal((uint)(PagemapFlags.Lazy | PagemapFlags.Present), entries[2].Flags);
    }

    [Fact]
    public void Read_EntryWithOnlyCompatNrPages_UsesCompatNrPages()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, CompatNrPages = 7, Flags = (uint)PagemapFlags.Present });

        var image = PagemapImage.Read(new MemoryStream(bytes), What);

        Assert.Equal(new PagemapRun(0x10000, 7, PagemapFlags.Present), Assert.Single(image.Runs));
    }

    [Fact]
    public void Read_EntryWithBothCounts_PrefersNrPages()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, CompatNrPages = 7, NrPages = 9, Flags = (uint)PagemapFlags.Present });

        var image = PagemapImage.Read(new MemoryStream(bytes), What);

        Assert.Equal(9ul, Assert.Single(image.Runs).NrPages);
    }

    [Fact]
    public void Read_EntryWithInParentAndNoFlags_IsParent()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, NrPages = 2, InParent = true });

        var image = PagemapImage.Read(new MemoryStream(bytes), What);

        Assert.Equal(PagemapFlags.Parent, Assert.Single(image.Runs).Flags);
    }

    [Fact]
    public void Read_EntryWithNeitherFlagsNorInParent_IsPresent()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, NrPages = 2 });

        var image = PagemapImage.Read(new MemoryStream(bytes), What);

        Assert.Equal(PagemapFlags.Present, Assert.Single(image.Runs).Flags);
    }

    [Fact]
    public void Read_ExplicitFlagsWinOverInParent()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, NrPages = 2, InParent = true, Flags = (uint)PagemapFlags.Lazy });

        var image = PagemapImage.Read(new MemoryStream(bytes), What);

        Assert.Equal(PagemapFlags.Lazy, Assert.Single(image.Runs).Flags);
    }

    [Fact]
    public void Read_HeadOnly_HasNoRuns()
    {
        var image = PagemapImage.Read(new MemoryStream(Image()), What);

        Assert.Equal(5u, image.PagesId);
        Assert.Empty(image.Runs);
    }

    [Fact]
    public void Read_NoHead_Throws()
    {
        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(s_header), What));

        Assert.Contains("no pagemap head", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_WrongTypeMagic_Throws()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, NrPages = 1 });
        bytes[4] ^= 0xff;

        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes), What));

        Assert.Contains("image magic", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_UnalignedVaddr_Throws()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10008, NrPages = 1 });

        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes), What));

        Assert.Contains(What, ex.Message, StringComparison.Ordinal);
        Assert.Contains("0x10008 is not page aligned", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_ZeroPages_Throws()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, NrPages = 0 });

        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes), What));

        Assert.Contains("0x10000 + 0 pages", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_NeitherCountPresent_IsZeroPagesAndThrows()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, Flags = (uint)PagemapFlags.Present });

        Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes), What));
    }

    [Theory]
    [InlineData(PagemapImage.MaxUserAddress - Page, 2ul)]                  // ends one page past the limit
    [InlineData(PagemapImage.MaxUserAddress, 1ul)]                         // starts at the limit
    [InlineData(0x10000ul, PagemapImage.MaxUserAddress / Page)]            // fits alone, not from 0x10000
    [InlineData(0x10000ul, (ulong.MaxValue / Page) + 2)]                   // nr * PageSize would wrap to 4096
    [InlineData(0xfffffffffffff000ul, 1ul)]                                // vaddr + size would wrap to 0
    public void Read_RunOutsideUserAddressSpace_Throws(ulong vaddr, ulong nr)
    {
        var bytes = Image(new PagemapEntry { Vaddr = vaddr, NrPages = nr });

        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes), What));

        Assert.Contains("outside the user address space", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_RunEndingExactlyAtMaxUserAddress_IsAccepted()
    {
        var bytes = Image(new PagemapEntry { Vaddr = PagemapImage.MaxUserAddress - (2 * Page), NrPages = 2 });

        var image = PagemapImage.Read(new MemoryStream(bytes), What);

        Assert.Equal(2ul, Assert.Single(image.Runs).NrPages);
    }

    [Fact]
    public void Read_AdjacentRuns_AreAccepted()
    {
        var bytes = Image(
            new PagemapEntry { Vaddr = 0x10000, NrPages = 2 },
            new PagemapEntry { Vaddr = 0x12000, NrPages = 1 });

        var image = PagemapImage.Read(new MemoryStream(bytes), What);

        Assert.Equal(2, image.Runs.Count);
    }

    [Fact]
    public void Read_OverlappingRuns_Throw()
    {
        var bytes = Image(
            new PagemapEntry { Vaddr = 0x10000, NrPages = 2 },
            new PagemapEntry { Vaddr = 0x11000, NrPages = 1 });

        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes), What));

        Assert.Contains("run 0x11000 overlaps or precedes", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_UnsortedRuns_Throw()
    {
        var bytes = Image(
            new PagemapEntry { Vaddr = 0x20000, NrPages = 1 },
            new PagemapEntry { Vaddr = 0x10000, NrPages = 1 });

        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes), What));

        Assert.Contains("run 0x10000 overlaps or precedes", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_DuplicateRun_Throws()
    {
        var e = new PagemapEntry { Vaddr = 0x10000, NrPages = 1 };

        Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(Image(e, e)), What));
    }

    [Fact]
    public void Read_TruncatedLastEntry_Throws()
    {
        var bytes = Image(new PagemapEntry { Vaddr = 0x10000, NrPages = 1 }, new PagemapEntry { Vaddr = 0x20000, NrPages = 1 });

        var ex = Assert.Throws<InvalidDataException>(() => PagemapImage.Read(new MemoryStream(bytes[..^1]), What));

        Assert.Contains("truncated entry", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void PresentPages_SumsOnlyRunsWithThePresentFlag()
    {
        // Present 3 + (Lazy|Present) 1; the Parent 16 and Lazy 256 pages are not in this image's pages file.
        Assert.Equal(4ul, s_sample.PresentPages);
    }

    [Fact]
    public void PresentPages_NoRuns_IsZero()
    {
        Assert.Equal(0ul, new PagemapImage(1, []).PresentPages);
    }

    /// <summary>A pagemap image built by hand: header, head with pages_id 5, then the entries.</summary>
    private static byte[] Image(params PagemapEntry[] entries) =>
        Concat([s_header, Entry(new PagemapHead { PagesId = 5 }), .. entries.Select(e => Entry(e))]);
}

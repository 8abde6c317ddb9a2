using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Xunit;
using static Migration.PageServer.Tests.Store.PageData;

namespace Migration.PageServer.Tests.Store;

public sealed class PageStoreTests : IDisposable
{
    private const ulong Base = 0x7f0000000000;
    private static readonly CancellationToken None = CancellationToken.None;

    private readonly TempDirectory _tmp = new("pagestore");

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task ReadPages_AllWritten_CopiesEveryPage()
    {
        using var store = NewStore();
        await store.Write(Pid1, Base, 10, version: 1);
        await store.CompleteRoundAsync(None);

        var dest = new byte[10 * Page];
        Assert.Equal(10, store.ReadPages(Pid1, Base, 10, dest));
        AssertPages(dest, Base, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1);
    }

    [Fact]
    public async Task ReadPages_StopsAtFirstPageNotPresent()
    {
        using var store = NewStore();
        await store.Write(Pid1, Base, 3, version: 1);
        await store.Mark(Pid1, Base + (3 * Page), 1, PagemapFlags.Lazy);
        await store.Write(Pid1, Base + (4 * Page), 2, version: 1);
        await store.Mark(Pid1, Base + (6 * Page), 1, PagemapFlags.Parent);
        await store.Write(Pid1, Base + (7 * Page), 1, version: 1);

        var dest = new byte[8 * Page];
        Assert.Equal(3, store.ReadPages(Pid1, Base, 8, dest));
        AssertPages(dest.AsSpan(0, 3 * Page), Base, 1, 1, 1);
        Assert.Equal(0, store.ReadPages(Pid1, Base + (3 * Page), 5, dest));
        Assert.Equal(2, store.ReadPages(Pid1, Base + (4 * Page), 4, dest));
        Assert.Equal(0, store.ReadPages(Pid1, Base + (6 * Page), 2, dest));
        Assert.Equal(1, store.ReadPages(Pid1, Base + (7 * Page), 1, dest));
        Assert.Equal(1, store.ReadPages(Pid1, Base + (7 * Page), 8, dest)); // hole after the last page
    }

    [Fact]
    public async Task ReadPages_NothingHeld_ReturnsZero()
    {
        using var store = NewStore();
        await store.Write(Pid1, Base, 2, version: 1);
        var dest = new byte[4 * Page];

        Assert.Equal(0, store.ReadPages(Pid42, Base, 2, dest)); // unknown target
        Assert.Equal(0, store.ReadPages(Pid1, Base - Page, 2, dest)); // first page absent
        Assert.Equal(0, store.ReadPages(Pid1, Base + 1, 1, dest)); // not page aligned
        Assert.Equal(0, store.ReadPages(Pid1, PageFacts.MaxUserAddress, 1, dest)); // not a user address
        Assert.Equal(0, store.ReadPages(Pid1, Base, 0, dest));
        Assert.Throws<ArgumentException>(() => store.ReadPages(Pid1, Base, 5, dest));
        Assert.Throws<ArgumentOutOfRangeException>(() => store.ReadPages(Pid1, Base, -1, dest));
    }

    [Fact]
    public async Task ReadPages_SeesPagesStillInTheWriteBuffer()
    {
        using var store = NewStore();
        await store.Write(Pid1, Base, 4, version: 1); // 16 KiB: stays in the 1 MiB write buffer

        var dest = new byte[4 * Page];
        Assert.Equal(4, store.ReadPages(Pid1, Base, 4, dest));
        AssertPages(dest, Base, 1, 1, 1, 1);
    }

    [Fact]
    public async Task NewestCopyWins_AcrossRounds()
    {
        using var store = NewStore();
        await store.OpenAsync(Pid1, None);
        await store.Write(Pid1, Base, 100, version: 1);
        await store.CompleteRoundAsync(None);

        await store.Write(Pid1, Base + (10 * Page), 10, version: 2);
        await store.Write(Pid1, Base + (95 * Page), 10, version: 2); // 5 overwritten, 5 new
        await store.CompleteRoundAsync(None);

        await store.Write(Pid1, Base + (15 * Page), 1, version: 3);
        await store.Write(Pid1, Base, 1, version: 3);
        await store.CompleteRoundAsync(None);

        var dest = new byte[105 * Page];
        Assert.Equal(105, store.ReadPages(Pid1, Base, 105, dest));
        for (int i = 0; i < 105; i++)
        {
            int expected = i is 0 or 15 ? 3 : i is (>= 10 and < 20) or >= 95 ? 2 : 1;
            AssertPages(dest.AsSpan(i * Page, Page), Base + ((ulong)i * Page), expected);
        }

        var stats = store.Stats;
        Assert.Equal(3, stats.CompletedRounds);
        Assert.Equal(122, stats.PagesReceived);
        Assert.Equal(17, stats.PagesOverwritten); // 10 + 5 + 2
        // Newer copies of pages held in the ascending prefix are written in place; only the run at 95 (half new) is appended.
        Assert.Equal(110L * Page, stats.BytesStored);
        Assert.Equal(105, stats.LivePages);
    }

    [Fact]
    public async Task LazyOrParentMark_ReplacesPresentCopy_AndPresentReplacesMark()
    {
        using var store = NewStore();
        await store.Write(Pid1, Base, 4, version: 1);
        await store.Mark(Pid1, Base + Page, 1, PagemapFlags.Lazy);
        await store.Mark(Pid1, Base + (2 * Page), 1, PagemapFlags.Parent);
        var dest = new byte[4 * Page];

        Assert.Equal(1, store.ReadPages(Pid1, Base, 4, dest));
        Assert.Equal(2, store.Stats.LivePages);

        await store.Write(Pid1, Base + Page, 2, version: 2);

        Assert.Equal(4, store.ReadPages(Pid1, Base, 4, dest));
        AssertPages(dest, Base, 1, 2, 2, 1);
        Assert.Equal(4, store.Stats.LivePages);
        Assert.Equal(4, store.Stats.PagesOverwritten);
    }

    [Fact]
    public async Task PresentAndLazyFlags_StorePagesAsPresent()
    {
        using var store = NewStore();
        await store.WritePagesAsync(Pid1, Base, 2, PagemapFlags.Present | PagemapFlags.Lazy, new ReadOnlySequence<byte>(Make(Base, 2, 1)), None);

        var dest = new byte[2 * Page];
        Assert.Equal(2, store.ReadPages(Pid1, Base, 2, dest));
        AssertPages(dest, Base, 1, 1);
    }

    [Theory]
    [InlineData(4096)] // pipe-sized segments, copied through the write buffer
    [InlineData(1000)] // segments not page aligned
    [InlineData(1 << 20)] // one block as large as the buffer: written directly
    public async Task SegmentedInput_InterleavedTargets_ReadsBackExactly(int segmentBytes)
    {
        using var store = NewStore(new PageStoreOptions { WriteBufferBytes = 64 * Page });
        for (int chunk = 0; chunk < 6; chunk++)
        {
            foreach (var target in new[] { Pid1, Pid42, Shm7 })
            {
                ulong va = Base + ((ulong)chunk * 256 * Page);
                int version = (int)target.Id + chunk;
                await store.WritePagesAsync(target, va, 256, PagemapFlags.Present, Segmented(Make(va, 256, version), segmentBytes), None);
            }
        }

        await store.CompleteRoundAsync(None);

        var dest = new byte[256 * Page];
        foreach (var target in new[] { Pid1, Pid42, Shm7 })
        {
            for (int chunk = 0; chunk < 6; chunk++)
            {
                ulong va = Base + ((ulong)chunk * 256 * Page);
                Assert.Equal(256, store.ReadPages(target, va, 256, dest));
                AssertPages(dest, va, Enumerable.Repeat((int)target.Id + chunk, 256).ToArray());
            }
        }
    }

    [Fact]
    public async Task CompleteRound_DataOnDiskBeforeItReturns()
    {
        using var store = NewStore();
        await store.Write(Pid1, Base, 3, version: 1);
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        Assert.Equal(0, new FileInfo(data).Length); // still in the write buffer

        await store.CompleteRoundAsync(None);
        Assert.Equal(3L * Page, new FileInfo(data).Length);
        Assert.Equal(1, store.Stats.CompletedRounds);

        await store.Write(Pid1, Base + (3 * Page), 2, version: 1);
        await store.CompleteRoundAsync(None);
        Assert.Equal(5L * Page, new FileInfo(data).Length);
        Assert.Equal(2, store.Stats.CompletedRounds);

        var onDisk = File.ReadAllBytes(data);
        AssertPages(onDisk, Base, 1, 1, 1, 1, 1);
    }

    [Theory]
    [InlineData(100 * Page)] // one block
    [InlineData(4096)] // pipe-sized segments: one gathering write of many pieces
    public async Task LargeRun_IsWrittenWithTheBufferedPagesBeforeIt_InOneWrite(int segmentBytes)
    {
        using var store = NewStore();
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        await store.Write(Pid1, Base, 3, version: 1);
        Assert.Equal(0, new FileInfo(data).Length); // small: gathered in the write buffer

        // 100 pages (400 KiB) is past DataFileWriter.DirectWriteBytes: written at once, from where it is, after the 3 buffered pages.
        Assert.True(100 * Page >= DataFileWriter.DirectWriteBytes);
        ulong va = Base + (3 * Page);
        await store.WritePagesAsync(Pid1, va, 100, PagemapFlags.Present, Segmented(Make(va, 100, 2), segmentBytes), None);
        Assert.Equal(103L * Page, new FileInfo(data).Length);

        await store.Write(Pid1, Base + (103 * Page), 2, version: 3);
        Assert.Equal(103L * Page, new FileInfo(data).Length);
        await store.CompleteRoundAsync(None);

        int[] versions = [.. Enumerable.Repeat(1, 3), .. Enumerable.Repeat(2, 100), 3, 3];
        AssertPages(File.ReadAllBytes(data), Base, versions);
        var dest = new byte[105 * Page];
        Assert.Equal(105, store.ReadPages(Pid1, Base, 105, dest));
        AssertPages(dest, Base, versions);
    }

    [Fact]
    public async Task LongZeroStretchesOfALargeRun_AreHolesInTheDataFile_AndReadBackAsZeros()
    {
        using var store = NewStore();
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        await store.Write(Pid1, Base, 3, version: 1); // buffered; the run starts with a hole, so they are written alone

        // 120 pages: zero stretches at the start, one page in three (too short to skip: written), in the middle, and at the end.
        Assert.Equal(16, DataFileWriter.MinHolePages);
        ulong va = Base + (3 * Page);
        var run = Make(va, 120, 2);
        int[] holes = [.. Enumerable.Range(0, 20), .. Enumerable.Range(60, 30), .. Enumerable.Range(100, 20)];
        foreach (int i in holes.Concat(Enumerable.Range(20, 30).Where(i => i % 3 == 0)))
        {
            Array.Clear(run, i * Page, Page);
        }

        await store.WritePagesAsync(Pid1, va, 120, PagemapFlags.Present, new ReadOnlySequence<byte>(run), None);
        Assert.Equal(123L * Page, new FileInfo(data).Length); // extended over the trailing hole
        await store.Write(Pid1, Base + (123 * Page), 2, version: 3); // after a hole: still at the right offset
        await store.CompleteRoundAsync(None);

        var expected = new byte[125 * Page];
        Make(Base, 3, 1).CopyTo(expected, 0);
        run.CopyTo(expected, 3 * Page);
        Make(Base + (123 * Page), 2, 3).CopyTo(expected, 123 * Page);
        Assert.Equal(expected, File.ReadAllBytes(data));
        var dest = new byte[125 * Page];
        Assert.Equal(125, store.ReadPages(Pid1, Base, 125, dest));
        Assert.Equal(expected, dest);

        // The data file is still a pages image to move into place: its length matches the pages it holds.
        string images = _tmp.Sub($"images-{Guid.NewGuid():N}");
        Assert.True(Assert.Single(store.WriteImages(images)).Moved);
        var (pagemap, pages) = ReadImages(images, Pid1);
        Assert.Equal(new[] { new PagemapRun(Base, 125, PagemapFlags.Present) }, pagemap.Runs);
        Assert.Equal(expected, pages);

        // The holes took no disk (nor does space preallocated past the end, given back when the image is made).
        long allocated = AllocatedBytes(Path.Combine(images, $"pages-{pagemap.PagesId}.img"));
        Assert.True(allocated <= (125L - holes.Length + 8) * Page, $"{allocated} bytes allocated for {125 - holes.Length} pages outside holes");
    }

    [Fact]
    public async Task ShortZeroStretches_AreWritten()
    {
        using var store = NewStore();
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        var run = Make(Base, 100, 1);
        foreach (int i in Enumerable.Range(0, 100).Where(i => (i % 3 == 0 && i < 80) || i >= 100 - (DataFileWriter.MinHolePages - 1)))
        {
            Array.Clear(run, i * Page, Page);
        }

        await store.WritePagesAsync(Pid1, Base, 100, PagemapFlags.Present, new ReadOnlySequence<byte>(run), None);
        await store.CompleteRoundAsync(None);

        Assert.True(AllocatedBytes(data) >= 100L * Page, $"{AllocatedBytes(data)} bytes allocated: short zero stretches were left as holes");
        Assert.Equal(run, File.ReadAllBytes(data));
    }

    [Fact]
    public async Task AllZeroRun_WritesNothing_ButKeepsItsPlace()
    {
        using var store = NewStore();
        string data = Path.Combine(store.DataDirectory, "pid-1.data");
        await store.WritePagesAsync(Pid1, Base, 100, PagemapFlags.Present, new ReadOnlySequence<byte>(new byte[100 * Page]), None);
        await store.Write(Pid1, Base + (100 * Page), 1, version: 1);
        await store.CompleteRoundAsync(None);

        Assert.Equal(101L * Page, new FileInfo(data).Length);
        var dest = new byte[101 * Page];
        Assert.Equal(101, store.ReadPages(Pid1, Base, 101, dest));
        Assert.True(dest.AsSpan(0, 100 * Page).IndexOfAnyExcept((byte)0) < 0);
        AssertPages(dest.AsSpan(100 * Page), Base + (100 * Page), 1);
    }

    /// <summary>Bytes the file system allocated for <paramref name="path"/> (st_blocks, in 512-byte units).</summary>
    [Fact]
    public async Task MaxBytes_RefusesTheRunAndKeepsWhatWasThere()
    {
        using var store = NewStore(new PageStoreOptions { MaxBytes = 10L * Page });
        await store.Write(Pid1, Base, 8, version: 1);
        await store.Mark(Pid1, Base + (8 * Page), 100, PagemapFlags.Lazy); // marks take no data bytes

        var ex = await Assert.ThrowsAsync<PageStoreFullException>(() => store.Write(Pid1, Base + (200 * Page), 3, version: 1).AsTask());
        Assert.Equal(PageStoreLimit.Bytes, ex.Limit);
        Assert.Equal(11L * Page, ex.Requested);
        Assert.Equal(10L * Page, ex.Maximum);
        Assert.Contains("MaxBytes", ex.Message, StringComparison.Ordinal);

        var dest = new byte[3 * Page];
        Assert.Equal(0, store.ReadPages(Pid1, Base + (200 * Page), 3, dest));
        Assert.Equal(8L * Page, store.Stats.BytesStored);
        Assert.Equal(108, store.Stats.PagesReceived);

        await store.Write(Pid1, Base + (300 * Page), 2, version: 2); // new pages exactly up to the limit still fit
        await store.CompleteRoundAsync(None);
        Assert.Equal(10L * Page, new FileInfo(Path.Combine(store.DataDirectory, "pid-1.data")).Length);
    }

    [Fact]
    public async Task MaxTargets_RefusesANewTargetWithoutCreatingItsFile()
    {
        using var store = NewStore(new PageStoreOptions { MaxTargets = 2 });
        await store.OpenAsync(Pid1, None);
        await store.Write(Pid42, Base, 1, version: 1);

        var ex = await Assert.ThrowsAsync<PageStoreFullException>(() => store.Write(Shm7, Base, 1, version: 1).AsTask());
        Assert.Equal(PageStoreLimit.Targets, ex.Limit);
        Assert.Equal(Shm7, ex.Target);
        await Assert.ThrowsAsync<PageStoreFullException>(() => store.OpenAsync(Shm7, None).AsTask());

        Assert.False(File.Exists(Path.Combine(store.DataDirectory, "shmem-7.data")));
        Assert.Equal(2, store.Stats.Targets);
        await store.Write(Pid1, Base, 1, version: 1); // known targets still take pages
    }

    [Fact]
    public async Task MaxPagesPerTarget_CountsDistinctAddresses()
    {
        using var store = NewStore(new PageStoreOptions { MaxPagesPerTarget = 10 });
        await store.Write(Pid1, Base, 8, version: 1);
        await store.Write(Pid1, Base, 8, version: 2); // overwrites: still 8 addresses

        var ex = await Assert.ThrowsAsync<PageStoreFullException>(() => store.Mark(Pid1, Base + (4 * Page), 7, PagemapFlags.Lazy).AsTask());
        Assert.Equal(PageStoreLimit.PagesPerTarget, ex.Limit);
        Assert.Equal(11, ex.Requested);
        await Assert.ThrowsAsync<PageStoreFullException>(() => store.Mark(Pid42, Base, 11, PagemapFlags.Parent).AsTask());

        var dest = new byte[8 * Page];
        Assert.Equal(8, store.ReadPages(Pid1, Base, 8, dest)); // the refused lazy run replaced nothing
        AssertPages(dest, Base, 2, 2, 2, 2, 2, 2, 2, 2);
        await store.Write(Pid1, Base + (4 * Page), 6, version: 3); // 2 new addresses: exactly 10
        Assert.Equal(10, store.Stats.LivePages);
    }

    [Fact]
    public async Task MaxIndexBytes_BoundsWhatSparsePagesCost()
    {
        const ulong Chunk = PageIndex.ChunkPages * (ulong)Page;
        using var store = NewStore(new PageStoreOptions { MaxIndexBytes = 3 * PageIndex.ChunkBytes });
        await store.Mark(Pid1, Base, 1, PagemapFlags.Lazy);
        await store.Mark(Pid1, Base + Chunk, 1, PagemapFlags.Lazy);
        await store.Write(Pid42, Base, 1, version: 1);

        var ex = await Assert.ThrowsAsync<PageStoreFullException>(() => store.Mark(Pid1, Base + (5 * Chunk), 1, PagemapFlags.Lazy).AsTask());
        Assert.Equal(PageStoreLimit.IndexBytes, ex.Limit);
        Assert.Equal(4L * PageIndex.ChunkBytes, ex.Requested);
        await Assert.ThrowsAsync<PageStoreFullException>(() => store.Mark(Shm7, Base, 1, PagemapFlags.Lazy).AsTask());
        await Assert.ThrowsAsync<PageStoreFullException>(() => store.Write(Pid42, Base + Chunk - Page, 2, version: 1).AsTask()); // straddles into a new chunk

        await store.Write(Pid1, Base + Page, PageIndex.ChunkPages - 1, version: 1); // dense in the chunks it has: fine
        await store.Write(Pid42, Base + Page, PageIndex.ChunkPages - 1, version: 1);
        Assert.Equal(2 * PageIndex.ChunkPages, store.Stats.LivePages + 1); // + the lazy page at Base + Chunk
    }

    [Theory]
    [InlineData(Base + 1, 1u, PagemapFlags.Present)] // unaligned
    [InlineData(Base, 0u, PagemapFlags.Present)] // empty
    [InlineData(PageFacts.MaxUserAddress, 1u, PagemapFlags.Lazy)] // outside user space
    [InlineData(Base, 1u, PagemapFlags.None)]
    [InlineData(Base, 1u, PagemapFlags.Lazy | PagemapFlags.Parent)]
    [InlineData(Base, 1u, (PagemapFlags)8)]
    public async Task MalformedRun_IsRefusedAndChangesNothing(ulong vaddr, uint nrPages, PagemapFlags flags)
    {
        using var store = NewStore();
        var data = flags.HasFlag(PagemapFlags.Present) ? new ReadOnlySequence<byte>(new byte[nrPages * Page]) : ReadOnlySequence<byte>.Empty;

        await Assert.ThrowsAnyAsync<ArgumentException>(() => store.WritePagesAsync(Pid1, vaddr, nrPages, flags, data, None).AsTask());
        Assert.Equal(default, store.Stats);
    }

    [Fact]
    public async Task DataLengthNotMatchingTheRun_IsRefused()
    {
        using var store = NewStore();
        await Assert.ThrowsAsync<ArgumentException>(() => store.WritePagesAsync(Pid1, Base, 2, PagemapFlags.Present, new ReadOnlySequence<byte>(new byte[Page]), None).AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => store.WritePagesAsync(Pid1, Base, 1, PagemapFlags.Lazy, new ReadOnlySequence<byte>(new byte[Page]), None).AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => store.OpenAsync(new PageTarget(0, PageImageType.Pid), None).AsTask());
        Assert.Equal(default, store.Stats);
    }

    [Fact]
    public async Task OpenAsync_ReportsNoParent_AndIsIdempotent()
    {
        using var store = NewStore();
        Assert.False(await store.OpenAsync(Pid1, None));
        Assert.False(await store.OpenAsync(Pid1, None));
        Assert.Equal(1, store.Stats.Targets);
        Assert.True(File.Exists(Path.Combine(store.DataDirectory, "pid-1.data")));
    }

    [Fact]
    public async Task Dispose_DeletesDataFilesOnly()
    {
        string dir = _tmp.Sub("store");
        string other = Path.Combine(dir, "not-ours");
        await File.WriteAllTextAsync(other, "x");
        var store = new PageStore(dir);
        await store.Write(Pid1, Base, 1, version: 1);
        await store.Write(Shm7, Base, 1, version: 1);
        await store.CompleteRoundAsync(None);
        Assert.Equal(3, Directory.GetFiles(dir).Length);

        store.Dispose();
        store.Dispose();

        Assert.Equal(new[] { other }, Directory.GetFiles(dir));
        Assert.Throws<ObjectDisposedException>(() => store.ReadPages(Pid1, Base, 1, new byte[Page]));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => store.Write(Pid1, Base, 1, version: 1).AsTask());
    }

    [Fact]
    public async Task OpenAsync_RefusesALeftOverDataFile()
    {
        string dir = _tmp.Sub("store");
        await File.WriteAllTextAsync(Path.Combine(dir, "pid-1.data"), "left over");
        using var store = new PageStore(dir);

        await Assert.ThrowsAsync<IOException>(() => store.OpenAsync(Pid1, None).AsTask());
        Assert.Equal("left over", await File.ReadAllTextAsync(Path.Combine(dir, "pid-1.data")));
    }

    [Fact]
    public async Task ConcurrentReads_WhileARoundIsWritten_SeeWholePages()
    {
        using var store = NewStore(new PageStoreOptions { WriteBufferBytes = 16 * Page });
        await store.Write(Pid1, Base, 512, version: 1);
        await store.CompleteRoundAsync(None);

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var readers = Enumerable.Range(0, 4).Select(r => Task.Run(() =>
        {
            var dest = new byte[8 * Page];
            var rng = new Random(r);
            for (int i = 0; i < 2000; i++)
            {
                int first = rng.Next(0, 504);
                ulong va = Base + ((ulong)first * Page);
                Assert.Equal(8, store.ReadPages(Pid1, va, 8, dest));
                for (int p = 0; p < 8; p++)
                {
                    var page = dest.AsSpan(p * Page, Page);
                    int version = BitConverter.ToInt32(page[8..12]);
                    AssertPages(page, va + ((ulong)p * Page), version);
                }
            }
        }, cts.Token)).ToArray();

        for (int round = 2; round < 6; round++)
        {
            for (int i = 0; i < 512; i += 7)
            {
                await store.Write(Pid1, Base + ((ulong)i * Page), 3, version: round);
            }

            await store.CompleteRoundAsync(None);
        }

        await Task.WhenAll(readers).WaitAsync(cts.Token);
    }

    [Fact]
    public void Options_Validate_NamesTheBadOption()
    {
        Assert.Contains("MaxBytes", Assert.Throws<ArgumentException>(() => new PageStoreOptions { MaxBytes = -1 }.Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("MaxTargets", Assert.Throws<ArgumentException>(() => new PageStoreOptions { MaxTargets = 0 }.Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("MaxPagesPerTarget", Assert.Throws<ArgumentException>(() => new PageStoreOptions { MaxPagesPerTarget = 0 }.Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("MaxIndexBytes", Assert.Throws<ArgumentException>(() => new PageStoreOptions { MaxIndexBytes = -1 }.Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("WriteBufferBytes", Assert.Throws<ArgumentException>(() => new PageStoreOptions { WriteBufferBytes = 100 }.Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("CopyBufferBytes", Assert.Throws<ArgumentException>(() => new PageStoreOptions { CopyBufferBytes = 0 }.Validate()).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new PageStore(_tmp.Path, new PageStoreOptions { MaxTargets = 0 }));
    }

    [Fact]
    public void ForFreeSpace_LeavesTheReserve()
    {
        long free = new DriveInfo(_tmp.Path).AvailableFreeSpace;
        var options = PageStoreOptions.ForFreeSpace(_tmp.Path, 1L << 20);

        Assert.InRange(options.MaxBytes, 0, Math.Max(0, free - (1L << 20)) + (64L << 20)); // free space moves a little meanwhile
        Assert.Equal(0, PageStoreOptions.ForFreeSpace(_tmp.Path, long.MaxValue).MaxBytes);
    }

    private PageStore NewStore(PageStoreOptions? options = null) => new(_tmp.Sub($"store-{Guid.NewGuid():N}"), options);
}

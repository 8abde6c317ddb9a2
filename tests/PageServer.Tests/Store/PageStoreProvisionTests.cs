using System.Buffers;
using System.Diagnostics;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Xunit;
using static Migration.PageServer.Tests.Store.PageData;

namespace Migration.PageServer.Tests.Store;

/// <summary>
/// Room made for a target's pages before they come (<see cref="PageStore.Provision"/>), on a real store and real files:
/// a provisioned target ends up with exactly the data files, reads and images a plain one gets, and room nobody took
/// leaves nothing behind.
/// </summary>
public sealed class PageStoreProvisionTests : IDisposable
{
    private const ulong Base = 0x7f0000000000;
    private static readonly CancellationToken None = CancellationToken.None;

    private readonly TempDirectory _tmp = new("provision");

    public void Dispose() => _tmp.Dispose();

    private static long NoDeadline => long.MaxValue;

    /// <summary>Room for fewer pages than come, for as many, and for more (the usual over-estimate).</summary>
    public static TheoryData<int> ProvisionedPages => [40, 300, 2000];

    [Theory]
    [MemberData(nameof(ProvisionedPages))]
    public async Task ProvisionedTarget_EndsUpWithWhatAPlainStoreHolds(int provisionedPages)
    {
        using var plain = NewStore();
        using var provisioned = NewStore();
        Assert.Equal((long)provisionedPages * Page, provisioned.Provision(Pid1, (long)provisionedPages * Page, NoDeadline));
        string data = Path.Combine(provisioned.DataDirectory, "pid-1.data");
        Assert.Equal((long)provisionedPages * Page, new FileInfo(data).Length);

        // Small runs through the buffer, a packed run with a long zero stretch (a hole), a plain run, a run ending in a hole.
        var packed = Make(Base + (10 * Page), 120, 2);
        Array.Clear(packed, 30 * Page, 40 * Page);
        var tail = Make(Base + (200 * Page), 64, 3);
        Array.Clear(tail, 32 * Page, 32 * Page);
        foreach (var store in new[] { plain, provisioned })
        {
            await store.OpenAsync(Pid1, None);
            await store.Write(Pid1, Base, 3, version: 1);
            await store.Write(Pid1, Base + (5 * Page), 2, version: 1);
            await store.WritePackedPagesAsync(Pid1, Base + (10 * Page), PagemapFlags.Present, Pack(packed), None);
            await store.Write(Pid1, Base + (130 * Page), 70, version: 2);
            await store.WritePackedPagesAsync(Pid1, Base + (200 * Page), PagemapFlags.Present, Pack(tail), None);
            await store.CompleteRoundAsync(None);
        }

        Assert.Equal(1, provisioned.Stats.Targets);
        const int Pages = 3 + 2 + 120 + 70 + 64;
        var expected = new byte[Pages * Page];
        var actual = new byte[Pages * Page];
        Assert.Equal(3, plain.ReadPages(Pid1, Base, 3, expected));
        Assert.Equal(3, provisioned.ReadPages(Pid1, Base, 3, actual));
        Assert.Equal(expected.AsSpan(0, 3 * Page).ToArray(), actual.AsSpan(0, 3 * Page).ToArray());
        Assert.Equal(254, plain.ReadPages(Pid1, Base + (10 * Page), 254, expected));
        Assert.Equal(254, provisioned.ReadPages(Pid1, Base + (10 * Page), 254, actual));
        Assert.Equal(expected.AsSpan(0, 254 * Page).ToArray(), actual.AsSpan(0, 254 * Page).ToArray());
        Assert.Equal(packed, actual.AsSpan(0, 120 * Page).ToArray());

        string plainImages = _tmp.Sub($"plain-{Guid.NewGuid():N}");
        string provisionedImages = _tmp.Sub($"provisioned-{Guid.NewGuid():N}");
        Assert.True(Assert.Single(plain.WriteImages(plainImages)).Moved);
        Assert.True(Assert.Single(provisioned.WriteImages(provisionedImages)).Moved); // the provisioned file is the pages image

        var (plainMap, plainPages) = ReadImages(plainImages, Pid1);
        var (map, pages) = ReadImages(provisionedImages, Pid1);
        Assert.Equal(plainMap.Runs, map.Runs);
        Assert.Equal(plainPages, pages); // same length too: the zeros no page took are cut off
        Assert.Equal(Pages * Page, pages.Length);

        // The holes are holes in the provisioned file as well (its zeros there punched out): no more disk than plain.
        string plainImage = Directory.GetFiles(plainImages, "pages-*.img").Single();
        string image = Directory.GetFiles(provisionedImages, "pages-*.img").Single();
        Assert.True(AllocatedBytes(image) <= AllocatedBytes(plainImage) + (8 * Page),
            $"provisioned: {AllocatedBytes(image)} bytes allocated, plain: {AllocatedBytes(plainImage)}");
    }

    [Fact]
    public async Task RoomNobodyTook_LeavesNoImageAndNoFile()
    {
        using (var store = NewStore())
        {
            Assert.Equal(64L * Page, store.Provision(Pid42, 64L * Page, NoDeadline));
            Assert.Equal(16L * Page, store.Provision(Shm7, 16L * Page, NoDeadline));
            await store.Write(Pid1, Base, 4, version: 1);
            await store.CompleteRoundAsync(None);
            Assert.Equal(1, store.Stats.Targets);

            string images = _tmp.Sub($"images-{Guid.NewGuid():N}");
            Assert.Equal(Pid1, Assert.Single(store.WriteImages(images)).Target);
            Assert.False(File.Exists(Path.Combine(images, Pid42.PagemapFileName)));
            Assert.Empty(DataFiles(store)); // pid-1.data moved into place as its pages image; the others deleted
        }

        using (var store = NewStore())
        {
            store.Provision(Pid42, 64L * Page, NoDeadline);
            store.Dispose();
            Assert.False(Directory.Exists(store.DataDirectory)); // emptied, then removed
        }
    }

    [Fact]
    public async Task Provision_KeepsToItsLimits()
    {
        using (var store = NewStore())
        {
            Assert.Throws<ArgumentException>(() => store.Provision(new PageTarget(0, PageImageType.Pid), Page, NoDeadline));
            Assert.Equal(0, store.Provision(Pid1, Page, Stopwatch.GetTimestamp() - 1)); // out of time before it began
            Assert.Equal(0, store.Provision(Pid1, Page - 1, NoDeadline)); // less than a page
            Assert.Empty(Directory.GetFiles(store.DataDirectory));

            Assert.Equal(2L * Page, store.Provision(Pid1, (2L * Page) + 100, NoDeadline)); // whole pages
            Assert.Equal(0, store.Provision(Pid1, 8L * Page, NoDeadline)); // once per target
            await store.Write(Pid42, Base, 1, version: 1);
            Assert.Equal(0, store.Provision(Pid42, 8L * Page, NoDeadline)); // a target already holding pages
        }

        using (var synced = new PageStore(_tmp.Sub($"synced-{Guid.NewGuid():N}"), new PageStoreOptions { SyncToDisk = true }))
        {
            Assert.Equal(0, synced.Provision(Pid1, 8L * Page, NoDeadline)); // its syncs would write the zeros to disk
            Assert.Empty(Directory.GetFiles(synced.DataDirectory));
        }

        using (var small = new PageStore(_tmp.Sub($"small-{Guid.NewGuid():N}"), new PageStoreOptions { MaxBytes = 40L * Page, MaxTargets = 2 }))
        {
            Assert.Equal(20L * Page, small.Provision(Pid1, 100L * Page, NoDeadline)); // half of MaxBytes in all
            Assert.Equal(0, small.Provision(Pid42, 100L * Page, NoDeadline));
        }

        using (var few = new PageStore(_tmp.Sub($"few-{Guid.NewGuid():N}"), new PageStoreOptions { MaxTargets = 1 }))
        {
            Assert.Equal(4L * Page, few.Provision(Pid1, 4L * Page, NoDeadline));
            Assert.Equal(0, few.Provision(Pid42, 4L * Page, NoDeadline)); // as many files as targets allowed
            await few.Write(Pid1, Base, 2, version: 1); // the provisioned target is the one target
        }
    }

    [Fact]
    public async Task Attachment_MakesRoomForTheLargestTasksFirst_WithinItsBudget()
    {
        using var attachment = new PageStoreAttachment(NewStore());
        TaskMemory[] tasks = [new(7, 512 << 10), new(1, 3 << 20), new(42, 2 << 20), new(9, 2 << 20)];
        Assert.Equal(4L << 20, attachment.Provision(tasks, 4L << 20, NoDeadline));
        Assert.Equal(["pid-1.data", "pid-42.data"], DataFiles(attachment.Store)); // 3 MiB, then the 1 MiB left to the first-named 2 MiB task
        Assert.Equal(3L << 20, new FileInfo(Path.Combine(attachment.Store.DataDirectory, "pid-1.data")).Length);
        Assert.Equal(1L << 20, new FileInfo(Path.Combine(attachment.Store.DataDirectory, "pid-42.data")).Length);

        // Pages for a provisioned task go into its file.
        await attachment.Store.Write(Pid42, Base, 8, version: 1);
        var back = new byte[8 * Page];
        Assert.Equal(8, attachment.Store.ReadPages(Pid42, Base, 8, back));
        AssertPages(back, Base, 1, 1, 1, 1, 1, 1, 1, 1);

        using var none = new PageStoreAttachment(NewStore());
        Assert.Equal(0, none.Provision([new(1, 512 << 10)], 1L << 30, NoDeadline)); // too small to pay for a file
        Assert.Equal(0, none.Provision([new(1, 8 << 20)], 0, NoDeadline));
        Assert.Empty(DataFiles(none.Store));
    }

    private static string[] DataFiles(PageStore store) =>
        [.. Directory.GetFiles(store.DataDirectory).Select(Path.GetFileName).Order(StringComparer.Ordinal)!];

    private PageStore NewStore() => new(_tmp.Sub($"store-{Guid.NewGuid():N}"));
}

using System.Diagnostics;
using Migration.Engine.Native;
using Migration.Engine.Tracking;
using Migration.Tests.Common;
using Xunit;

namespace Migration.Engine.Tests.Tracking;

/// <summary>
/// The tracker on a real process (native/bin/trackee). Page sets are asserted exactly inside the trackee's buffer;
/// pages elsewhere (its stack, libc's stdio buffer) are written by the command loop itself and not asserted.
/// </summary>
public class DirtyTrackerTests
{
    private const ulong Page = Trackee.PageSize;

    [Fact]
    public void Probe_IsConsistent()
    {
        var caps = DirtyTracker.Probe();

        Assert.Equal(caps.WriteProtectTracking, caps.Missing is null);
        Assert.Equal(caps.WriteProtectAsync, (caps.UffdFeatures & (1ul << 15)) != 0);
    }

    [RequiresRootFact]
    public void Probe_KernelOffersWriteProtectTracking()
    {
        var caps = DirtyTracker.Probe();

        Assert.True(caps.Missing is null, $"this kernel cannot track: {caps.Missing}");
    }

    [RequiresRootFact]
    public async Task Harvest_ReturnsExactlyTheWrittenPages_ThenNothing()
    {
        await using var t = await Trackee.StartAsync();
        using var tracker = DirtyTracker.Attach(t.Pid);

        AssertPages(tracker.Harvest(), t, [], "first harvest after attach");

        await t.CommandAsync("W 3 100-110 5000");
        AssertPages(tracker.Harvest(), t, [3, .. Range(100, 110), 5000], "after W 3 100-110 5000");
        AssertPages(tracker.Harvest(), t, [], "second harvest");
    }

    [RequiresRootFact]
    public async Task Harvest_MoreRangesThanOneNativeCall_AllReturned()
    {
        // 6000 separate pages: more ranges than the wrapper fetches per call (4096), and many 512-region scans.
        await using var t = await Trackee.StartAsync();
        using var tracker = DirtyTracker.Attach(t.Pid);
        tracker.Harvest();

        await t.CommandAsync("WS 0 6000 2");
        var into = new List<(ulong Start, ulong Pages)>();
        int appended = tracker.Harvest(into);

        Assert.Equal(into.Count, appended);
        AssertPages(into, t, Enumerable.Range(0, 6000).Select(i => 2ul * (ulong)i), "6000 separate pages");
    }

    [RequiresRootFact]
    public async Task Harvest_SeesWritesOfOtherThreads()
    {
        await using var t = await Trackee.StartAsync("--mode", "compute");
        using var tracker = DirtyTracker.Attach(t.Pid);
        tracker.Harvest();

        await t.CommandAsync("T 7 2000-2003");

        AssertPages(tracker.Harvest(), t, [7, .. Range(2000, 2003)], "written by the writer thread");
    }

    [RequiresRootFact]
    public async Task Attach_LeavesNoDescriptorInTask_AndDetachLeavesNoTrace()
    {
        await using var t = await Trackee.StartAsync();
        var tracker = DirtyTracker.Attach(t.Pid);

        Assert.False(t.HoldsUserfaultfd(), "the task still holds the injected userfaultfd");
        Assert.True(t.WriteProtectedVmas() > 0, "no VMA is write-protect registered");
        var stats = tracker.Statistics;
        Assert.Equal(t.Pid, stats.InjectedThread);
        Assert.True(stats.TrackedBytes >= t.Pages * Page, $"tracked {stats.TrackedBytes} bytes");
        Assert.Contains(tracker.Vmas(), v => v.State == VmaState.Tracked && v.Start <= t.Buffer && t.Buffer < v.End);

        tracker.Detach();
        tracker.Dispose();

        Assert.False(t.HoldsUserfaultfd());
        Assert.Equal(0, t.WriteProtectedVmas());
        Assert.Throws<ObjectDisposedException>(() => tracker.Harvest());
        await t.CommandAsync("W 1");
    }

    [RequiresRootFact]
    public async Task Refresh_ReportsNewMappingWhole_ThenTracksIt()
    {
        await using var t = await Trackee.StartAsync();
        using var tracker = DirtyTracker.Attach(t.Pid);
        tracker.Harvest();

        ulong mapped = Trackee.Address(await t.CommandAsync("MAP 128"));
        var fresh = tracker.Refresh();

        AssertPages(fresh, mapped, 128, Enumerable.Range(0, 128).Select(i => (ulong)i), "refresh after mmap");
        tracker.Harvest();
        await t.CommandAsync($"WA {mapped + (77 * Page):x} 1");
        AssertPages(tracker.Harvest(), mapped, 128, [77], "write into the new mapping");
    }

    [RequiresRootFact]
    public async Task Harvest_ReplacedVma_ReportedWhole_AndRefreshNeeded()
    {
        await using var t = await Trackee.StartAsync();
        using var tracker = DirtyTracker.Attach(t.Pid);
        tracker.Harvest();

        await t.CommandAsync($"MAPF {t.Buffer + (100 * Page):x} 50");
        var ranges = tracker.Harvest();

        Assert.True(tracker.RefreshNeeded);
        Assert.True(Covers(ranges, t.Buffer + (100 * Page), 50), "the replaced range was not reported");
        tracker.Refresh();
        Assert.False(tracker.RefreshNeeded);
        tracker.Harvest();
        await t.CommandAsync("W 120 5");
        AssertPages(tracker.Harvest(), t, [5, 120], "after the refresh");
    }

    [RequiresRootFact]
    public async Task AttachDetachCycles_DoNotDisturbTheTask()
    {
        // The main thread computes a known checksum (any register changed under it counts an error) while a
        // second one reads commands; then the same with the main thread blocked in read().
        await using (var t = await Trackee.StartAsync("--mode", "compute"))
        {
            await CyclesAsync(t, 20);
            Assert.Equal(0ul, await t.StatusAsync("errors"));

            // The compute thread still runs after the cycles; on a busy machine it may not have had the CPU yet.
            ulong rounds = 0;
            for (int i = 0; i < 100 && rounds == 0; i++)
            {
                rounds = await t.StatusAsync("rounds");
                if (rounds == 0)
                {
                    await Task.Delay(50);
                }
            }

            Assert.True(rounds > 0);
            Assert.Equal(0ul, await t.StatusAsync("errors"));
        }

        await using (var t = await Trackee.StartAsync("--mode", "read"))
        {
            await CyclesAsync(t, 20);
        }
    }

    [RequiresRootFact]
    public async Task Attach_StoppedProcess_RefusedWithClearMessage()
    {
        await using var t = await Trackee.StartAsync();
        Libc.kill(t.Pid, SIGSTOP);
        try
        {
            await WaitForStateAsync(t.Pid, 'T');
            var e = Assert.Throws<TrackerException>(() => DirtyTracker.Attach(t.Pid));

            Assert.Equal(16, e.Errno);
            Assert.StartsWith($"cannot attach tracker to pid {t.Pid}: process is stopped", e.Message, StringComparison.Ordinal);
            Assert.Contains("(errno 16)", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Libc.kill(t.Pid, Libc.SIGCONT);
        }

        await t.CommandAsync("W 1");
    }

    [RequiresRootFact]
    public void Attach_NoSuchProcess_Throws()
    {
        var e = Assert.Throws<TrackerException>(() => DirtyTracker.Attach(int.MaxValue - 1));

        Assert.Equal(3, e.Errno);
        Assert.Contains("(errno 3)", e.Message, StringComparison.Ordinal);
    }

    [RequiresRootFact]
    public void Attach_ChildOfThisProcess_Refused()
    {
        using var sleep = Process.Start(new ProcessStartInfo("sleep", ["30"]) { UseShellExecute = false })!;
        try
        {
            var e = Assert.Throws<TrackerException>(() => DirtyTracker.Attach(sleep.Id));

            Assert.Contains("child of this process", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            sleep.Kill();
        }
    }

    private const int SIGSTOP = 19;

    private static async Task CyclesAsync(Trackee t, int cycles)
    {
        for (int i = 0; i < cycles; i++)
        {
            using (var tracker = DirtyTracker.Attach(t.Pid))
            {
                tracker.Harvest();
            }

            await t.CommandAsync("STATUS");
        }

        Assert.False(t.HoldsUserfaultfd());
        Assert.Equal(0, t.WriteProtectedVmas());
    }

    private static async Task WaitForStateAsync(int pid, char state)
    {
        for (int i = 0; i < 200; i++)
        {
            var stat = await File.ReadAllTextAsync($"/proc/{pid}/stat");
            if (stat[stat.LastIndexOf(')') + 2] == state)
            {
                return;
            }

            await Task.Delay(10);
        }

        throw new TimeoutException($"pid {pid} did not reach state {state} within 2 s");
    }

    private static IEnumerable<ulong> Range(ulong first, ulong last)
    {
        for (ulong p = first; p <= last; p++)
        {
            yield return p;
        }
    }

    private static void AssertPages(IReadOnlyList<(ulong Start, ulong Pages)> ranges, Trackee t, IEnumerable<ulong> expected, string what) =>
        AssertPages(ranges, t.Buffer, t.Pages, expected, what);

    /// <summary>The pages of [start, start + pages * 4 KiB) that the ranges cover are exactly <paramref name="expected"/>.</summary>
    private static void AssertPages(IReadOnlyList<(ulong Start, ulong Pages)> ranges, ulong start, ulong pages, IEnumerable<ulong> expected, string what)
    {
        var seen = new SortedSet<ulong>();
        ulong end = start + (pages * Page);
        foreach (var (s, n) in ranges)
        {
            for (ulong a = Math.Max(s, start); a < Math.Min(s + (n * Page), end); a += Page)
            {
                seen.Add((a - start) / Page);
            }
        }

        var want = new SortedSet<ulong>(expected);
        var missing = want.Except(seen).Take(10).ToList();
        var extra = seen.Except(want).Take(10).ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0,
            $"{what}: missing pages [{string.Join(", ", missing)}], unexpected pages [{string.Join(", ", extra)}]");
    }

    private static bool Covers(IReadOnlyList<(ulong Start, ulong Pages)> ranges, ulong start, ulong pages)
    {
        for (ulong a = start; a < start + (pages * Page); a += Page)
        {
            if (!ranges.Any(r => r.Start <= a && a < r.Start + (r.Pages * Page)))
            {
                return false;
            }
        }

        return true;
    }
}

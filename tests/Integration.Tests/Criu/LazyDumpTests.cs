using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;

namespace Migration.Integration.Tests.Criu;

/// <summary>
/// The lazy dump the live cutover uses, against real CRIU: metadata only, the tree frozen and readable from post-dump
/// until CRIU answers, and CRIU's lazy page server ended by the CLOSE queued on its socket whatever post-dump answered.
/// </summary>
public sealed class LazyDumpTests
{
    private readonly CriuClient _criu = new(new CriuOptions(), NullLogger<CriuClient>.Instance);

    [RequiresRootFact]
    public async Task LazyDumpWritesNoAnonymousPagesAndTheTreeIsFrozenAndReadableAtPostDump()
    {
        await using var hosts = await TestHosts.CreateAsync();
        await using var workload = await Workload.StartAsync(hosts, mib: 32, writeRate: 10);
        int pid = workload.SinglePid();
        var (images, work) = Dirs(hosts);
        long lazyRuns = -1;
        PagemapImage? map = null;
        bool frozen = false;
        int readable = 0;

        await _criu.DumpAsync(new DumpSpec { Pid = pid, ImagesDir = images, WorkDir = work, LazyPages = true, LeaveRunning = true }, (script, _) =>
        {
            if (script == CriuScripts.PostDump)
            {
                using (var fs = File.OpenRead(Path.Combine(images, "pagemap-1.img")))
                {
                    map = PagemapImage.Read(fs, "pagemap-1.img");
                }

                frozen = ProcessTree.State(pid) is 't' or 'T';
                var lazy = map.Runs.Where(r => r.Flags == PagemapFlags.Lazy).ToList();
                var buffer = new byte[4096];
                foreach (var run in lazy.Take(64))
                {
                    readable += ProcessMemory.Read(pid, run.Vaddr, buffer) == 4096 ? 1 : 0;
                }

                lazyRuns = lazy.Count;
            }

            return Task.FromResult(true);
        }, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(120));

        Assert.NotNull(map);
        Assert.True(frozen, "the tree was not stopped at post-dump");
        long lazyPages = map!.Runs.Where(r => r.Flags == PagemapFlags.Lazy).Sum(r => (long)r.NrPages);
        Assert.True(lazyPages > 32 * 256 / 2, $"only {lazyPages} lazy pages for a 32 MiB workload; {Explain(map, work)}");
        // Only what cannot be lazy (the stack page in use, file-backed private pages) has data in the pages image.
        long present = (long)map.PresentPages;
        Assert.True(present < 64, $"{present} pages written to the pages image");
        Assert.Equal(present * 4096, new FileInfo(Path.Combine(images, $"pages-{map.PagesId}.img")).Length);
        Assert.True(readable > 0 && readable == Math.Min(64, lazyRuns), $"{readable} of the lazy runs' first pages were readable while frozen");

        // The dump ended by itself (nobody connected to CRIU's lazy server) and left the tree running, intact.
        var status = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", status["verify"]);
        Assert.Equal(pid, workload.SinglePid());
    }

    [RequiresRootFact]
    public async Task RefusedPostDumpResumesTheTreeAndTheLazyServerStillEnds()
    {
        await using var hosts = await TestHosts.CreateAsync();
        await using var workload = await Workload.StartAsync(hosts, mib: 16, writeRate: 10);
        int pid = workload.SinglePid();
        var (images, work) = Dirs(hosts);

        var ex = await Assert.ThrowsAsync<CriuException>(() => _criu.DumpAsync(
            new DumpSpec { Pid = pid, ImagesDir = images, WorkDir = work, LazyPages = true },
            (script, _) => Task.FromResult(script != CriuScripts.PostDump), CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(120));

        Assert.Equal("dump", ex.Operation);
        Assert.True(ProcessTree.IsAlive(pid));
        Assert.NotEqual('t', ProcessTree.State(pid));
        Assert.Equal("ok", (await workload.StatusAsync(hosts.Source))["verify"]);
    }

    /// <summary>What the pagemap held and what CRIU said it generated, for a failure message.</summary>
    private static string Explain(PagemapImage map, string work)
    {
        var byFlags = string.Join(", ", map.Runs.GroupBy(r => r.Flags).Select(g => $"{g.Key}: {g.Count()} runs/{g.Sum(r => (long)r.NrPages)} pages"));
        var log = Path.Combine(work, "dump.log");
        var generated = File.Exists(log)
            ? File.ReadLines(log).Where(l => l.Contains("Pagemap generated", StringComparison.Ordinal) || l.Contains("vma", StringComparison.OrdinalIgnoreCase) && l.Contains("lazy", StringComparison.OrdinalIgnoreCase)).Take(40)
            : ["(no dump.log)"];
        return $"pagemap runs by flags: [{byFlags}]; CRIU: {string.Join(" | ", generated)}";
    }

    private static (string Images, string Work) Dirs(TestHosts hosts)
    {
        var work = Directory.CreateDirectory(Path.Combine(hosts.Root, $"lazy-dump-{Guid.NewGuid():N}")).FullName;
        return (Directory.CreateDirectory(Path.Combine(work, "images")).FullName, work);
    }
}

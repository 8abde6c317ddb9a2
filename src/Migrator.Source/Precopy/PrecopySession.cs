using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.Engine.Tracking;

using Migration.PageServer.Transport;

namespace Migration.Source.Precopy;

/// <summary>The last round after a lazy dump: pages kept from pre-copy, read from the frozen tree, and from CRIU's images.</summary>
public sealed record FinalRound(int Tasks, long CleanPages, long MemoryPages, long ImagePages, TimeSpan Elapsed);

/// <summary>One pre-copy iteration, as the CLI shows it. <see cref="BytesPerSecond"/> counts pages with data (zero pages cross as a flag).</summary>
public sealed record PrecopyIteration(int Index, long PagesSent, long BytesOnWire, long DirtyPagesFound, TimeSpan Elapsed, double BytesPerSecond,
    int ThrottlePercent = 0);

/// <summary>
/// Iterative pre-copy of a running tree: a dirty tracker on every task, iteration 0 sends every resident page of
/// the tracked memory, each next one the pages written since (harvest, then read: a write after the harvest is
/// caught by the next one). Remembers which pages the target holds current (the clean set), so the final dump
/// need not send them again: it is the <see cref="ICutoverFilter"/>.
/// </summary>
public sealed partial class PrecopySession : ICutoverFilter, IDisposable
{
    private const int PageSize = 4096;

    /// <summary>Pages read and sent per call: one batch of the stream.</summary>
    private const int ChunkPages = 256;

    private readonly List<TrackedTask> _tasks = [];

    /// <summary>The tasks by vpid: <see cref="IsClean"/> is asked for every page of the final dump.</summary>
    private readonly Dictionary<int, TrackedTask> _byVpid = [];
    private readonly ILogger _logger;
    private readonly Lock _lock = new();

    private sealed class TrackedTask(int pid, int vpid, DirtyTracker tracker)
    {
        public int Pid { get; } = pid;
        public int Vpid { get; } = vpid;
        public DirtyTracker Tracker { get; } = tracker;
        public HashSet<ulong> Clean { get; } = [];

        /// <summary>Harvested (so the kernel re-protected them) but not yet sent: the next iteration sends them.</summary>
        public List<(ulong Start, ulong Pages)> Pending { get; } = [];
        public bool Opened { get; set; }
    }

    private PrecopySession(ILogger logger) => _logger = logger;

    public IReadOnlyList<PrecopyIteration> Iterations => _iterations;

    private readonly List<PrecopyIteration> _iterations = [];

    public string? StopReason { get; private set; }

    public long FinalDirtyPages { get; private set; }

    /// <summary>Attaches a tracker to every task of the tree; throws (detaching what it attached) when one cannot be.</summary>
    public static PrecopySession Attach(IReadOnlyList<int> pids, ILogger logger)
    {
        var session = new PrecopySession(logger);
        try
        {
            foreach (var pid in pids)
            {
                var tracker = DirtyTracker.Attach(pid, logger: logger);
                var task = new TrackedTask(pid, ProcessMemory.VirtualPid(pid), tracker);
                session._tasks.Add(task);
                session._byVpid[task.Vpid] = task;
            }
        }
        catch
        {
            session.Dispose();
            throw;
        }

        LogAttached(logger, pids.Count);
        return session;
    }

    /// <summary>Runs iterations until the policy says stop. Every round is acknowledged by the target before the next.</summary>
    /// <remarks>
    /// With <paramref name="throttle"/> (auto-converge on), an iteration whose dirty set does not fit the budget and
    /// that would stop on growth or on the iteration limit throttles the tree instead (the level rising per iteration,
    /// <see cref="PrecopyPolicy.NextThrottle"/>) and iterates on, until the set fits or the throttle is at its highest.
    /// The caller lifts the throttle (the factory's result) before the freeze and on every failure.
    /// </remarks>
    public async Task<IReadOnlyList<PrecopyIteration>> RunAsync(IPageTransport transport, PrecopyPolicy policy,
        Action<PrecopyIteration, string?>? progress, CancellationToken ct, Func<Engine.Processes.TreeThrottle>? throttle = null)
    {
        Engine.Processes.TreeThrottle? throttled = null;
        var dirty = new List<(ulong Start, ulong Pages)>();
        long previousDirty = 0;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkPages * PageSize);
        try
        {
            for (int i = 0; ; i++)
            {
                var sw = Stopwatch.StartNew();
                var before = transport.Snapshot();
                long wireBefore = (long)before.WireBytes;
                long sent = 0;
                foreach (var t in _tasks)
                {
                    if (!t.Opened)
                    {
                        await transport.OpenTaskAsync(t.Vpid, ct).ConfigureAwait(false);
                        t.Opened = true;
                    }

                    IEnumerable<(ulong Start, ulong Pages)> ranges;
                    if (i == 0)
                    {
                        // Harvest first (writes from now on are caught by the next one), then everything resident is read.
                        t.Tracker.Harvest();
                        ranges = t.Tracker.Vmas().Where(v => v.State == VmaState.Tracked)
                            .SelectMany(v => ProcessMemory.ResidentRanges(t.Pid, v.Start, v.End)).ToList();
                    }
                    else
                    {
                        dirty.Clear();
                        CollectDirty(t, dirty);
                        ranges = dirty;
                    }

                    foreach (var (start, pages) in ranges)
                    {
                        sent += await SendRangeAsync(transport, t, start, pages, buffer, ct).ConfigureAwait(false);
                    }
                }

                await transport.CompleteRoundAsync(ct).ConfigureAwait(false);
                sw.Stop();
                var after = transport.Snapshot();
                long wire = (long)after.WireBytes - wireBefore;

                // The rate the policy judges the dirty set by: pages with data per second. Zero pages cross as a flag
                // and would flatter it, while what a running workload dirties is mostly data.
                long zero = (long)(after.ZeroPages - before.ZeroPages);
                double rate = Math.Max(sent - zero, 1) * (double)PageSize / Math.Max(sw.Elapsed.TotalSeconds, 1e-3);

                // What is dirty now is what the next iteration (or the cutover) must move.
                long nowDirty = PeekDirtyPages();
                var iteration = new PrecopyIteration(i, sent, wire, nowDirty, sw.Elapsed, rate, throttled?.Level ?? 0);
                _iterations.Add(iteration);
                StopReason = policy.StopReason(i, nowDirty, previousDirty, rate);
                if (StopReason is not null && throttle is not null && !policy.Fits(nowDirty, rate)
                    && policy.NextThrottle(throttled?.Level ?? 0) is int level)
                {
                    // Writes outpace the link: slow the writer rather than freeze with its whole hot set.
                    throttled ??= throttle();
                    throttled.Set(level);
                    LogThrottled(_logger, i, nowDirty, level, StopReason);
                    StopReason = null;
                }

                LogIteration(_logger, i, sent, wire, nowDirty, sw.Elapsed.TotalMilliseconds, StopReason ?? "continue");
                progress?.Invoke(iteration, StopReason);
                if (StopReason is not null)
                {
                    return _iterations;
                }

                previousDirty = nowDirty;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Dirty pages so far, without consuming them: harvested into the pending sets, counted.</summary>
    private long PeekDirtyPages()
    {
        long n = 0;
        foreach (var t in _tasks)
        {
            var ranges = new List<(ulong Start, ulong Pages)>();
            CollectDirty(t, ranges);
            t.Pending.AddRange(ranges);
            foreach (var r in ranges)
            {
                n += (long)r.Pages;
            }
        }

        return n;
    }

    private static void CollectDirty(TrackedTask t, List<(ulong Start, ulong Pages)> into)
    {
        into.AddRange(t.Pending);
        t.Pending.Clear();
        t.Tracker.Refresh(into); // new or grown mappings: wholly dirty
        t.Tracker.Harvest(into);
        foreach (var (start, pages) in into)
        {
            for (ulong p = 0; p < pages; p++)
            {
                t.Clean.Remove(start / PageSize + p);
            }
        }
    }

    private static async Task<long> SendRangeAsync(IPageTransport transport, TrackedTask t, ulong start, ulong pages, byte[] buffer, CancellationToken ct)
    {
        long sent = 0;
        for (ulong done = 0; done < pages;)
        {
            int n = (int)Math.Min((ulong)ChunkPages, pages - done);
            ulong vaddr = start + done * PageSize;
            int read = ProcessMemory.Read(t.Pid, vaddr, buffer.AsSpan(0, n * PageSize)) / PageSize;
            if (read > 0)
            {
                await transport.SendPagesAsync(t.Vpid, vaddr, buffer.AsMemory(0, read * PageSize), ct).ConfigureAwait(false);
                for (int k = 0; k < read; k++)
                {
                    t.Clean.Add(vaddr / PageSize + (ulong)k);
                }

                sent += read;
            }

            // An unmapped page stops the read: skip it (the final dump decides what exists).
            done += (ulong)Math.Max(read, 1);
        }

        return sent;
    }

    public void OnFinalDumpStarted()
    {
        lock (_lock)
        {
            long n = 0;
            var ranges = new List<(ulong Start, ulong Pages)>();
            foreach (var t in _tasks)
            {
                ranges.Clear();
                CollectDirty(t, ranges);
                foreach (var r in ranges)
                {
                    n += (long)r.Pages;
                }
            }

            FinalDirtyPages = n;
            LogFinalHarvest(_logger, n, _tasks.Sum(t => (long)t.Clean.Count), string.Join(",", _tasks.Select(t => t.Vpid)));
        }
    }

    /// <summary>
    /// The last round after a lazy dump, while the tree is frozen (from post-dump until CRIU answers): takes the final
    /// harvest, then sends every task pagemap CRIU wrote in <paramref name="imagesDir"/> as the target must restore it.
    /// Lazy runs (anonymous memory, no data in the images) go as PARENT runs where the target's copy is current and are
    /// read from the frozen task otherwise; runs CRIU dumped with data (stacks, file-backed private pages) are sent
    /// from its pages image. The target composes its own pagemap and pages images from this round: CRIU's pagemaps are
    /// renamed to <c>lazy-pagemap-VPID.img</c> (the lazy map for a lazy restore), its pages images moved to
    /// <c>source-only/</c>. <paramref name="pidOfVpid"/> maps
    /// the dumped tasks' pids (as CRIU names them) to pids here.
    /// </summary>
    public async Task<FinalRound> SendFinalRoundAsync(IPageTransport transport, string imagesDir, IReadOnlyDictionary<int, int> pidOfVpid,
        CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        OnFinalDumpStarted();
        var pagemaps = new List<(int Vpid, string Path)>();
        foreach (var path in Directory.EnumerateFiles(imagesDir, "pagemap-*.img"))
        {
            var name = Path.GetFileName(path);
            if (int.TryParse(name.AsSpan(8, name.Length - 12), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int vpid) && vpid > 0)
            {
                pagemaps.Add((vpid, path)); // pagemap-shmem-*.img stay: shared memory travels in the images
            }
        }

        var moved = new List<(string Path, int Vpid)>();
        long clean = 0, fromMemory = 0, fromImages = 0;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkPages * PageSize);
        try
        {
            foreach (var (vpid, path) in pagemaps.OrderBy(p => p.Vpid))
            {
                if (!pidOfVpid.TryGetValue(vpid, out int pid))
                {
                    throw new InvalidDataException($"CRIU dumped task {vpid}, which is not in the frozen tree");
                }

                PagemapImage map;
                await using (var fs = File.OpenRead(path))
                {
                    map = PagemapImage.Read(fs, Path.GetFileName(path));
                }

                var pagesPath = Path.Combine(imagesDir, $"pages-{map.PagesId}.img");
                ulong present = map.PresentPages;
                long pagesLength = File.Exists(pagesPath) ? new FileInfo(pagesPath).Length : 0;
                if ((ulong)pagesLength != present * PageSize)
                {
                    throw new InvalidDataException($"{Path.GetFileName(pagesPath)} holds {pagesLength} bytes; pagemap-{vpid}.img lists {present} present pages");
                }

                _byVpid.TryGetValue(vpid, out var tracked);
                await transport.OpenTaskAsync(vpid, ct).ConfigureAwait(false);
                await using var pagesFile = present == 0 ? null : new FileStream(pagesPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
                foreach (var run in map.Runs)
                {
                    if ((run.Flags & PagemapFlags.Present) != 0)
                    {
                        fromImages += await SendFromImageAsync(transport, vpid, run, pagesFile!, buffer, ct).ConfigureAwait(false);
                    }
                    else if (run.Flags == PagemapFlags.Lazy)
                    {
                        var (c, m) = await SendLazyRunAsync(transport, vpid, pid, tracked, run, buffer, ct).ConfigureAwait(false);
                        clean += c;
                        fromMemory += m;
                    }
                    else
                    {
                        throw new InvalidDataException($"pagemap-{vpid}.img: run at 0x{run.Vaddr:x} has flags {run.Flags}, which a dump without parent images does not write");
                    }
                }

                // The arguments and environment stay out of the lazy map: /proc/PID/cmdline of a restored task reads
                // them, and a read of a lazy page from another process fails until the daemon filled it (ps, pgrep,
                // monitoring would see an empty command line for seconds).
                if (ProcessMemory.ArgsAndEnvironment(pid) is { } argsEnv)
                {
                    map = map.Without(argsEnv.Start, argsEnv.End);
                    await using var fs = new FileStream(path, FileMode.Create, FileAccess.Write);
                    map.Write(fs);
                }

                moved.Add((path, vpid));
                if (File.Exists(pagesPath))
                {
                    moved.Add((pagesPath, 0));
                }
            }

            await transport.CompleteRoundAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        var sourceOnly = Directory.CreateDirectory(Path.Combine(imagesDir, "source-only")).FullName;
        foreach (var (path, vpid) in moved)
        {
            // The target composes its own pagemap and pages images from this round; CRIU's pagemap goes along as the
            // lazy map (which runs a lazy restore may leave to criu lazy-pages), its pages image stays here.
            File.Move(path, vpid > 0 ? Path.Combine(imagesDir, $"{PagemapImage.LazyMapPrefix}{vpid}.img") : Path.Combine(sourceOnly, Path.GetFileName(path)), overwrite: true);
        }

        var round = new FinalRound(pagemaps.Count, clean, fromMemory, fromImages, sw.Elapsed);
        LogFinalRound(_logger, round.Tasks, clean, fromMemory, fromImages, sw.Elapsed.TotalMilliseconds);
        return round;
    }

    private static async Task<long> SendFromImageAsync(IPageTransport transport, int vpid, PagemapRun run, FileStream pages, byte[] buffer, CancellationToken ct)
    {
        for (ulong done = 0; done < run.NrPages;)
        {
            int n = (int)Math.Min((ulong)ChunkPages, run.NrPages - done);
            await pages.ReadExactlyAsync(buffer.AsMemory(0, n * PageSize), ct).ConfigureAwait(false);
            await transport.SendPagesAsync(vpid, run.Vaddr + done * PageSize, buffer.AsMemory(0, n * PageSize), ct).ConfigureAwait(false);
            done += (ulong)n;
        }

        return (long)run.NrPages;
    }

    /// <summary>A lazy run: clean stretches as PARENT runs, the rest read from the frozen task (every page must be readable).</summary>
    private static async Task<(long Clean, long Read)> SendLazyRunAsync(IPageTransport transport, int vpid, int pid, TrackedTask? tracked,
        PagemapRun run, byte[] buffer, CancellationToken ct)
    {
        long clean = 0, read = 0;
        ulong first = run.Vaddr / PageSize, end = first + run.NrPages;
        for (ulong p = first; p < end;)
        {
            bool isClean = tracked is not null && tracked.Clean.Contains(p);
            ulong q = p + 1;
            while (q < end && (tracked is not null && tracked.Clean.Contains(q)) == isClean && (isClean || q - p < ChunkPages))
            {
                q++;
            }

            if (isClean)
            {
                await transport.SendParentAsync(vpid, p * PageSize, q - p, ct).ConfigureAwait(false);
                clean += (long)(q - p);
            }
            else
            {
                int bytes = (int)(q - p) * PageSize;
                int got = ProcessMemory.Read(pid, p * PageSize, buffer.AsSpan(0, bytes));
                if (got != bytes)
                {
                    throw new IOException($"task {vpid} (pid {pid}): read {got} of {bytes} bytes at 0x{p * PageSize:x} while frozen; CRIU listed these pages");
                }

                await transport.SendPagesAsync(vpid, p * PageSize, buffer.AsMemory(0, bytes), ct).ConfigureAwait(false);
                read += (long)(q - p);
            }

            p = q;
        }

        return (clean, read);
    }

    public bool IsClean(int vpid, ulong vaddr) =>
        _byVpid.TryGetValue(vpid, out var t) && t.Clean.Contains(vaddr / PageSize);

    /// <summary>Detaches every tracker (idempotent; a task that is gone is fine).</summary>
    public void Dispose()
    {
        foreach (var t in _tasks)
        {
            try
            {
                t.Tracker.Dispose();
            }
            catch (TrackerException ex)
            {
                // The task exited (the source copy is killed at commit): nothing of the tracker is left in it.
                LogDetachFailed(_logger, t.Pid, ex.Message);
            }
        }

        _tasks.Clear();
        _byVpid.Clear();
    }

    [LoggerMessage(EventId = 229, Level = LogLevel.Information, Message = "pre-copy iteration {Index}: {Dirty} pages dirty do not fit the budget ({Reason}); auto-converge throttles the tree to {Level}% stopped")]
    private static partial void LogThrottled(ILogger logger, int index, long dirty, int level, string reason);

    [LoggerMessage(EventId = 220, Level = LogLevel.Information, Message = "dirty tracking attached to {Tasks} tasks")]
    private static partial void LogAttached(ILogger logger, int tasks);

    [LoggerMessage(EventId = 221, Level = LogLevel.Information, Message = "pre-copy iteration {Index}: {Pages} pages sent ({Wire} bytes on the wire), {Dirty} dirty, {Ms:0} ms: {Decision}")]
    private static partial void LogIteration(ILogger logger, int index, long pages, long wire, long dirty, double ms, string decision);

    [LoggerMessage(EventId = 222, Level = LogLevel.Information, Message = "final harvest while frozen: {Pages} pages written since the last iteration; {Clean} pages current on the target (tasks {Vpids})")]
    private static partial void LogFinalHarvest(ILogger logger, long pages, long clean, string vpids);

    [LoggerMessage(EventId = 224, Level = LogLevel.Information, Message = "final round for {Tasks} tasks: {Clean} pages kept from pre-copy, {Memory} read from the frozen tree, {Images} from CRIU's images, {Ms:0} ms")]
    private static partial void LogFinalRound(ILogger logger, int tasks, long clean, long memory, long images, double ms);

    [LoggerMessage(EventId = 223, Level = LogLevel.Debug, Message = "detaching the tracker from {Pid}: {Message}")]
    private static partial void LogDetachFailed(ILogger logger, int pid, string message);
}

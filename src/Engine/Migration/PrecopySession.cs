using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Migration.Engine.Processes;
using Migration.Engine.Tracking;

namespace Migration.Engine.Migration;

/// <summary>One pre-copy iteration, as the CLI shows it.</summary>
public sealed record PrecopyIteration(int Index, long PagesSent, long BytesOnWire, long DirtyPagesFound, TimeSpan Elapsed, double BytesPerSecond);

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
    public async Task<IReadOnlyList<PrecopyIteration>> RunAsync(IPageTransport transport, PrecopyPolicy policy,
        Action<PrecopyIteration, string?>? progress, CancellationToken ct)
    {
        var dirty = new List<(ulong Start, ulong Pages)>();
        long previousDirty = 0;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkPages * PageSize);
        try
        {
            for (int i = 0; ; i++)
            {
                var sw = Stopwatch.StartNew();
                long wireBefore = (long)transport.Snapshot().WireBytes;
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
                long wire = (long)transport.Snapshot().WireBytes - wireBefore;
                double rate = sent * (double)PageSize / Math.Max(sw.Elapsed.TotalSeconds, 1e-3);

                // What is dirty now is what the next iteration (or the cutover) must move.
                long nowDirty = PeekDirtyPages();
                var iteration = new PrecopyIteration(i, sent, wire, nowDirty, sw.Elapsed, rate);
                _iterations.Add(iteration);
                StopReason = policy.StopReason(i, nowDirty, previousDirty, rate);
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

    [LoggerMessage(EventId = 220, Level = LogLevel.Information, Message = "dirty tracking attached to {Tasks} tasks")]
    private static partial void LogAttached(ILogger logger, int tasks);

    [LoggerMessage(EventId = 221, Level = LogLevel.Information, Message = "pre-copy iteration {Index}: {Pages} pages sent ({Wire} bytes on the wire), {Dirty} dirty, {Ms:0} ms: {Decision}")]
    private static partial void LogIteration(ILogger logger, int index, long pages, long wire, long dirty, double ms, string decision);

    [LoggerMessage(EventId = 222, Level = LogLevel.Information, Message = "final harvest while frozen: {Pages} pages written since the last iteration; {Clean} pages current on the target (tasks {Vpids})")]
    private static partial void LogFinalHarvest(ILogger logger, long pages, long clean, string vpids);

    [LoggerMessage(EventId = 223, Level = LogLevel.Debug, Message = "detaching the tracker from {Pid}: {Message}")]
    private static partial void LogDetachFailed(ILogger logger, int pid, string message);
}

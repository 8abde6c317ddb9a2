using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Migration.Engine.Tracking;

/// <summary>
/// Write-protect dirty tracking of one process (all its threads) through libmigrate_track: userfaultfd with
/// UFFD_FEATURE_WP_ASYNC injected into the process, harvests with PAGEMAP_SCAN (see ARCHITECTURE.md,
/// "Dirty tracking").
/// </summary>
/// <remarks>
/// <para>Ranges are (start address, page count) in units of <see cref="Environment.SystemPageSize"/>. A harvest
/// returns the pages written since the previous one and protects them again in the same ioctl, so a range handed
/// out is never handed out again unless it is written again: callers must not drop what they receive, including
/// ranges appended to a list before an exception.</para>
/// <para>Policy is the caller's: call <see cref="Refresh"/> before a harvest whose result must be complete (new
/// mappings are only registered by a refresh, and reported whole there), and after a harvest that set
/// <see cref="RefreshNeeded"/>. VMAs listed as <see cref="VmaState.Refused"/> by <see cref="Vmas"/> are not seen
/// at all and must be treated as always dirty.</para>
/// <para>Do not attach to a direct child of this process: the runtime reaps its children's wait statuses (a
/// ptrace stop among them) when they get SIGCHLD. Start such a process through <c>setsid -f</c>.</para>
/// <para>Thread-safe: calls are serialised.</para>
/// </remarks>
public sealed unsafe class DirtyTracker : IDisposable
{
    /// <summary>Ranges fetched per native call; a larger harvest takes several calls (the library keeps its place).</summary>
    private const int BufferRanges = 4096;

    private readonly Lock _lock = new();
    private readonly TrackerHandle _handle;
    private readonly ILogger _logger;
    private readonly TrackerNative.Range[] _buffer = new TrackerNative.Range[BufferRanges];
    private bool _detached;

    private DirtyTracker(int pid, TrackerHandle handle, ILogger logger)
    {
        Pid = pid;
        _handle = handle;
        _logger = logger;
    }

    public int Pid { get; }

    /// <summary>
    /// Set by a harvest that found a tracked VMA replaced (unmapped and mapped again): that VMA was reported whole,
    /// and it stays unprotected until <see cref="Refresh"/>, which clears this.
    /// </summary>
    public bool RefreshNeeded { get; private set; }

    /// <summary>What this kernel offers. Never throws for missing features; see <see cref="TrackerCapabilities.Missing"/>.</summary>
    public static TrackerCapabilities Probe()
    {
        TrackerLibrary.EnsureLoaded();
        TrackerNative.Caps caps;
        int r = TrackerNative.mt_probe(&caps);
        if (r < 0)
        {
            throw TrackerException.FromNative("probe dirty tracking for", Environment.ProcessId, r);
        }

        return new TrackerCapabilities(
            Userfaultfd: (caps.Flags & TrackerNative.CapUffd) != 0,
            WriteProtectAsync: (caps.Flags & TrackerNative.CapWpAsync) != 0,
            WriteProtectUnpopulated: (caps.Flags & TrackerNative.CapWpUnpopulated) != 0,
            UserModeOnlyNeeded: (caps.Flags & TrackerNative.CapUserModeOnly) != 0,
            PagemapScan: (caps.Flags & TrackerNative.CapPagemapScan) != 0,
            SoftDirty: (caps.Flags & TrackerNative.CapSoftDirty) != 0,
            Injection: (caps.Flags & TrackerNative.CapInjection) != 0,
            UffdFeatures: caps.UffdFeatures,
            UserfaultfdError: -caps.UffdError,
            PagemapScanError: -caps.PagemapScanError);
    }

    /// <summary>
    /// Starts tracking process <paramref name="pid"/>. Its injected thread is stopped for well under a millisecond;
    /// the first harvest then returns only what was written after this returned.
    /// </summary>
    /// <param name="allowSeccomp">Inject even into a process under a seccomp filter (which may kill it if the
    /// filter forbids userfaultfd() or close()). Without it such a process is refused.</param>
    /// <exception cref="TrackerException">The process cannot be tracked; the message says which step failed.</exception>
    public static DirtyTracker Attach(int pid, bool allowSeccomp = false, ILogger? logger = null)
    {
        TrackerLibrary.EnsureLoaded();
        logger ??= NullLogger.Instance;
        if (ParentOf(pid) == Environment.ProcessId)
        {
            throw new TrackerException(
                $"cannot attach tracker to pid {pid}: it is a child of this process, whose wait statuses the runtime " +
                "reaps (a ptrace stop among them); start it through setsid -f", 0, "parent");
        }

        TrackerHandle handle;
        int r;
        using (TrackerLibrary.Logging(logger))
        {
            r = TrackerNative.mt_attach(pid, allowSeccomp ? TrackerNative.AttachAllowSeccomp : 0, out handle);
        }

        if (r < 0)
        {
            var error = TrackerException.FromNative("attach tracker to", pid, r);
            handle.Dispose();
            throw error;
        }

        var tracker = new DirtyTracker(pid, handle, logger);
        var stats = tracker.Statistics;
        TrackerLog.Attached(logger, pid, (uint)stats.TrackedVmas, stats.TrackedBytes >> 20, (uint)stats.RefusedVmas,
            stats.AttachTime.TotalMilliseconds, stats.StopTime.TotalMilliseconds);
        if (stats.RedeliveredSignals > 0)
        {
            TrackerLog.SignalsRedelivered(logger, pid, (uint)stats.RedeliveredSignals);
        }

        if (stats.RefusedVmas > 0)
        {
            foreach (var vma in tracker.Vmas().Where(v => v.State == VmaState.Refused))
            {
                TrackerLog.VmaRefused(logger, pid, vma.Start, vma.End, vma.Permissions,
                    Native.Libc.Describe(vma.Error));
            }
        }

        return tracker;
    }

    /// <summary>Pages written since the previous harvest (or since attach), protected again.</summary>
    public IReadOnlyList<(ulong Start, ulong Pages)> Harvest()
    {
        var ranges = new List<(ulong Start, ulong Pages)>();
        Harvest(ranges);
        return ranges;
    }

    /// <summary>
    /// Appends the pages written since the previous harvest to <paramref name="into"/> (no allocation when it has
    /// room) and returns how many ranges were appended. On an exception the ranges appended so far are valid.
    /// </summary>
    public int Harvest(List<(ulong Start, ulong Pages)> into)
    {
        ArgumentNullException.ThrowIfNull(into);
        lock (_lock)
        {
            ThrowIfDetached();
            using var scope = TrackerLibrary.Logging(_logger);
            int added = 0, flags;
            fixed (TrackerNative.Range* buffer = _buffer)
            {
                do
                {
                    flags = TrackerNative.mt_harvest(_handle, buffer, BufferRanges, out var count);
                    if (flags < 0)
                    {
                        throw TrackerException.FromNative("harvest dirty pages of", Pid, flags);
                    }

                    added += Append(into, buffer, count);
                    if ((flags & TrackerNative.LayoutChanged) != 0 && !RefreshNeeded)
                    {
                        RefreshNeeded = true;
                        TrackerLog.LayoutChanged(_logger, Pid);
                    }
                }
                while ((flags & TrackerNative.More) != 0);
            }

            return added;
        }
    }

    /// <summary>
    /// Re-reads the process's mappings: VMAs that appeared, grew or became writable are registered and returned
    /// whole (they count as dirty); vanished ones are forgotten.
    /// </summary>
    public IReadOnlyList<(ulong Start, ulong Pages)> Refresh()
    {
        var ranges = new List<(ulong Start, ulong Pages)>();
        Refresh(ranges);
        return ranges;
    }

    /// <summary>As <see cref="Refresh()"/>, appending to <paramref name="into"/>; returns how many ranges were appended.</summary>
    public int Refresh(List<(ulong Start, ulong Pages)> into)
    {
        ArgumentNullException.ThrowIfNull(into);
        lock (_lock)
        {
            ThrowIfDetached();
            using var scope = TrackerLibrary.Logging(_logger);
            int added = 0, flags;
            ulong pages = 0;
            fixed (TrackerNative.Range* buffer = _buffer)
            {
                do
                {
                    flags = TrackerNative.mt_refresh(_handle, buffer, BufferRanges, out var count);
                    if (flags < 0)
                    {
                        throw TrackerException.FromNative("refresh the tracked mappings of", Pid, flags);
                    }

                    for (nuint i = 0; i < count; i++)
                    {
                        pages += buffer[i].Pages;
                    }

                    added += Append(into, buffer, count);
                }
                while ((flags & TrackerNative.More) != 0);
            }

            RefreshNeeded = false;
            TrackerLog.Refreshed(_logger, Pid, added, pages);
            return added;
        }
    }

    public TrackerStatistics Statistics
    {
        get
        {
            lock (_lock)
            {
                ThrowIfDetached();
                TrackerNative.Info info;
                int r = TrackerNative.mt_get_info(_handle, &info);
                if (r < 0)
                {
                    throw TrackerException.FromNative("read the tracker statistics of", Pid, r);
                }

                return new TrackerStatistics(
                    AttachTime: FromNs(info.AttachNs),
                    StopTime: FromNs(info.StopNs),
                    RegisterTime: FromNs(info.RegisterNs),
                    TrackedVmas: (int)info.TrackedVmas,
                    RefusedVmas: (int)info.FailedVmas,
                    TrackedBytes: info.TrackedBytes,
                    InjectedThread: info.Tid,
                    UserModeOnly: (info.Flags & TrackerNative.InfoUserModeOnly) != 0,
                    RedeliveredSignals: (int)info.RedeliveredSignals,
                    UffdFeatures: info.UffdFeatures);
            }
        }
    }

    /// <summary>Every VMA of the process as of the last attach or refresh, and what the tracker did with it.</summary>
    public IReadOnlyList<TrackedVma> Vmas()
    {
        lock (_lock)
        {
            ThrowIfDetached();
            int r = TrackerNative.mt_get_vmas(_handle, null, 0, out var total);
            if (r < 0)
            {
                throw TrackerException.FromNative("list the VMAs of", Pid, r);
            }

            var vmas = new TrackerNative.Vma[(int)total];
            var result = new List<TrackedVma>(vmas.Length);
            fixed (TrackerNative.Vma* p = vmas)
            {
                r = TrackerNative.mt_get_vmas(_handle, p, (nuint)vmas.Length, out total);
                if (r < 0)
                {
                    throw TrackerException.FromNative("list the VMAs of", Pid, r);
                }

                for (int i = 0; i < vmas.Length; i++)
                {
                    var perms = Encoding.ASCII.GetString(p[i].Perms, 4);
                    result.Add(new TrackedVma(p[i].Start, p[i].End, perms, (VmaState)p[i].State, -p[i].Error));
                }
            }

            return result;
        }
    }

    /// <summary>
    /// Unregisters every range (dropping the write protection) and closes the tracker's descriptors. The process
    /// keeps nothing of the tracker. Idempotent.
    /// </summary>
    public void Detach()
    {
        lock (_lock)
        {
            if (_detached)
            {
                return;
            }

            _detached = true;
            int r;
            using (TrackerLibrary.Logging(_logger))
            {
                // mt_detach frees the tracker: the handle must not release it a second time.
                var raw = _handle.DangerousGetHandle();
                _handle.SetHandleAsInvalid();
                r = TrackerNative.mt_detach(raw);
            }

            _handle.Dispose();
            if (r < 0)
            {
                throw TrackerException.FromNative("detach tracker from", Pid, r);
            }

            TrackerLog.Detached(_logger, Pid);
        }
    }

    public void Dispose()
    {
        try
        {
            Detach();
        }
        catch (TrackerException e)
        {
            // Dispose must not throw; the library has freed the tracker and closed the descriptor anyway, and
            // closing the last reference unregisters whatever the explicit unregister missed.
            TrackerLog.Native(_logger, LogLevel.Warning, e.Message);
        }
    }

    private static int Append(List<(ulong Start, ulong Pages)> into, TrackerNative.Range* buffer, nuint count)
    {
        into.EnsureCapacity(into.Count + (int)count);
        for (nuint i = 0; i < count; i++)
        {
            into.Add((buffer[i].Start, buffer[i].Pages));
        }

        return (int)count;
    }

    private void ThrowIfDetached() => ObjectDisposedException.ThrowIf(_detached, this);

    private static TimeSpan FromNs(long ns) => TimeSpan.FromTicks(ns / 100);

    /// <summary>PPid of /proc/PID/status, or 0 when it cannot be read (the native attach then says why).</summary>
    private static int ParentOf(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("PPid:", StringComparison.Ordinal))
                {
                    return int.Parse(line.AsSpan(5).Trim(), CultureInfo.InvariantCulture);
                }
            }
        }
        catch (IOException)
        {
            // Gone or unreadable: mt_attach reports it with the right errno.
        }
        catch (UnauthorizedAccessException)
        {
            // Same: the native call gives the precise reason.
        }

        return 0;
    }
}

using Microsoft.Extensions.Logging;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Target.LazyFill;

namespace Migration.Target.Incoming;

/// <summary>
/// The lazy fill of one restored tree as the agent sees it: the fill process (<see cref="FillProcess"/>, which runs
/// <c>criu lazy-pages</c> and serves it the composed images' pages, in a session of its own) launched ahead of the
/// freeze, told to start the daemon at the restore, the lazy runs marked in the composed pagemaps, the restored tree
/// handed over, and after the commit the wait for every page to be in. The fill outlives the agent: a killed agent
/// leaves it running, and it kills the restored tree itself if it fails. Not thread-safe: its migration serializes the
/// calls.
/// </summary>
internal sealed partial class LazyPageFill(string migrationId, string imagesDir, string workDir, ILogger logger)
{
    /// <summary>How long a daemon that is gone may leave its fill process without a verdict before that counts as a failure.</summary>
    private static readonly TimeSpan VerdictTimeout = TimeSpan.FromSeconds(2);

    private readonly ILogger _logger = logger;
    private FillProcess? _launched;
    private Task<FillProcess>? _starting;
    private FillProcess? _fill;

    /// <summary>After the commit: completes when every lazy page was filled (true) or the fill failed (false).</summary>
    public Task<bool>? Done { get; private set; }

    /// <summary>
    /// Long before the freeze (at Begin): launches the fill process, so that its start (a .NET process) runs while
    /// pre-copy does and costs no downtime. A failure to launch is logged; the restore launches it again then.
    /// </summary>
    public void Launch(CriuOptions criu)
    {
        if (_launched is not null || _starting is not null)
        {
            return;
        }

        try
        {
            _launched = FillProcess.Launch(workDir, imagesDir, criu);
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException)
        {
            LogLaunchFailed(migrationId, ex.Message);
        }
    }

    /// <summary>Starts the daemon ahead of the restore; it reads only the process tree image until the restore hands it the tasks.</summary>
    public void BeginStart(CriuOptions criu, CancellationToken ct) => _starting ??= StartAsync(criu, ct);

    /// <summary>
    /// Marks the lazy runs in the composed pagemaps and returns the running fill (the one started ahead, or a new one).
    /// The caller owns it until it hands it back with <see cref="Attach"/>.
    /// </summary>
    public async Task<FillProcess> AcquireAsync(CriuOptions criu, CancellationToken ct)
    {
        int marked = MarkLazyRuns();
        var starting = _starting ?? StartAsync(criu, ct);
        _starting = null;
        var fill = await starting.ConfigureAwait(false);
        LogLazyDaemon(migrationId, fill.CriuPid, marked, fill.Pid);
        return fill;
    }

    /// <summary>
    /// Why <paramref name="fill"/> cannot fill the restored tree, or null while it can: it has exited with a failure
    /// (it exits 0 only once every lazy page is in), or its daemon is gone and it has not said why within
    /// <see cref="VerdictTimeout"/>. Asked of the kernel now, so a daemon that just died is seen. A tree resumed without
    /// its fill reads unfilled pages as zeros.
    /// </summary>
    public string? Failure(FillProcess fill)
    {
        if (fill.DaemonGone)
        {
            // The daemon died (or finished) a moment ago: its fill process is about to say which.
            long deadline = System.Diagnostics.Stopwatch.GetTimestamp() + (long)(VerdictTimeout.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
            while (fill.ExitCode is null && System.Diagnostics.Stopwatch.GetTimestamp() < deadline)
            {
                Thread.Sleep(2);
            }

            if (fill.ExitCode is null)
            {
                return $"criu lazy-pages (pid {fill.CriuPid}) is gone and its fill process (pid {fill.Pid}) has not said why within {VerdictTimeout.TotalSeconds:0} s";
            }
        }

        if (fill.ExitCode is int code && code != FillServer.ExitFilled)
        {
            string why = fill.State?.Error ?? $"{string.Join(" | ", CriuLog.ReadErrors(fill.LogPath))} (log {fill.LogPath})";
            return $"the lazy fill (pid {fill.Pid}) exited with code {code}: {why}; its own log {fill.FillLogPath}";
        }

        return null;
    }

    /// <summary><see cref="Failure(FillProcess)"/> of the fill of the restored tree; null when none fills it.</summary>
    public string? Failure() => _fill is { } fill ? Failure(fill) : null;

    /// <summary>Fault injection: kills the daemon filling the restored tree and waits until its fill process is gone.</summary>
    public Task KillDaemonAsync() => _fill is { } fill ? fill.KillAsync() : Task.CompletedTask;

    /// <summary>The restore succeeded with <paramref name="fill"/> serving its tree: the tree is handed over.</summary>
    public void Attach(FillProcess fill, int restoredPid)
    {
        fill.HandOver(restoredPid);
        _fill = fill;
    }

    /// <summary>Whether a fill serves a restored tree (its images must stay until the fill ends).</summary>
    public bool Serving => _fill is not null;

    /// <summary>
    /// The fill's progress as its state file says now (pages filled, of how many; its error): null when no fill serves
    /// a restored tree. Cheap enough to poll (one small file read); what metrics of the fill are to be built on.
    /// </summary>
    public LazyFillProgress? Progress => _fill?.State is { } state ? LazyFillProgress.From(state) : null;

    /// <summary>
    /// The restored tree runs: wait in the background for the fill to end, then run <paramref name="failed"/> with the
    /// reason if it did not fill every page, and <paramref name="finished"/> (which removes what is left of the images).
    /// Sets <see cref="Done"/>.
    /// </summary>
    public void FinishInBackground(int restoredPid, Action<string> failed, Action finished)
    {
        if (_fill is { } fill)
        {
            Done = FinishAsync(fill, restoredPid, failed, finished);
        }
    }

    /// <summary>A fill launched or started ahead that no restore took: stopped.</summary>
    public void DropStart()
    {
        if (Interlocked.Exchange(ref _launched, null) is { } launched)
        {
            _ = launched.DisposeAsync().AsTask();
        }

        if (Interlocked.Exchange(ref _starting, null) is { } starting)
        {
            _ = starting.ContinueWith(t => t.Result.DisposeAsync().AsTask(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }
    }

    /// <summary>Stops the fill of a restore that will not run (its tree was killed, or never committed).</summary>
    public void Stop()
    {
        if (_fill is { } fill)
        {
            _fill = null;
            _ = fill.DisposeAsync().AsTask();
        }
    }

    /// <summary>
    /// The agent stops while a committed tree is still being filled: the fill goes on without it (it owns the images,
    /// removes them when done and kills the tree if it fails); a restarted agent finds it by its state file.
    /// </summary>
    public void Detach(int restoredPid)
    {
        if (_fill is { } fill && fill.ExitCode is null)
        {
            LogLazyDetached(migrationId, restoredPid, fill.Pid);
            _fill = null;
            fill.Detach();
        }
    }

    private async Task<FillProcess> StartAsync(CriuOptions criu, CancellationToken ct)
    {
        FillProcess fill;
        try
        {
            fill = Interlocked.Exchange(ref _launched, null) ?? FillProcess.Launch(workDir, imagesDir, criu);
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException)
        {
            throw new CriuException("lazy-pages", $"cannot start the lazy fill process: {ex.Message}", [], null, ex);
        }

        await fill.StartDaemonAsync(ct).ConfigureAwait(false);
        return fill;
    }

    private async Task<bool> FinishAsync(FillProcess fill, int restoredPid, Action<string> failed, Action finished)
    {
        int code = await fill.Exited.ConfigureAwait(false);
        var state = fill.State;
        bool ok = code == FillServer.ExitFilled;
        if (ok)
        {
            LogLazyDone(migrationId, fill.Elapsed.TotalMilliseconds, state?.PagesFilled ?? 0);
        }
        else
        {
            // Pages it did not fill read as zeros in the workload now: say so loudly, with the reasons, and stop it.
            string why = state?.Error ?? string.Join(" | ", CriuLog.ReadErrors(fill.LogPath));
            LogLazyFailed(migrationId, restoredPid, code, fill.LogPath, why);
            failed($"the lazy fill exited with code {code} before every lazy page was filled: {why}");
        }

        finished(); // while Progress still shows the fill's last state
        _fill = null;
        await fill.DisposeAsync().ConfigureAwait(false);
        return ok;
    }

    /// <summary>
    /// Marks lazy, in each composed <c>pagemap-VPID.img</c>, the runs the source's CRIU left lazy (its
    /// <c>lazy-pagemap-VPID.img</c>): <c>criu lazy-pages</c> fills those after the restore, which then reads only the rest.
    /// Returns the number of pages marked.
    /// </summary>
    private int MarkLazyRuns()
    {
        int marked = 0;
        foreach (var lazyPath in Directory.EnumerateFiles(imagesDir, PagemapImage.LazyMapPrefix + "*.img"))
        {
            var name = Path.GetFileName(lazyPath);
            var vpidText = name.AsSpan(PagemapImage.LazyMapPrefix.Length, name.Length - PagemapImage.LazyMapPrefix.Length - 4);
            if (!int.TryParse(vpidText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int vpid) || vpid <= 0)
            {
                throw new TargetRequestException(TargetError.InvalidArgument, $"lazy map '{PeerText.Printable(name)}' does not name a task");
            }

            var pagemapPath = Path.Combine(imagesDir, $"pagemap-{vpid}.img");
            if (!File.Exists(pagemapPath))
            {
                throw new TargetRequestException(TargetError.FailedPrecondition, $"{name}: no pagemap-{vpid}.img was composed for that task");
            }

            PagemapImage lazyMap, composed;
            try
            {
                using (var fs = File.OpenRead(lazyPath))
                {
                    lazyMap = PagemapImage.Read(fs, name);
                }

                using (var fs = File.OpenRead(pagemapPath))
                {
                    composed = PagemapImage.Read(fs, Path.GetFileName(pagemapPath));
                }
            }
            catch (InvalidDataException ex)
            {
                throw new TargetRequestException(TargetError.InvalidArgument, ex.Message);
            }

            var lazyRuns = lazyMap.Runs.Where(r => (r.Flags & PagemapFlags.Lazy) != 0).ToList();
            var result = composed.MarkLazy(lazyRuns);
            marked += (int)result.Runs.Where(r => (r.Flags & PagemapFlags.Lazy) != 0).Sum(r => (long)r.NrPages);
            var temp = pagemapPath + ".lazy";
            using (var fs = new FileStream(temp, FileMode.Create, FileAccess.Write))
            {
                result.Write(fs);
            }

            File.Move(temp, pagemapPath, overwrite: true);
        }

        return marked;
    }

    [LoggerMessage(EventId = 305, Level = LogLevel.Information, Message = "migration {Id}: criu lazy-pages (pid {Pid}) serves {Pages} lazy pages from the images, fed by the lazy fill process (pid {FillPid})")]
    private partial void LogLazyDaemon(string id, int pid, int pages, int fillPid);

    [LoggerMessage(EventId = 306, Level = LogLevel.Information, Message = "migration {Id}: every lazy page filled, {Ms:0} ms after the fill process was launched ({Pages} pages served)")]
    private partial void LogLazyDone(string id, double ms, long pages);

    [LoggerMessage(EventId = 307, Level = LogLevel.Error, Message = "migration {Id}: criu lazy-pages failed (exit {Code}) while restored pid {Pid} runs; pages it did not fill are lost to the workload, which is killed. Log {Log}: {Errors}")]
    private partial void LogLazyFailed(string id, int pid, int code, string log, string errors);

    [LoggerMessage(EventId = 308, Level = LogLevel.Warning, Message = "migration {Id}: the lazy fill process could not be launched ahead ({Error}); the restore tries again")]
    private partial void LogLaunchFailed(string id, string error);

    [LoggerMessage(EventId = 309, Level = LogLevel.Warning, Message = "migration {Id}: the agent stops while restored pid {Pid} is being filled; the fill (pid {FillPid}) goes on without it")]
    private partial void LogLazyDetached(string id, int pid, int fillPid);
}

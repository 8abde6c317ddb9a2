using Microsoft.Extensions.Logging;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.PageServer.Store;

namespace Migration.Target.Incoming;

/// <summary>
/// The lazy fill of one restored tree: <c>criu lazy-pages</c> started ahead of the restore (while the page images are
/// composed), the lazy runs marked in the composed pagemaps, the daemon's pages served from the page store, and after
/// the commit the wait for every page to be in. Not thread-safe: its migration serializes the calls.
/// </summary>
internal sealed partial class LazyPageFill(string migrationId, string imagesDir, string workDir, ILogger logger)
{
    /// <summary>The daemon's readiness: how long its start may take before the restore gives up on it.</summary>
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(30);

    private readonly ILogger _logger = logger;
    private Task<LazyPagesDaemon>? _starting;
    private LazyPagesDaemon? _daemon;
    private Task<string?>? _serving;
    private volatile string? _serveError;

    /// <summary>After the commit: completes when every lazy page was filled (true) or the daemon failed (false).</summary>
    public Task<bool>? Done { get; private set; }

    /// <summary>Starts the daemon ahead of the restore; it reads only the process tree image until the restore hands it the tasks.</summary>
    public void BeginStart(CriuClient criu, IIncomingPages pages, CancellationToken ct) =>
        _starting ??= StartAsync(criu, pages, ct);

    /// <summary>
    /// Marks the lazy runs in the composed pagemaps and returns the running daemon (the one started ahead, or a new one).
    /// The caller owns it until it hands it back with <see cref="Attach"/>.
    /// </summary>
    public async Task<LazyPagesDaemon> AcquireAsync(CriuClient criu, IIncomingPages pages, CancellationToken ct)
    {
        int marked = MarkLazyRuns();
        var starting = _starting ?? StartAsync(criu, pages, ct);
        _starting = null;
        var daemon = await starting.ConfigureAwait(false);
        LogLazyDaemon(migrationId, daemon.Pid, marked);
        return daemon;
    }

    /// <summary>
    /// Why <paramref name="daemon"/> cannot fill the restored tree, or null while it can: it has exited with a failure
    /// (it exits 0 only once every lazy page is in), or serving its pages failed (it will not get the rest). Asked of the
    /// kernel now, so a daemon that just died is seen. A tree resumed without its daemon reads unfilled pages as zeros.
    /// </summary>
    public string? Failure(LazyPagesDaemon daemon)
    {
        if (daemon.ExitCode is int code && code != 0)
        {
            return $"criu lazy-pages (pid {daemon.Pid}) exited with code {code}{Reasons(daemon)}";
        }

        return _serveError is { } error ? $"serving lazy pages to criu lazy-pages (pid {daemon.Pid}) failed: {error}" : null;
    }

    /// <summary><see cref="Failure(LazyPagesDaemon)"/> of the daemon serving the restored tree; null when none serves it.</summary>
    public string? Failure() => _daemon is { } daemon ? Failure(daemon) : null;

    /// <summary>Fault injection: kills the daemon serving the restored tree and waits until it is gone.</summary>
    public Task KillDaemonAsync() => _daemon is { } daemon ? daemon.KillAsync() : Task.CompletedTask;

    private static string Reasons(LazyPagesDaemon daemon)
    {
        var errors = CriuLog.ReadErrors(daemon.LogPath);
        return errors.Count > 0 ? $" ({string.Join(" | ", errors)}; log {daemon.LogPath})" : $" (log {daemon.LogPath})";
    }

    /// <summary>The restore succeeded with <paramref name="daemon"/> serving its tree.</summary>
    public void Attach(LazyPagesDaemon daemon) => _daemon = daemon;

    /// <summary>Whether a daemon serves a restored tree (its images must stay until the fill ends).</summary>
    public bool Serving => _daemon is not null;

    /// <summary>
    /// The restored tree runs: wait in the background for the fill to end, then run <paramref name="failed"/> with the
    /// reason if it did not fill every page, and <paramref name="finished"/> (which removes the images). Sets <see cref="Done"/>.
    /// </summary>
    public void FinishInBackground(int restoredPid, Action<string> failed, Action finished)
    {
        if (_daemon is { } daemon)
        {
            Done = FinishAsync(daemon, restoredPid, failed, finished);
        }
    }

    /// <summary>A daemon started ahead that no restore took: stopped.</summary>
    public void DropStart()
    {
        if (Interlocked.Exchange(ref _starting, null) is { } starting)
        {
            _ = starting.ContinueWith(t => t.Result.DisposeAsync().AsTask(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }
    }

    /// <summary>Kills the daemon of a restore that will not run (its tree was killed, or never committed).</summary>
    public void Stop()
    {
        if (_daemon is { } daemon)
        {
            _daemon = null;
            _ = daemon.DisposeAsync().AsTask();
        }
    }

    /// <summary>
    /// A committed tree still being filled needs the store until the last page is in: stopping the agent now would cost
    /// the workload its memory. Waits (bounded) for the fill to end.
    /// </summary>
    public void WaitForFill(int restoredPid, TimeSpan timeout)
    {
        if (Done is { IsCompleted: false } filling)
        {
            LogLazyDrain(migrationId, restoredPid);
            if (!filling.Wait(timeout))
            {
                LogLazyDrainTimedOut(migrationId, restoredPid, timeout.TotalSeconds);
            }
        }
    }

    /// <summary>
    /// Starts <c>criu lazy-pages</c> with one end of a socket pair as its page server connection; the other end is
    /// served from the page store until the daemon closes it (every lazy page filled).
    /// </summary>
    private async Task<LazyPagesDaemon> StartAsync(CriuClient criu, IIncomingPages pages, CancellationToken ct)
    {
        var (daemon, ours) = await LazyPagesDaemon.StartServedAsync(criu.Options, imagesDir, workDir, "lazy-pages.log", ReadyTimeout, ct)
            .ConfigureAwait(false);
        try
        {
            var serving = pages.ServeLazyPagesAsync(ours, CancellationToken.None);
            _serving = serving.ContinueWith(t =>
            {
                string? error = t.IsFaulted ? t.Exception!.GetBaseException().Message : t.Result;
                if (error is not null)
                {
                    _serveError = error;
                    LogLazyServeFailed(migrationId, error);
                }

                return error;
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            return daemon;
        }
        catch
        {
            ours.Dispose();
            await daemon.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task<bool> FinishAsync(LazyPagesDaemon daemon, int restoredPid, Action<string> failed, Action finished)
    {
        int code = await daemon.Exited.ConfigureAwait(false);
        string? served = _serving is { } serving ? await serving.ConfigureAwait(false) : null;
        bool ok = code == 0 && served is null;
        if (ok)
        {
            LogLazyDone(migrationId, daemon.Elapsed.TotalMilliseconds);
        }
        else
        {
            // Pages it did not fill read as zeros in the workload now: say so loudly, with CRIU's reasons, and stop it.
            LogLazyFailed(migrationId, restoredPid, code, daemon.LogPath, string.Join(" | ", CriuLog.ReadErrors(daemon.LogPath)));
            failed(code != 0 ? $"criu lazy-pages exited with code {code} before every lazy page was filled" : $"serving lazy pages failed: {served}");
        }

        _daemon = null;
        finished();
        await daemon.DisposeAsync().ConfigureAwait(false);
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

    [LoggerMessage(EventId = 305, Level = LogLevel.Information, Message = "migration {Id}: criu lazy-pages (pid {Pid}) serves {Pages} lazy pages from the images")]
    private partial void LogLazyDaemon(string id, int pid, int pages);

    [LoggerMessage(EventId = 306, Level = LogLevel.Information, Message = "migration {Id}: every lazy page filled, {Ms:0} ms after the daemon started")]
    private partial void LogLazyDone(string id, double ms);

    [LoggerMessage(EventId = 307, Level = LogLevel.Error, Message = "migration {Id}: criu lazy-pages failed (exit {Code}) while restored pid {Pid} runs; pages it did not fill are lost to the workload, which is killed. Log {Log}: {Errors}")]
    private partial void LogLazyFailed(string id, int pid, int code, string log, string errors);

    [LoggerMessage(EventId = 308, Level = LogLevel.Error, Message = "migration {Id}: serving lazy pages to criu lazy-pages failed: {Error}")]
    private partial void LogLazyServeFailed(string id, string error);

    [LoggerMessage(EventId = 309, Level = LogLevel.Warning, Message = "migration {Id}: waiting for criu lazy-pages to fill restored pid {Pid} before stopping")]
    private partial void LogLazyDrain(string id, int pid);

    [LoggerMessage(EventId = 310, Level = LogLevel.Error, Message = "migration {Id}: restored pid {Pid} still not filled after {Seconds:0} s; stopping anyway, its unfilled pages are lost")]
    private partial void LogLazyDrainTimedOut(string id, int pid, double seconds);
}

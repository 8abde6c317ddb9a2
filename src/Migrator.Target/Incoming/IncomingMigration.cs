using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.PageServer.Store;
using Migration.Target.LazyFill;

namespace Migration.Target.Incoming;

public enum IncomingState
{
    Receiving,
    Restoring,
    Restored,
    Committed,
    Aborted,
    Failed,
}

/// <summary>
/// One migration arriving at the target: its work directory, the image files received into it (names,
/// offsets and sizes validated; nothing written outside it), the restore and the commit or abort.
/// </summary>
public sealed partial class IncomingMigration : IDisposable
{
    private readonly Lock _lock = new();
    private readonly ImageReceiver _images;
    private readonly LazyPageFill _lazy;
    private readonly TargetOptions _options;
    private readonly ulong _maxBytes;
    private readonly ILogger _logger;
    private IReadOnlyList<int> _restoredTree = [];

    internal IncomingMigration(string id, string workDir, ulong maxBytes, TargetOptions options, ILogger logger)
    {
        Id = id;
        WorkDir = workDir;
        ImagesDir = Path.Combine(workDir, "images");
        Directory.CreateDirectory(ImagesDir);
        _maxBytes = maxBytes;
        _options = options;
        _logger = logger;
        _images = new ImageReceiver(ImagesDir, maxBytes, options);
        _lazy = new LazyPageFill(id, ImagesDir, workDir, logger);
    }

    public string Id { get; }

    public string WorkDir { get; }

    public string ImagesDir { get; }

    public IncomingState State
    {
        get;
        private set
        {
            var was = field;
            field = value;
            if (was != value)
            {
                _history.Enqueue((value, DateTimeOffset.UtcNow));
                StateChanged?.Invoke(was, value);
            }
        }
    }

    private readonly System.Collections.Concurrent.ConcurrentQueue<(IncomingState State, DateTimeOffset At)> _history = new();

    /// <summary>When the migration began here.</summary>
    public DateTimeOffset BegunAt { get; } = DateTimeOffset.UtcNow;

    /// <summary>Every state the migration entered after <see cref="IncomingState.Receiving"/>, with when.</summary>
    public IReadOnlyList<(IncomingState State, DateTimeOffset At)> History => _history.ToArray();

    /// <summary>The source host, as it named itself in <c>Begin</c>.</summary>
    public string SourceHost { get; init; } = "";

    /// <summary>Called (under the migration's lock: keep it short) with the old and the new state at every change.</summary>
    internal Action<IncomingState, IncomingState>? StateChanged { get; set; }

    public ulong BytesReceived
    {
        get
        {
            lock (_lock)
            {
                return _images.BytesReceived;
            }
        }
    }

    public ulong MaxBytes => _maxBytes;

    public int RestoredPid { get; private set; }

    public string? Error { get; private set; }

    public int ChunksReceived
    {
        get
        {
            lock (_lock)
            {
                return _images.ChunksReceived;
            }
        }
    }

    /// <summary>The pages arriving on the page stream; null when pages travel inside the images.</summary>
    public IIncomingPages? Pages { get; internal set; }

    /// <summary>Room the page store made for the pages before they came (a cold migration's); 0 when none.</summary>
    public ulong ProvisionedBytes { get; internal set; }

    /// <summary>The page stream failed: the migration cannot restore.</summary>
    public void FailPages(string error)
    {
        lock (_lock)
        {
            if (State is IncomingState.Receiving or IncomingState.Restoring)
            {
                Error ??= $"page stream: {error}";
            }
        }
    }

    /// <summary>Where the parent image (pre-copied pages in address order) goes: beside the images directory.</summary>
    /// <summary>The user's CRIU options the source's dump used: the restore applies the same.</summary>
    public CriuFlags Criu { get; init; } = CriuFlags.None;

    /// <summary>cold or precopy, as the source began it.</summary>
    public string Mode { get; init; } = "precopy";

    /// <summary>Service addresses that come up on this host's service interface just before the restore.</summary>
    public IReadOnlyList<Engine.Network.ServiceAddress> ServiceAddresses { get; init; } = [];

    public string ParentImagesDir => Path.Combine(WorkDir, "parent-images");

    /// <summary>Where CRIU is, for the lazy fill process launched ahead (<see cref="LaunchLazyFill"/>); null: none is launched ahead.</summary>
    public CriuOptions? CriuOptions { get; init; }

    /// <summary>Pre-copy is over: write the pages held so far as a parent image, while the workload still runs.</summary>
    public void PrepareCutover(CancellationToken ct)
    {
        lock (_lock)
        {
            RequireState(IncomingState.Receiving);
        }

        if (Pages is null || (Pages.Error ?? Error) is not null)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"no usable page store: {Pages?.Error ?? Error ?? "none"}");
        }

        Pages.WriteParentImages(ParentImagesDir, ct);
        LaunchLazyFill(); // launched at Begin already; again only if that failed
    }

    /// <summary>
    /// A lazy restore (the default) will need its fill process: launched at Begin, so that its start runs while
    /// pre-copy does, not during the freeze. Does nothing without <see cref="CriuOptions"/> or when launched already.
    /// </summary>
    public void LaunchLazyFill()
    {
        if (CriuOptions is { } criu)
        {
            lock (_lock)
            {
                if (State == IncomingState.Receiving)
                {
                    _lazy.Launch(criu);
                }
            }
        }
    }

    /// <summary>Writes the streamed pages' images next to the received metadata (after the manifest was verified).</summary>
    public void ComposePages(CancellationToken ct)
    {
        lock (_lock)
        {
            RequireState(IncomingState.Restoring);
        }

        if (Pages is null)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, "the source streamed pages, but this migration has no page store");
        }

        if ((Pages.Error ?? Error) is { } problem)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"pages incomplete: {problem}");
        }

        if (Pages.RoundsCompleted == 0)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, "no page round was completed on the page stream");
        }

        Pages.ComposeImages(ImagesDir, ct);
    }

    /// <summary>Writes one chunk of an image file (see <see cref="ImageReceiver.Put"/>).</summary>
    public (ulong FileBytes, ulong TotalBytes) PutChunk(string name, ulong offset, ReadOnlySpan<byte> data, bool last)
    {
        lock (_lock)
        {
            RequireState(IncomingState.Receiving);
            return _images.Put(name, offset, data, last);
        }
    }

    /// <summary>Checks that exactly the manifest's files are held, complete, with matching sizes and hashes; then restoring may begin.</summary>
    public void VerifyManifest(IReadOnlyList<ImageFileInfo> manifest)
    {
        lock (_lock)
        {
            RequireState(IncomingState.Receiving);
            _images.Verify(manifest);
            State = IncomingState.Restoring;
        }
    }

    /// <summary>Restores the received images with CRIU, tree left stopped. Returns the root pid.</summary>
    public async Task<int> RestoreAsync(CriuClient criu, RestoreSpec spec, CancellationToken ct)
    {
        lock (_lock)
        {
            RequireState(IncomingState.Restoring);
        }

        if (_options.Faults.Contains(Faults.Restore))
        {
            LogFaultInjected(Id, Faults.Restore);
            // A real CRIU failure: the process tree image is damaged, so criu restore refuses it.
            File.WriteAllBytes(Path.Combine(ImagesDir, "pstree.img"), [0x19, 0x43, 0x56, 0x54, 0xde, 0xad, 0xbe, 0xef]);
        }

        var sw = Stopwatch.StartNew();
        FillProcess? daemon = null;
        try
        {
            if (spec.LazyPages)
            {
                if (Pages is null)
                {
                    throw new TargetRequestException(TargetError.FailedPrecondition, "a lazy restore needs the page store");
                }

                daemon = await _lazy.AcquireAsync(criu.Options, ct).ConfigureAwait(false);
                if (_options.Faults.Contains(Faults.KillLazyPages))
                {
                    // Before the restore: after it, a small tree's fill can be complete before any kill lands.
                    LogFaultInjected(Id, Faults.KillLazyPages);
                    await daemon.KillAsync().ConfigureAwait(false);
                }

                if (_lazy.Failure(daemon) is { } lost)
                {
                    LogLazyDaemonLostBeforeCommit(Id, 0, "restore", lost);
                    throw new TargetRequestException(TargetError.Internal, $"the lazy restore cannot start: {lost}; nothing was restored");
                }
            }

            int pid = daemon is null
                ? await criu.RestoreAsync(spec, null, ct).ConfigureAwait(false)
                : await RestoreWatchingAsync(criu, spec, daemon, ct).ConfigureAwait(false);
            if (daemon is not null)
            {
                await CheckLazyDaemonAsync(daemon, pid).ConfigureAwait(false);
            }

            lock (_lock)
            {
                RestoredPid = pid;
                _restoredTree = ProcessTree.Enumerate(pid);
                State = IncomingState.Restored;
                if (daemon is not null)
                {
                    _lazy.Attach(daemon, pid);
                    daemon = null;
                }
            }

            LogRestored(Id, pid, _restoredTree.Count, sw.ElapsedMilliseconds);
            return pid;
        }
        catch (Exception ex)
        {
            lock (_lock)
            {
                State = IncomingState.Failed;
                Error = ex.Message;
            }

            _lazy.DropStart();
            throw;
        }
        finally
        {
            if (daemon is not null)
            {
                await daemon.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// <c>criu restore --lazy-pages</c> while its daemon runs. A daemon that fails during the restore makes CRIU fail it
    /// too ("Failed sending restore finished indication"), but CRIU's own cleanup can then wait forever on the tasks it
    /// killed (a traced multi-threaded root is never reaped by its waitpid): the restore is stopped here instead, at once.
    /// </summary>
    private async Task<int> RestoreWatchingAsync(CriuClient criu, RestoreSpec spec, FillProcess daemon, CancellationToken ct)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var restoring = criu.RestoreAsync(spec, null, stop.Token);
        if (await Task.WhenAny(restoring, daemon.Exited).ConfigureAwait(false) == restoring || await daemon.Exited.ConfigureAwait(false) == FillServer.ExitFilled)
        {
            return await restoring.ConfigureAwait(false);
        }

        string why = _lazy.Failure(daemon) ?? $"criu lazy-pages (pid {daemon.Pid}) exited";
        LogLazyDaemonLostBeforeCommit(Id, 0, "restore in progress", why);
        await stop.CancelAsync().ConfigureAwait(false);
        try
        {
            // It may have finished all the same: that copy has no memory source either.
            int restored = await restoring.ConfigureAwait(false);
            ProcessTree.KillAll(ProcessTree.Enumerate(restored));
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or CriuException)
        {
            // Expected: the restore was stopped (or failed on its own); the daemon's failure is the reason given.
        }

        throw new TargetRequestException(TargetError.Internal, $"the lazy restore failed: {why}; the restore was stopped");
    }

    /// <summary>
    /// A lazy restore is only as good as its daemon: the restored tree has no memory but what <c>criu lazy-pages</c>
    /// gives it. If the daemon is gone (or cannot get pages) when the restore is done, the tree is killed and the
    /// restore fails, so the source refuses its post-dump and resumes its own copy.
    /// </summary>
    private async Task CheckLazyDaemonAsync(FillProcess daemon, int pid)
    {
        if (_lazy.Failure(daemon) is { } why)
        {
            var tree = ProcessTree.Enumerate(pid);
            ProcessTree.KillAll(tree);
            LogLazyDaemonLostBeforeCommit(Id, pid, "restore", why);
            throw new TargetRequestException(TargetError.Internal,
                $"restored pid {pid} cannot get its memory: {why}; the restored copy was killed");
        }
    }

    /// <summary>
    /// Starts <c>criu lazy-pages</c> for a lazy restore ahead of it, while the page images are composed (it reads only
    /// the process tree image until the restore hands it the tasks): <see cref="RestoreAsync"/> takes it over.
    /// </summary>
    public void BeginLazyPages(CriuClient criu, CancellationToken ct)
    {
        if (Pages is not null)
        {
            _lazy.BeginStart(criu.Options, ct);
        }
    }

    /// <summary>
    /// Resumes the restored (stopped) tree. Idempotent: a repeated commit answers the same. A lazy restore whose daemon
    /// has failed is not resumed (its memory would read as zeros): the tree is killed and the commit refused with
    /// <see cref="TargetError.DataLoss"/>, as is every later commit of it.
    /// </summary>
    public (int Pid, int Resumed) Commit()
    {
        lock (_lock)
        {
            if (State == IncomingState.Committed)
            {
                return (RestoredPid, 0);
            }

            if (State == IncomingState.Failed && RestoredPid > 0)
            {
                throw new TargetRequestException(TargetError.DataLoss, $"migration {Id} failed after its restore, and its restored copy is gone: {Error}");
            }

            RequireState(IncomingState.Restored);
            if (_lazy.Failure() is { } why)
            {
                var restored = ProcessTree.Enumerate(RestoredPid);
                ProcessTree.KillAll(restored.Count > 0 ? restored : _restoredTree);
                State = IncomingState.Failed;
                Error = $"restored pid {RestoredPid} was not resumed: {why}; the restored copy was killed";
                LogLazyDaemonLostBeforeCommit(Id, RestoredPid, "commit", why);
                _lazy.Stop();
                DeleteImages();
                throw new TargetRequestException(TargetError.DataLoss, Error);
            }

            // Re-read the tree: the tasks are stopped, so it is the tree CRIU restored.
            var tree = ProcessTree.Enumerate(RestoredPid);
            int n = ProcessTree.ContinueAll(tree);
            if (n == 0)
            {
                State = IncomingState.Failed;
                Error = $"restored tree {RestoredPid} is gone";
                throw new TargetRequestException(TargetError.FailedPrecondition, Error);
            }

            State = IncomingState.Committed;
            LogCommitted(Id, RestoredPid, n);
            if (_lazy.Serving)
            {
                // The images feed the lazy pages until every one is in: removed when the daemon is done.
                _lazy.FinishInBackground(RestoredPid, LazyFillFailed, () =>
                {
                    TargetMetrics.LazyFillEnded(this);
                    lock (_lock)
                    {
                        DeleteImages();
                    }
                });
            }
            else
            {
                DeleteImages();
            }

            return (RestoredPid, n);
        }
    }

    /// <summary>
    /// After the commit the fill failed: pages it did not fill read as zeros now, so the tree must not run on with them.
    /// It is killed (what ran in between cannot be undone), and the migration's error says why.
    /// </summary>
    private void LazyFillFailed(string why)
    {
        lock (_lock)
        {
            var tree = ProcessTree.Enumerate(RestoredPid);
            int killed = ProcessTree.KillAll(tree.Count > 0 ? tree : _restoredTree);
            Error = $"the lazy fill of restored pid {RestoredPid} failed after the commit: {why}; {killed} restored tasks killed";
            LogLazyFillFailedAfterCommit(Id, RestoredPid, killed, why);
        }
    }

    /// <summary>After a lazy restore's commit: completes when every lazy page was filled (true) or the fill failed (false).</summary>
    public Task<bool>? LazyPagesDone => _lazy.Done;

    /// <summary>
    /// The lazy fill of the restored tree as it is now (pages filled, of how many, its error), from the fill process's
    /// state file; null when no fill runs for it. The API fill metrics are to be built on.
    /// </summary>
    public LazyFillProgress? LazyFill => _lazy.Progress;

    /// <summary>Discards the migration: kills a restored tree (never a committed one) and removes the images.</summary>
    public bool Abort(string reason)
    {
        lock (_lock)
        {
            if (State == IncomingState.Committed)
            {
                throw new TargetRequestException(TargetError.FailedPrecondition, "migration is committed: its tree runs here and is not killed");
            }

            bool killed = false;
            if (State == IncomingState.Restored && RestoredPid > 0)
            {
                var tree = ProcessTree.Enumerate(RestoredPid);
                killed = ProcessTree.KillAll(tree.Count > 0 ? tree : _restoredTree) > 0;
            }

            State = IncomingState.Aborted;
            Error ??= reason;
            LogAborted(Id, reason, killed);
            _lazy.DropStart();
            _lazy.Stop();
            DeleteImages();
            Pages?.Dispose(); // the page store's files: nothing will read them (a stream still writing fails)
            return killed;
        }
    }

    private void DeleteImages()
    {
        _images.Dispose();
        Pages?.Dispose();

        try
        {
            // A lazy fill that ended removed them itself.
            if (Directory.Exists(ImagesDir))
            {
                Directory.Delete(ImagesDir, recursive: true);
            }

            if (Directory.Exists(ParentImagesDir))
            {
                Directory.Delete(ParentImagesDir, recursive: true);
            }
        }
        catch (IOException ex)
        {
            // Logs stay for diagnosis; leftover images cost space only.
            LogCleanupFailed(ImagesDir, ex.Message);
        }
    }

    private void RequireState(IncomingState expected)
    {
        if (State != expected)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"migration {Id} is {State.ToString().ToLowerInvariant()}, not {expected.ToString().ToLowerInvariant()}");
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _images.Dispose();
            if (State == IncomingState.Committed && _lazy.Serving)
            {
                // A committed tree still being filled: the fill process owns its images and page data until the last
                // page is in, and goes on without this agent. The store's files must stay.
                _lazy.Detach(RestoredPid);
                return;
            }

            _lazy.DropStart();
            _lazy.Stop();
            Pages?.Dispose();
        }
    }

    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "migration {Id}: restored as pid {Pid} ({Tasks} tasks, stopped) in {Ms} ms")]
    private partial void LogRestored(string id, int pid, int tasks, long ms);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "migration {Id}: committed, pid {Pid} resumed ({Tasks} tasks)")]
    private partial void LogCommitted(string id, int pid, int tasks);

    [LoggerMessage(EventId = 302, Level = LogLevel.Warning, Message = "migration {Id}: aborted ({Reason}); restored tree killed: {Killed}")]
    private partial void LogAborted(string id, string reason, bool killed);

    [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "fault injected in migration {Id}: {Fault}")]
    private partial void LogFaultInjected(string id, string fault);

    [LoggerMessage(EventId = 304, Level = LogLevel.Warning, Message = "could not remove {Dir}: {Message}")]
    private partial void LogCleanupFailed(string dir, string message);

    [LoggerMessage(EventId = 311, Level = LogLevel.Error, Message = "migration {Id}: the lazy-pages daemon of restored pid {Pid} failed before the commit (at {Step}): {Why}; the restored copy is killed and not resumed")]
    private partial void LogLazyDaemonLostBeforeCommit(string id, int pid, string step, string why);

    [LoggerMessage(EventId = 312, Level = LogLevel.Error, Message = "migration {Id}: the lazy fill of restored pid {Pid} failed after the commit: {Why}; its unfilled pages would read as zeros, so its {Killed} tasks were killed")]
    private partial void LogLazyFillFailedAfterCommit(string id, int pid, int killed, string why);
}

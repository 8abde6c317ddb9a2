using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.PageServer.Store;

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
    private readonly Dictionary<string, ReceivingFile> _files = new(StringComparer.Ordinal);
    private readonly TargetOptions _options;
    private readonly ulong _maxBytes;
    private readonly ILogger _logger;
    private IReadOnlyList<int> _restoredTree = [];
    private LazyPagesDaemon? _lazyPages;
    private Task<string?>? _lazyServing;
    private Task<LazyPagesDaemon>? _lazyStarting;

    /// <summary>How long stopping the agent waits for a lazy fill in progress.</summary>
    private static readonly TimeSpan LazyDrainTimeout = TimeSpan.FromMinutes(5);

    internal IncomingMigration(string id, string workDir, ulong maxBytes, TargetOptions options, ILogger logger)
    {
        Id = id;
        WorkDir = workDir;
        ImagesDir = Path.Combine(workDir, "images");
        Directory.CreateDirectory(ImagesDir);
        _maxBytes = maxBytes;
        _options = options;
        _logger = logger;
    }

    public string Id { get; }

    public string WorkDir { get; }

    public string ImagesDir { get; }

    public IncomingState State { get; private set; }

    public ulong BytesReceived { get; private set; }

    public ulong MaxBytes => _maxBytes;

    public int RestoredPid { get; private set; }

    public string? Error { get; private set; }

    public int ChunksReceived { get; private set; }

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
    public string ParentImagesDir => Path.Combine(WorkDir, "parent-images");

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

    /// <summary>Writes one chunk. Offsets must be sequential per file; a completed file takes no more data.</summary>
    public (ulong FileBytes, ulong TotalBytes) PutChunk(string name, ulong offset, ReadOnlySpan<byte> data, bool last)
    {
        if (!ImageName.IsValid(name))
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"image name '{Printable(name)}' is not a plain file name");
        }

        if (data.Length > _options.MaxChunkBytes)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"chunk of {data.Length} bytes exceeds {_options.MaxChunkBytes}");
        }

        lock (_lock)
        {
            RequireState(IncomingState.Receiving);
            _files.TryGetValue(name, out var file);
            if (file is { Complete: true })
            {
                throw new TargetRequestException(TargetError.FailedPrecondition, $"image {name} is already complete");
            }

            // Every check before anything touches the disk: a refused chunk leaves no trace.
            ulong expected = file?.Length ?? 0;
            if (offset != expected)
            {
                throw new TargetRequestException(TargetError.InvalidArgument, $"image {name}: chunk at offset {offset}, expected {expected}");
            }

            if (BytesReceived + (ulong)data.Length > _maxBytes)
            {
                throw new TargetRequestException(TargetError.ResourceExhausted,
                    $"images exceed the {_maxBytes} bytes this agent can hold for one migration (free space less reserve)");
            }

            if (file is null)
            {
                if (_files.Count >= _options.MaxImageFiles)
                {
                    throw new TargetRequestException(TargetError.ResourceExhausted, $"more than {_options.MaxImageFiles} image files");
                }

                file = new ReceivingFile(Path.Combine(ImagesDir, name));
                _files.Add(name, file);
            }

            file.Write(data);
            BytesReceived += (ulong)data.Length;
            ChunksReceived++;
            if (last)
            {
                file.Finish();
            }

            return (file.Length, BytesReceived);
        }
    }

    /// <summary>Checks that exactly the manifest's files are held, complete, with matching sizes and hashes.</summary>
    public void VerifyManifest(IReadOnlyList<ImageFileInfo> manifest)
    {
        lock (_lock)
        {
            RequireState(IncomingState.Receiving);
            var distinct = new HashSet<string>(manifest.Select(m => m.Name), StringComparer.Ordinal);
            if (distinct.Count != manifest.Count)
            {
                throw new TargetRequestException(TargetError.InvalidArgument, "manifest lists a file more than once");
            }

            if (manifest.Count != _files.Count)
            {
                throw new TargetRequestException(TargetError.FailedPrecondition, $"manifest lists {manifest.Count} files, {_files.Count} were received");
            }

            foreach (var m in manifest)
            {
                if (!ImageName.IsValid(m.Name) || !_files.TryGetValue(m.Name, out var f))
                {
                    throw new TargetRequestException(TargetError.FailedPrecondition, $"manifest file '{Printable(m.Name)}' was not received");
                }

                if (!f.Complete || f.Length != m.Size)
                {
                    throw new TargetRequestException(TargetError.FailedPrecondition, $"image {m.Name}: {f.Length} bytes received{(f.Complete ? "" : " (incomplete)")}, manifest says {m.Size}");
                }

                if (!CryptographicOperations.FixedTimeEquals(f.Sha256, m.Sha256))
                {
                    throw new TargetRequestException(TargetError.DataLoss, $"image {m.Name}: SHA-256 differs from the manifest");
                }
            }

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
        LazyPagesDaemon? daemon = null;
        try
        {
            if (spec.LazyPages)
            {
                if (Pages is null)
                {
                    throw new TargetRequestException(TargetError.FailedPrecondition, "a lazy restore needs the page store");
                }

                int marked = MarkLazyRuns();
                var starting = _lazyStarting ?? StartLazyPagesAsync(criu, Pages, ct);
                _lazyStarting = null;
                daemon = await starting.ConfigureAwait(false);
                LogLazyDaemon(Id, daemon.Pid, marked);
            }

            int pid = await criu.RestoreAsync(spec, null, ct).ConfigureAwait(false);
            lock (_lock)
            {
                RestoredPid = pid;
                _restoredTree = ProcessTree.Enumerate(pid);
                State = IncomingState.Restored;
                _lazyPages = daemon;
                daemon = null;
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

            DropLazyStart();
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
    /// Starts <c>criu lazy-pages</c> for a lazy restore ahead of it, while the page images are composed (it reads only
    /// the process tree image until the restore hands it the tasks): <see cref="RestoreAsync"/> takes it over.
    /// </summary>
    public void BeginLazyPages(CriuClient criu, CancellationToken ct)
    {
        if (Pages is { } pages && _lazyStarting is null)
        {
            _lazyStarting = StartLazyPagesAsync(criu, pages, ct);
        }
    }

    /// <summary>A daemon started by <see cref="BeginLazyPages"/> that no restore took: stopped.</summary>
    private void DropLazyStart()
    {
        if (Interlocked.Exchange(ref _lazyStarting, null) is { } starting)
        {
            _ = starting.ContinueWith(t => t.Result.DisposeAsync().AsTask(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }
    }

    /// <summary>
    /// Starts <c>criu lazy-pages</c> with one end of a socket pair as its page server connection; the other end is
    /// served from the page store until the daemon closes it (every lazy page filled).
    /// </summary>
    private async Task<LazyPagesDaemon> StartLazyPagesAsync(CriuClient criu, IIncomingPages pages, CancellationToken ct)
    {
        var (daemon, ours) = await LazyPagesDaemon.StartServedAsync(criu.Options, ImagesDir, WorkDir, "lazy-pages.log", TimeSpan.FromSeconds(30), ct)
            .ConfigureAwait(false);
        try
        {
            var serving = pages.ServeLazyPagesAsync(ours, CancellationToken.None);
            _lazyServing = serving.ContinueWith(t =>
            {
                string? error = t.IsFaulted ? t.Exception!.GetBaseException().Message : t.Result;
                if (error is not null)
                {
                    LogLazyServeFailed(Id, error);
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

    /// <summary>
    /// Marks lazy, in each composed <c>pagemap-VPID.img</c>, the runs the source's CRIU left lazy (its
    /// <c>lazy-pagemap-VPID.img</c>): <c>criu lazy-pages</c> fills those after the restore, which then reads only the rest.
    /// Returns the number of pages marked.
    /// </summary>
    private int MarkLazyRuns()
    {
        int marked = 0;
        foreach (var lazyPath in Directory.EnumerateFiles(ImagesDir, PagemapImage.LazyMapPrefix + "*.img"))
        {
            var name = Path.GetFileName(lazyPath);
            var vpidText = name.AsSpan(PagemapImage.LazyMapPrefix.Length, name.Length - PagemapImage.LazyMapPrefix.Length - 4);
            if (!int.TryParse(vpidText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int vpid) || vpid <= 0)
            {
                throw new TargetRequestException(TargetError.InvalidArgument, $"lazy map '{Printable(name)}' does not name a task");
            }

            var pagemapPath = Path.Combine(ImagesDir, $"pagemap-{vpid}.img");
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

    /// <summary>Resumes the restored (stopped) tree. Idempotent: a repeated commit answers the same.</summary>
    public (int Pid, int Resumed) Commit()
    {
        lock (_lock)
        {
            if (State == IncomingState.Committed)
            {
                return (RestoredPid, 0);
            }

            RequireState(IncomingState.Restored);
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
            if (_lazyPages is { } daemon)
            {
                // The images feed the lazy pages until every one is in: removed when the daemon is done.
                LazyPagesDone = FinishLazyPagesAsync(daemon);
            }
            else
            {
                DeleteImages();
            }

            return (RestoredPid, n);
        }
    }

    /// <summary>After a lazy restore's commit: completes when every lazy page was filled (true) or the daemon failed (false).</summary>
    public Task<bool>? LazyPagesDone { get; private set; }

    private async Task<bool> FinishLazyPagesAsync(LazyPagesDaemon daemon)
    {
        int code = await daemon.Exited.ConfigureAwait(false);
        string? served = _lazyServing is { } serving ? await serving.ConfigureAwait(false) : null;
        bool ok = code == 0 && served is null;
        if (ok)
        {
            LogLazyDone(Id, daemon.Elapsed.TotalMilliseconds);
        }
        else
        {
            // Pages it did not fill read as zeros in the workload now: say so loudly, with CRIU's reasons.
            LogLazyFailed(Id, RestoredPid, code, daemon.LogPath, string.Join(" | ", CriuLog.ReadErrors(daemon.LogPath)));
        }

        lock (_lock)
        {
            _lazyPages = null;
            DeleteImages();
        }

        await daemon.DisposeAsync().ConfigureAwait(false);
        return ok;
    }

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
            DropLazyStart();
            StopLazyPages();
            DeleteImages();
            return killed;
        }
    }

    private void DeleteImages()
    {
        foreach (var f in _files.Values)
        {
            f.Dispose();
        }

        Pages?.Dispose();

        try
        {
            Directory.Delete(ImagesDir, recursive: true);
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

    private static string Printable(string? s) =>
        s is null ? "" : new string(s.Take(64).Select(c => char.IsControl(c) ? '?' : c).ToArray());

    /// <summary>Kills the lazy-pages daemon of a restore that will not run (its tree was killed, or never committed).</summary>
    private void StopLazyPages()
    {
        if (_lazyPages is { } daemon)
        {
            _lazyPages = null;
            _ = daemon.DisposeAsync().AsTask();
        }
    }

    public void Dispose()
    {
        // A committed tree still being filled by criu lazy-pages needs the store until the last page is in: the agent
        // stopping now would cost the workload its memory. Wait (bounded) for the fill to end.
        if (LazyPagesDone is { IsCompleted: false } filling)
        {
            LogLazyDrain(Id, RestoredPid);
            if (!filling.Wait(LazyDrainTimeout))
            {
                LogLazyDrainTimedOut(Id, RestoredPid, LazyDrainTimeout.TotalSeconds);
            }
        }

        lock (_lock)
        {
            if (State != IncomingState.Committed)
            {
                DropLazyStart();
                StopLazyPages();
            }

            foreach (var f in _files.Values)
            {
                f.Dispose();
            }

            Pages?.Dispose();
        }
    }

    private sealed class ReceivingFile(string path) : IDisposable
    {
        private FileStream? _stream = new(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public ulong Length { get; private set; }

        public bool Complete { get; private set; }

        public byte[] Sha256 { get; private set; } = [];

        public void Write(ReadOnlySpan<byte> data)
        {
            _stream!.Write(data);
            _hash.AppendData(data);
            Length += (ulong)data.Length;
        }

        public void Finish()
        {
            _stream!.Flush(flushToDisk: true);
            _stream.Dispose();
            _stream = null;
            Sha256 = _hash.GetHashAndReset();
            Complete = true;
        }

        public void Dispose()
        {
            _stream?.Dispose();
            _stream = null;
            _hash.Dispose();
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

    [LoggerMessage(EventId = 305, Level = LogLevel.Information, Message = "migration {Id}: criu lazy-pages (pid {Pid}) serves {Pages} lazy pages from the images")]
    private partial void LogLazyDaemon(string id, int pid, int pages);

    [LoggerMessage(EventId = 306, Level = LogLevel.Information, Message = "migration {Id}: every lazy page filled, {Ms:0} ms after the daemon started")]
    private partial void LogLazyDone(string id, double ms);

    [LoggerMessage(EventId = 307, Level = LogLevel.Error, Message = "migration {Id}: criu lazy-pages failed (exit {Code}) while restored pid {Pid} runs; pages it did not fill are lost to the workload. Log {Log}: {Errors}")]
    private partial void LogLazyFailed(string id, int pid, int code, string log, string errors);

    [LoggerMessage(EventId = 308, Level = LogLevel.Error, Message = "migration {Id}: serving lazy pages to criu lazy-pages failed: {Error}")]
    private partial void LogLazyServeFailed(string id, string error);

    [LoggerMessage(EventId = 309, Level = LogLevel.Warning, Message = "migration {Id}: waiting for criu lazy-pages to fill restored pid {Pid} before stopping")]
    private partial void LogLazyDrain(string id, int pid);

    [LoggerMessage(EventId = 310, Level = LogLevel.Error, Message = "migration {Id}: restored pid {Pid} still not filled after {Seconds:0} s; stopping anyway, its unfilled pages are lost")]
    private partial void LogLazyDrainTimedOut(string id, int pid, double seconds);

    [LoggerMessage(EventId = 304, Level = LogLevel.Warning, Message = "could not remove {Dir}: {Message}")]
    private partial void LogCleanupFailed(string dir, string message);
}

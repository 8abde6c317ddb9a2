using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Network;
using Migration.Engine.Processes;
using Migration.PageServer.Store;
using Migration.Target.LazyFill;

namespace Migration.Target.Incoming;

/// <summary>
/// The target side of migrations, independent of the API that carries it: preflight, the table of
/// incoming migrations and their work directories, restore, commit and abort.
/// </summary>
public sealed partial class TargetAgent(CriuClient criu, TargetOptions options, ILoggerFactory loggers,
    Func<string, ulong, IIncomingPages>? pagesFactory = null) : IDisposable
{
    /// <summary>Does this agent take page streams (a page store per migration)?</summary>
    public bool AcceptsPageStreams => pagesFactory is not null;

    private readonly ConcurrentDictionary<string, IncomingMigration> _migrations = new(StringComparer.Ordinal);
    private readonly ILogger _logger = loggers.CreateLogger<TargetAgent>();
    private readonly CriuOptions _criuOptions = criu.Options;

    public TargetOptions Options => options;

    public static string Version => Engine.BuildInfo.Version;

    /// <summary>What a migration directory holds besides CRIU's logs: images, parent images, the page store.</summary>
    private static readonly string[] DataDirs = ["images", "parent-images", "pages"];

    /// <summary>
    /// At start, before serving: a migration directory left by an earlier run of this agent (killed, crashed) belongs
    /// to no migration any more. No migration outlives the agent that held it, except a lazy fill: its source resumed
    /// or was told the target failed, so its pages and images are removed and its CRIU logs kept for diagnosis. Returns
    /// how many. A restored tree it may have left stopped is not touched: whether the source copy still exists is the
    /// source's to say (it reports the pid to resume by hand).
    /// <para>A lazy fill still running (its state file names a live fill process) is not swept: it owns its images
    /// until the last page is in, and removes them itself. It is watched (<see cref="AdoptedFills"/>) and whatever it
    /// leaves is swept once it has exited. A fill process that died before its verdict leaves a restored tree that
    /// can no longer get its memory: that tree is killed here, loudly.</para>
    /// </summary>
    public int SweepLeftovers()
    {
        if (!Directory.Exists(options.WorkRoot))
        {
            return 0;
        }

        int swept = 0;
        foreach (var dir in Directory.EnumerateDirectories(options.WorkRoot))
        {
            string name = Path.GetFileName(dir);
            if (name.StartsWith('.'))
            {
                TryDelete(dir); // a preflight's scratch directory
                continue;
            }

            if (_migrations.ContainsKey(name))
            {
                continue;
            }

            var fill = ReadFillState(dir);
            if (fill is { Ended: false } && ProcessIdentity.IsSame(fill.ServerPid, fill.ServerStart))
            {
                LogFillAdopted(name, fill.ServerPid, fill.TreePid, fill.PagesFilled, fill.LazyPages);
                _adopted.Add(WatchAdoptedFillAsync(dir, fill, _stopping.Token));
                continue;
            }

            if (SweepDirectory(dir, fill))
            {
                swept++;
            }
        }

        return swept;
    }

    /// <summary>Lazy fills left running by an earlier run of this agent that it watches until they exit (tests wait on them).</summary>
    public IReadOnlyCollection<Task> AdoptedFills => _adopted.ToArray();

    private readonly System.Collections.Concurrent.ConcurrentBag<Task> _adopted = [];
    private readonly CancellationTokenSource _stopping = new();

    /// <summary>How often an adopted fill is looked at.</summary>
    private static readonly TimeSpan AdoptedFillPoll = TimeSpan.FromMilliseconds(250);

    /// <summary>Waits for an adopted fill's process to exit, then sweeps what it left (and kills a tree it left unfilled).</summary>
    private async Task WatchAdoptedFillAsync(string dir, FillState fill, CancellationToken ct)
    {
        try
        {
            while (ProcessIdentity.IsSame(fill.ServerPid, fill.ServerStart))
            {
                await Task.Delay(AdoptedFillPoll, ct).ConfigureAwait(false);
            }

            SweepDirectory(dir, ReadFillState(dir) ?? fill);
        }
        catch (OperationCanceledException)
        {
            // This agent stops: the fill goes on, and the next agent adopts it again.
        }
    }

    /// <summary>
    /// Removes a dead migration's data (and its fill's state file), killing a restored tree whose fill died before its
    /// verdict. Returns whether there was data to remove.
    /// </summary>
    private bool SweepDirectory(string dir, FillState? fill)
    {
        string name = Path.GetFileName(dir);
        if (fill is { Ended: false, TreePid: > 0 } && ProcessIdentity.IsSame(fill.TreePid, fill.TreeStart))
        {
            // Its fill died with pages still unfilled: they read as zeros, so the tree must not run on.
            int killed = ProcessTree.KillAll(ProcessTree.Enumerate(fill.TreePid));
            LogFillDiedTreeKilled(name, fill.ServerPid, fill.TreePid, killed);
        }
        else if (fill is { Phase: FillPhase.Failed, Error: { } error })
        {
            LogFillFailedUnwatched(name, error);
        }

        var data = DataDirs.Select(d => Path.Combine(dir, d)).Where(Directory.Exists).ToArray();
        long bytes = data.Sum(d => new DirectoryInfo(d).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length));
        foreach (var d in data)
        {
            TryDelete(d);
        }

        TryDeleteFile(Path.Combine(dir, FillState.FileName));
        if (data.Length > 0)
        {
            LogSwept(name, bytes >> 20);
        }

        return data.Length > 0;
    }

    private FillState? ReadFillState(string dir)
    {
        try
        {
            return FillState.Read(dir);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            LogFillStateUnreadable(Path.GetFileName(dir), ex.Message);
            return null;
        }
    }

    private void TryDeleteFile(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A few hundred bytes; the next sweep tries again.
            LogCleanupFailed(path, ex.Message);
        }
    }

    public async Task<TargetPreflight> PreflightAsync(SourcePreflight request, CancellationToken ct)
    {
        var checks = new List<PreflightCheckResult>();
        CriuVersionInfo? version = null;
        Directory.CreateDirectory(options.WorkRoot);
        // Preflight changes nothing: its scratch directory is removed before answering.
        var scratch = Path.Combine(options.WorkRoot, $".preflight-{Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6)).ToLowerInvariant()}");
        Directory.CreateDirectory(scratch);
        try
        {
            try
            {
                version = await criu.GetVersionAsync(ct).ConfigureAwait(false);
                bool ok = version.AsVersion >= CriuOptions.MinimumVersion && version.AsVersion >= new Version(request.Criu.Major, request.Criu.Minor);
                checks.Add(new PreflightCheckResult("criu-version", ok,
                    ok ? $"target {version}, source {request.Criu}"
                       : $"target CRIU {version} cannot restore images of source CRIU {request.Criu} (need >= {CriuOptions.MinimumVersion} and >= the source's)"));
            }
            catch (CriuException ex)
            {
                checks.Add(new PreflightCheckResult("criu-version", false, ex.Message));
            }

            await RunCheckAsync(checks, "criu-check", () => criu.CheckAsync(scratch, ct), "criu check passed").ConfigureAwait(false);

            if (request.CpuInfoImage.Length is 0 or > 1 << 20)
            {
                checks.Add(new PreflightCheckResult("cpuinfo", false, $"source sent a cpuinfo image of {request.CpuInfoImage.Length} bytes"));
            }
            else
            {
                await File.WriteAllBytesAsync(Path.Combine(scratch, "cpuinfo.img"), request.CpuInfoImage, ct).ConfigureAwait(false);
                await RunCheckAsync(checks, "cpuinfo", () => criu.CpuInfoCheckAsync(scratch, ct), "source CPU features are available here").ConfigureAwait(false);
            }

            ulong free = FreeBytes();
            ulong usable = free > options.ReserveBytes ? free - options.ReserveBytes : 0;
            bool spaceOk = request.BytesNeeded <= usable;
            checks.Add(new PreflightCheckResult("disk", spaceOk,
                $"{request.BytesNeeded >> 20} MiB needed, {usable >> 20} MiB usable in {options.WorkRoot} ({options.ReserveBytes >> 20} MiB reserved)"));

            bool modeOk = request.Mode is "cold" or "precopy";
            checks.Add(new PreflightCheckResult("mode", modeOk, modeOk ? request.Mode : $"mode '{request.Mode}' is not supported by this agent"));

            int active = _migrations.Values.Count(m => m.State is IncomingState.Receiving or IncomingState.Restoring);
            bool slotOk = active < options.MaxConcurrentMigrations;
            checks.Add(new PreflightCheckResult("capacity", slotOk, $"{active} of {options.MaxConcurrentMigrations} migrations in progress"));

            bool allOk = checks.All(c => c.Ok);
            LogPreflight(request.SourceHost, allOk, string.Join("; ", checks.Where(c => !c.Ok).Select(c => $"{c.Name}: {c.Detail}")));
            return new TargetPreflight(allOk, Version, Environment.MachineName, version, free, checks);
        }
        finally
        {
            TryDelete(scratch);
        }
    }

    /// <summary>
    /// Creates a migration and its work directory (and page store). For a cold one, whose every page is written here
    /// while the source tree is frozen, the store first makes room for the pages of <paramref name="tasks"/> (see
    /// <see cref="IIncomingPages.Provision"/>), within <see cref="TargetOptions.ProvisionMaxBytes"/>, half the memory
    /// available, half the usable disk and <see cref="TargetOptions.ProvisionTimeLimit"/>: the source waits for this
    /// answer before it freezes anything.
    /// </summary>
    public IncomingMigration Begin(string sourceHost, int sourcePid, ulong bytesExpected, string mode, IReadOnlyList<TaskMemory> tasks, CriuFlags? criu = null,
        IReadOnlyList<ServiceAddress>? addresses = null)
    {
        addresses ??= [];
        if (addresses.Count > 0 && options.ServiceInterface is null && options.AddressHook is null)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition,
                $"service address {string.Join(", ", addresses)} cannot come up here: this agent has no service interface (start it with --service-interface IFACE, or --address-hook)");
        }

        if (addresses.Count > 0 && options.AddressHook is null && !AddressMover.InterfaceExists(options.ServiceInterface!))
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"service interface {options.ServiceInterface} does not exist on this host");
        }

        int active = _migrations.Values.Count(m => m.State is IncomingState.Receiving or IncomingState.Restoring);
        if (active >= options.MaxConcurrentMigrations)
        {
            throw new TargetRequestException(TargetError.ResourceExhausted, $"{active} migrations already in progress");
        }

        ulong free = FreeBytes();
        ulong usable = free > options.ReserveBytes ? free - options.ReserveBytes : 0;
        if (bytesExpected > usable)
        {
            throw new TargetRequestException(TargetError.ResourceExhausted, $"{bytesExpected} bytes expected, {usable} usable");
        }

        var id = $"{DateTime.UtcNow:yyyyMMddHHmmss}-{Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4)).ToLowerInvariant()}";
        var dir = Path.Combine(options.WorkRoot, id);
        Directory.CreateDirectory(dir);
        var m = new IncomingMigration(id, dir, usable, options, loggers.CreateLogger<IncomingMigration>())
        {
            Criu = criu ?? CriuFlags.None,
            ServiceAddresses = addresses,
            Mode = mode,
            SourceHost = sourceHost,
            // A live migration with streamed pages restores lazily by default: its fill process is launched now, not in the freeze.
            CriuOptions = mode == "precopy" && pagesFactory is not null ? _criuOptions : null,
        };
        if (pagesFactory is not null)
        {
            m.Pages = pagesFactory(Path.Combine(dir, "pages"), usable);
            if (mode == "cold" && tasks.Count > 0 && options.ProvisionMaxBytes > 0)
            {
                long start = System.Diagnostics.Stopwatch.GetTimestamp();
                long budget = (long)Math.Min(Math.Min(options.ProvisionMaxBytes, MemAvailableBytes() / 2), Math.Min(usable / 2, long.MaxValue));
                m.ProvisionedBytes = (ulong)m.Pages.Provision(tasks, budget, start + (long)(options.ProvisionTimeLimit.TotalSeconds * System.Diagnostics.Stopwatch.Frequency));
                LogProvisioned(id, m.ProvisionedBytes >> 20, tasks.Count, budget >> 20, System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
        }

        TargetMetrics.Track(m);
        _migrations[id] = m;
        ForgetOldest();
        m.LaunchLazyFill();
        LogBegun(id, sourceHost, sourcePid, dir);
        return m;
    }

    /// <summary>Ended migrations remembered (for GetMigration, the dashboard): the oldest ended one is forgotten past this.</summary>
    public const int MaxKept = 50;

    /// <summary>
    /// Forgets the oldest ended migrations past <see cref="MaxKept"/> and frees what they still hold (their page
    /// store's index, image receiver, progress): without it an agent's memory grew with every migration it received
    /// (the soak: ~0.8 MiB a hop). A migration still receiving, restoring, restored, or committed with its lazy fill
    /// running is never forgotten.
    /// </summary>
    private void ForgetOldest()
    {
        var ended = _migrations.Values.Where(Ended).OrderBy(m => m.BegunAt).ToArray();
        foreach (var old in ended.Take(Math.Max(0, ended.Length - MaxKept)))
        {
            if (_migrations.TryRemove(old.Id, out var gone))
            {
                gone.Dispose();
            }
        }

        static bool Ended(IncomingMigration m) => m.State is IncomingState.Aborted or IncomingState.Failed
            || (m.State == IncomingState.Committed && m.LazyPagesDone is null or { IsCompleted: true });
    }

    public IncomingMigration Get(string id) =>
        id.Length <= 64 && _migrations.TryGetValue(id, out var m)
            ? m
            : throw new TargetRequestException(TargetError.NotFound, $"no migration '{new string(id.Take(64).Where(c => !char.IsControl(c)).ToArray())}' on this agent");

    public async Task<int> RestoreAsync(string id, IReadOnlyList<ImageFileInfo> manifest, bool pagesStreamed, bool lazyPages, CancellationToken ct)
    {
        var m = Get(id);
        long restoreStarted = System.Diagnostics.Stopwatch.GetTimestamp();
        m.VerifyManifest(manifest);
        if (lazyPages && pagesStreamed)
        {
            // criu lazy-pages takes ~0.1 s to start: it does while the page images are composed.
            m.BeginLazyPages(criu, ct);
        }

        if (pagesStreamed)
        {
            try
            {
                m.ComposePages(ct);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException or UnauthorizedAccessException)
            {
                m.Abort($"composing page images failed: {ex.Message}");
                throw new TargetRequestException(TargetError.Internal, $"composing page images failed: {ex.Message}");
            }
        }

        if (lazyPages && !pagesStreamed)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, "a lazy restore needs streamed pages (the store composes its images)");
        }

        var spec = new RestoreSpec { ImagesDir = m.ImagesDir, WorkDir = m.WorkDir, LeaveStopped = true, LazyPages = lazyPages, Flags = m.Criu };
        // The service addresses come up before the restore binds the tree's sockets to them, and go if it fails.
        // Until the restore has recreated the tree's sockets, packets to them are dropped here (not answered with a
        // reset); the neighbours are told only once they are there.
        var up = new List<ServiceAddress>();
        bool locked = false;
        try
        {
            if (m.ServiceAddresses.Count > 0)
            {
                await AddressLock.LockAsync(m.Id, m.ServiceAddresses, ct).ConfigureAwait(false);
                locked = true;
            }

            foreach (var a in m.ServiceAddresses)
            {
                await _mover.UpAsync(a, options.ServiceInterface ?? "-", ct, announce: false).ConfigureAwait(false);
                up.Add(a);
            }

            int pid = await m.RestoreAsync(criu, spec, ct).ConfigureAwait(false);
            TargetMetrics.Restored(m, restoreStarted);
            // Read while the tree is still stopped (repair mode would refuse its sends); prompted once clients reach it.
            var connections = options.PromptClients && up.Count > 0 ? _prompter.Collect(ProcessTree.Enumerate(pid), up) : [];
            if (locked)
            {
                await AddressLock.UnlockAsync(m.Id, CancellationToken.None).ConfigureAwait(false);
                locked = false;
                foreach (var a in up)
                {
                    await _mover.AnnounceAsync(a, options.ServiceInterface ?? "-", CancellationToken.None).ConfigureAwait(false);
                }
            }

            if (connections.Count > 0)
            {
                _prompter.Prompt(connections);
            }

            return pid;
        }
        catch (Exception ex) when (ex is CriuException or IOException or TimeoutException or TargetRequestException or OperationCanceledException)
        {
            await TakeDownAsync(up).ConfigureAwait(false);
            if (locked)
            {
                await AddressLock.UnlockAsync(m.Id, CancellationToken.None).ConfigureAwait(false);
            }

            if (ex is IOException or TimeoutException)
            {
                m.Abort($"service address: {ex.Message}");
                throw new TargetRequestException(TargetError.Internal, $"service address on {Environment.MachineName}: {ex.Message}");
            }

            if (ex is CriuException)
            {
                throw new TargetRequestException(TargetError.Internal, $"restore on {Environment.MachineName} failed: {ex.Message}");
            }

            throw;
        }
    }

    public IReadOnlyCollection<IncomingMigration> Migrations => _migrations.Values.ToArray();

    private AddressMover? _moverField;

    private AddressMover _mover => _moverField ??= new AddressMover(_logger, options.AddressHook);

    private ClientPrompter? _prompterField;

    private ClientPrompter _prompter => _prompterField ??= new ClientPrompter(_logger);

    /// <summary>Aborts migration <paramref name="id"/> (see <see cref="IncomingMigration.Abort"/>); its service addresses, if up here, go down.</summary>
    public async Task<bool> AbortAsync(string id, string reason)
    {
        var m = Get(id);
        bool restored = m.State == IncomingState.Restored;
        bool killed = m.Abort(reason);
        if (restored)
        {
            await TakeDownAsync(m.ServiceAddresses).ConfigureAwait(false);
        }

        return killed;
    }

    private async Task TakeDownAsync(IReadOnlyList<ServiceAddress> addresses)
    {
        foreach (var a in addresses)
        {
            try
            {
                await _mover.DownAsync(a, options.ServiceInterface ?? "-", CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or TimeoutException)
            {
                LogAddressLeft(a.ToString(), ex.Message);
            }
        }
    }

    /// <summary>The page stream of migration <paramref name="id"/> failed.</summary>
    public void FailPages(string id, string error)
    {
        if (_migrations.TryGetValue(id, out var m))
        {
            m.FailPages(error);
        }
    }

    /// <summary>
    /// The page stream of a migration that is still receiving broke: its source rolls back (nothing here can be
    /// restored without those pages), and if the source died it will never say so. Aborted here and now, so that its
    /// pages do not hold the disk until someone asks.
    /// </summary>
    public void AbandonIfReceiving(string id, string reason)
    {
        if (_migrations.TryGetValue(id, out var m) && m.State == IncomingState.Receiving)
        {
            m.Abort(reason);
        }
    }

    private ulong FreeBytes()
    {
        var info = new DriveInfo(options.WorkRoot);
        return (ulong)Math.Max(0, info.AvailableFreeSpace);
    }

    private static async Task RunCheckAsync(List<PreflightCheckResult> checks, string name, Func<Task> check, string okDetail)
    {
        try
        {
            await check().ConfigureAwait(false);
            checks.Add(new PreflightCheckResult(name, true, okDetail));
        }
        catch (CriuException ex)
        {
            checks.Add(new PreflightCheckResult(name, false, ex.Message));
        }
    }

    private void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException ex)
        {
            // A leftover scratch directory holds a few KiB of CRIU logs; not worth failing preflight for.
            LogCleanupFailed(dir, ex.Message);
        }
    }

    public void Dispose()
    {
        _stopping.Cancel();
        foreach (var m in _migrations.Values)
        {
            m.Dispose();
        }

        _stopping.Dispose();
    }

    [LoggerMessage(EventId = 400, Level = LogLevel.Information, Message = "preflight from {Source}: ok={Ok} {Failures}")]
    private partial void LogPreflight(string source, bool ok, string failures);

    [LoggerMessage(EventId = 401, Level = LogLevel.Information, Message = "migration {Id} begun from {Source} pid {Pid}, work directory {Dir}")]
    private partial void LogBegun(string id, string source, int pid, string dir);

    [LoggerMessage(EventId = 403, Level = LogLevel.Information, Message = "migration {Id}: {Mib} MiB of room made for the pages of {Tasks} tasks before the freeze (budget {BudgetMib} MiB) in {Ms:0} ms")]
    private partial void LogProvisioned(string id, ulong mib, int tasks, long budgetMib, double ms);

    /// <summary>MemAvailable from /proc/meminfo, in bytes; 0 when it cannot be read (nothing is provisioned then).</summary>
    private static ulong MemAvailableBytes() => HostMemory.AvailableBytes();

    [LoggerMessage(EventId = 405, Level = LogLevel.Error, Message = "service address {Address} could not be taken down here: {Reason}; remove it by hand before the source resumes with it")]
    private partial void LogAddressLeft(string address, string reason);

    [LoggerMessage(EventId = 404, Level = LogLevel.Warning, Message = "migration {Id} was left by an earlier run of this agent: its data ({Mib} MiB) removed, its logs kept")]
    private partial void LogSwept(string id, long mib);

    [LoggerMessage(EventId = 406, Level = LogLevel.Warning, Message = "migration {Id}: its lazy fill (pid {Pid}) outlived the agent that started it and still runs (restored pid {TreePid}, {Filled} of {Lazy} pages filled); its data stays until it ends")]
    private partial void LogFillAdopted(string id, int pid, int treePid, long filled, long lazy);

    [LoggerMessage(EventId = 407, Level = LogLevel.Error, Message = "migration {Id}: its lazy fill (pid {Pid}) died before filling restored pid {TreePid}, whose unfilled pages would read as zeros: its {Killed} tasks were killed")]
    private partial void LogFillDiedTreeKilled(string id, int pid, int treePid, int killed);

    [LoggerMessage(EventId = 408, Level = LogLevel.Error, Message = "migration {Id}: its lazy fill failed while no agent watched (the fill killed the restored tree itself): {Error}")]
    private partial void LogFillFailedUnwatched(string id, string error);

    [LoggerMessage(EventId = 409, Level = LogLevel.Warning, Message = "migration {Id}: its lazy fill state is unreadable ({Message}); treated as no fill")]
    private partial void LogFillStateUnreadable(string id, string message);

    [LoggerMessage(EventId = 402, Level = LogLevel.Warning, Message = "could not remove {Dir}: {Message}")]
    private partial void LogCleanupFailed(string dir, string message);
}

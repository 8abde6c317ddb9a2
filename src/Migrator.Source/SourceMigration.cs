using Microsoft.Extensions.Logging;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.PageServer.Transport;
using Migration.Source.Agent;
using Migration.Source.Precopy;

namespace Migration.Source;

/// <summary>
/// The source side of a migration: preflight, dump, transfer, restore on the target, commit.
///
/// Exactly one live copy: the dump's post-dump notification is held while the images travel and the
/// target restores (its tree left stopped). Only then is post-dump acknowledged, and CRIU kills the source
/// tree. Whatever fails before that acknowledgement, post-dump is refused and CRIU resumes the source.
/// After CRIU's answer the engine decides from what it observes: if the source tree is still alive the
/// target copy is discarded; if it is gone the target copy is resumed (commit, retried).
/// </summary>
public sealed partial class SourceMigration(
    CriuClient criu, IMigrationTarget target, SourceMigrationOptions options, ILogger<SourceMigration> logger, TimeProvider time,
    Func<TargetMigration, CancellationToken, Task<IPageTransport>>? pageTransport = null)
{
    /// <summary>The tree's largest tasks a cold migration tells the target about (<see cref="TaskMemory"/>); the rest get no room made.</summary>
    public const int MaxTaskHints = 64;

    private readonly ILogger _logger = logger;

    public static string Version => Engine.BuildInfo.Version;

    public async Task<MigrationResult> RunAsync(int pid, IProgress<MigrationProgress>? progress, CancellationToken ct)
    {
        long started = time.GetTimestamp();
        if (!ProcessTree.IsAlive(pid))
        {
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                $"process {pid} does not exist (or is a zombie): nothing to migrate");
        }

        Directory.CreateDirectory(options.WorkRoot);
        var work = Path.Combine(options.WorkRoot, $"{time.GetUtcNow():yyyyMMdd-HHmmss}-{pid}-{Random.Shared.Next(0x10000):x4}");
        var images = Path.Combine(work, "images");
        Directory.CreateDirectory(images);
        LogWorkDir(pid, work);
        try
        {
            await PreflightAsync(pid, work, progress, ct).ConfigureAwait(false);
            // A cold dump writes every page on the target while the tree is frozen: the target makes room for them first.
            var tasks = options.Mode == "cold" ? ProcessTree.TaskMemory(pid, MaxTaskHints) : [];
            long beginAt = time.GetTimestamp();
            var begun = await CallAsync(MigrationPhase.Begin, WorkloadOutcome.Untouched,
                c => target.BeginAsync(pid, EstimateBytes(pid), options.Mode, tasks, c), ct).ConfigureAwait(false);
            var beginTook = time.GetElapsedTime(beginAt);
            LogBegun(begun.Id, begun.ProvisionedBytes >> 20, beginTook.TotalMilliseconds);
            return await CutoverAsync(begun, beginTook, pid, work, images, started, progress, ct).ConfigureAwait(false);
        }
        finally
        {
            Cleanup(images, Path.Combine(work, "cpuinfo", "cpuinfo.img"));
        }
    }

    private async Task PreflightAsync(int pid, string work, IProgress<MigrationProgress>? progress, CancellationToken ct)
    {
        progress?.Report(new MigrationProgress(MigrationPhase.Preflight, "checking source and target"));
        CriuVersionInfo version;
        byte[] cpuinfo;
        var cpuDir = Path.Combine(work, "cpuinfo");
        Directory.CreateDirectory(cpuDir);
        try
        {
            version = await criu.GetVersionAsync(ct).ConfigureAwait(false);
            if (version.AsVersion < CriuOptions.MinimumVersion)
            {
                throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                    $"CRIU {version} on the source is too old: {CriuOptions.MinimumVersion} or newer is required (scripts/setup.sh builds it)");
            }

            await criu.CpuInfoDumpAsync(cpuDir, ct).ConfigureAwait(false);
            cpuinfo = await File.ReadAllBytesAsync(Path.Combine(cpuDir, "cpuinfo.img"), ct).ConfigureAwait(false);
        }
        catch (CriuException ex)
        {
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched, $"source preflight: {ex.Message}", ex);
        }

        ulong needed = EstimateBytes(pid);
        var request = new SourcePreflight(Environment.MachineName, Version, version, cpuinfo, needed, options.Mode);
        var reply = await CallAsync(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
            c => target.PreflightAsync(request, c), ct).ConfigureAwait(false);
        foreach (var check in reply.Checks)
        {
            LogPreflightCheck(check.Name, check.Ok, check.Detail);
        }

        if (!reply.Ok)
        {
            var failed = reply.Checks.Where(c => !c.Ok).Select(c => $"{c.Name}: {c.Detail}");
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                $"target {reply.Hostname} failed preflight: {string.Join("; ", failed)}");
        }

        LogPreflightOk(reply.Hostname, version.ToString(), reply.Criu?.ToString() ?? "?", needed, reply.FreeBytes);
        progress?.Report(new MigrationProgress(MigrationPhase.Preflight,
            $"preflight ok: target {reply.Hostname}, CRIU {version} -> {reply.Criu}, ~{needed >> 20} MiB to move, {reply.FreeBytes >> 20} MiB free"));
    }

    private async Task<MigrationResult> CutoverAsync(TargetMigration begun, TimeSpan beginTook, int pid, string work, string images, long started,
        IProgress<MigrationProgress>? progress, CancellationToken ct)
    {
        string id = begun.Id;
        long frozenAt = 0, dumpDone = 0, transferDone = 0, restoreDone = 0;
        bool restoredOnTarget = false;
        int targetPid = 0;
        ulong bytesSent = 0;
        IReadOnlyList<ImageFileInfo> manifest = [];
        PageTransferStats? pageStats = null;
        ulong wireBeforeFreeze = 0;
        PrecopySession? precopy = null;
        string? precopyNote = null;
        bool lazyFinal = false;
        FinalRound? finalRound = null;
        IReadOnlyList<int> sourceTree = [];
        long committedAt = 0;

        // The cutover has its own bound: the tree is frozen while it runs.
        using var cutoverCts = CancellationTokenSource.CreateLinkedTokenSource(ct);

        // Pages go straight from CRIU to the target's page store; only metadata images are staged here.
        await using var pages = pageTransport is null || begun.PagePort == 0 ? null
            : await CallAsync(MigrationPhase.Begin, WorkloadOutcome.Untouched, c => pageTransport(begun, c), ct).ConfigureAwait(false);

        async Task<bool> OnNotify(string script, int notifyPid)
        {
            switch (script)
            {
                case CriuScripts.PreDump:
                    frozenAt = time.GetTimestamp();
                    wireBeforeFreeze = pages?.Snapshot().WireBytes ?? 0;
                    progress?.Report(new MigrationProgress(MigrationPhase.Dump, "freezing and dumping"));
                    return true;
                case CriuScripts.PostDump:
                    dumpDone = time.GetTimestamp();
                    sourceTree = ProcessTree.Enumerate(pid); // frozen: exactly the tasks CRIU dumped
                    cutoverCts.CancelAfter(options.CutoverTimeout);
                    if (pages is not null)
                    {
                        if (lazyFinal)
                        {
                            // CRIU wrote metadata only: the last round is ours, read from the tree CRIU keeps frozen.
                            var vpids = sourceTree.ToDictionary(ProcessMemory.VirtualPid, p => p);
                            finalRound = await precopy!.SendFinalRoundAsync(pages, images, vpids, cutoverCts.Token).ConfigureAwait(false);
                            pageStats = await pages.FinishWithoutCriuAsync(cutoverCts.Token).ConfigureAwait(false);
                        }
                        else
                        {
                            // CRIU closed its page-server session before post-dump; this is the target's durable ack.
                            pageStats = await pages.Completion.WaitAsync(cutoverCts.Token).ConfigureAwait(false);
                        }

                        // The final harvest is done: detach now, while the tasks are frozen and alive (after the
                        // commit they are gone; on a rollback they resume with nothing of the tracker left).
                        precopy?.Dispose();
                        LogPagesDone(pageStats.Pages, pageStats.ZeroPages, pageStats.WireBytes, pageStats.CompressionRatio, pageStats.Elapsed.TotalMilliseconds);
                    }

                    manifest = ImageManifest.Build(images);
                    LogDumped(manifest.Count, ImageManifest.TotalBytes(manifest), time.GetElapsedTime(frozenAt, dumpDone).TotalMilliseconds);
                    progress?.Report(new MigrationProgress(MigrationPhase.Transfer,
                        $"dumped {manifest.Count} images, {ImageManifest.TotalBytes(manifest) >> 20} MiB; sending"));
                    bytesSent = await target.SendImagesAsync(id, images, manifest, cutoverCts.Token).ConfigureAwait(false);
                    transferDone = time.GetTimestamp();
                    if (options.DryRun)
                    {
                        // Everything moved; nothing restored. CRIU resumes the tree (leave_running).
                        return true;
                    }

                    progress?.Report(new MigrationProgress(MigrationPhase.Restore, "restoring on target"));
                    targetPid = await target.RestoreAsync(id, manifest, pages is not null, lazyFinal && options.LazyRestore, cutoverCts.Token).ConfigureAwait(false);
                    restoreDone = time.GetTimestamp();
                    restoredOnTarget = true;
                    LogRestored(targetPid);

                    // CRIU would kill the source tree now and answer only once its memory is freed (1 GiB: ~0.15 s).
                    // A task with SIGKILL queued never runs its code again, so the target copy may run as soon as
                    // every source task has it: kill them here (CRIU then reaps them as killed) and commit at once.
                    if (KillFrozenTree(sourceTree))
                    {
                        try
                        {
                            progress?.Report(new MigrationProgress(MigrationPhase.Commit, "source stopped; resuming on target"));
                            await CallAsync(MigrationPhase.Commit, WorkloadOutcome.OnTargetUnconfirmed, c => target.CommitAsync(id, c), CancellationToken.None)
                                .ConfigureAwait(false);
                            committedAt = time.GetTimestamp();
                        }
                        catch (MigrationException ex)
                        {
                            // The source is gone either way; the commit is retried once CRIU answered.
                            LogCommitRetry(0, ex.Message);
                        }
                    }

                    return true; // CRIU now kills (or reaps) the source tree.
                default:
                    return true;
            }
        }

        // Live: pre-copy while the tree runs; the final dump then sends only what changed since.
        if (options.Mode == "precopy")
        {
            if (pages is null)
            {
                precopyNote = "pre-copy needs the target's page stream; migrating cold";
            }
            else
            {
                try
                {
                    precopy = PrecopySession.Attach(ProcessTree.Enumerate(pid), _logger);
                }
                catch (Exception ex) when (ex is Engine.Tracking.TrackerException or IOException or DllNotFoundException or InvalidOperationException)
                {
                    precopyNote = $"dirty tracking unavailable ({ex.Message}); migrating cold";
                }
            }

            if (precopyNote is not null)
            {
                LogPrecopyFallback(precopyNote);
                progress?.Report(new MigrationProgress(MigrationPhase.Precopy, precopyNote));
            }
        }

        using var trackers = precopy;
        if (precopy is not null)
        {
            try
            {
                await precopy.RunAsync(pages!, options.Precopy, (it, stop) => progress?.Report(new MigrationProgress(MigrationPhase.Precopy,
                    $"iteration {it.Index}: sent {it.PagesSent} pages ({it.PagesSent * 4096 / 1048576.0:0.0} MiB, {it.BytesOnWire / 1048576.0:0.0} MiB on the wire) in {it.Elapsed.TotalMilliseconds:0} ms, " +
                    $"{it.BytesPerSecond / 1048576:0} MiB/s of non-zero pages; {it.DirtyPagesFound} pages dirty{(stop is null ? "" : $"; stopping: {stop}")}")), ct).ConfigureAwait(false);
                // The target orders what it holds into a parent image now, while the workload runs (pages written
                // meanwhile are caught by the tracker and go in the final round).
                progress?.Report(new MigrationProgress(MigrationPhase.Precopy, "target preparing its images of the pre-copied pages"));
                await CallAsync(MigrationPhase.Precopy, WorkloadOutcome.Untouched, async c =>
                {
                    await target.PrepareCutoverAsync(id, c).ConfigureAwait(false);
                    return true;
                }, ct).ConfigureAwait(false);

                lazyFinal = options.FinalDump == "lazy";
                if (!lazyFinal)
                {
                    pages!.SetCutoverFilter(precopy);
                }

                precopyNote = precopy.StopReason;
            }
            catch (MigrationException ex)
            {
                await AbortTargetAsync(id, $"pre-copy failed: {ex.Message}").ConfigureAwait(false);
                throw;
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or Engine.Tracking.TrackerException or InvalidOperationException)
            {
                await AbortTargetAsync(id, $"pre-copy failed: {ex.Message}").ConfigureAwait(false);
                throw new MigrationException(MigrationPhase.Precopy, WorkloadOutcome.Untouched,
                    $"pre-copy failed: {ex.Message}; the workload (pid {pid}) was never frozen", ex);
            }
        }

        var spec = new DumpSpec
        {
            Pid = pid,
            ImagesDir = images,
            WorkDir = work,
            TcpEstablished = options.TcpEstablished,
            ShellJob = options.ShellJob,
            FileLocks = options.FileLocks,
            ExtUnixSk = options.ExtUnixSk,
            LeaveRunning = options.DryRun,
            LazyPages = lazyFinal,
            PageServerConnection = lazyFinal ? null : pages?.TakeCriuConnection(),
        };

        Exception? dumpFailure = null;
        try
        {
            await criu.DumpAsync(spec, OnNotify, cutoverCts.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is CriuException or CriuNotifyHandlerException or OperationCanceledException or IOException)
        {
            dumpFailure = ex;
        }

        if (options.DryRun && dumpFailure is null && transferDone != 0)
        {
            await AbortTargetAsync(id, "dry run").ConfigureAwait(false);
            long done = time.GetTimestamp();
            var dry = Result(targetPid: 0, dryRun: true, resumed: transferDone, end: done, restore: TimeSpan.Zero);
            LogDryRun(id, dry.Dump.TotalMilliseconds, dry.BytesSent);
            return dry;
        }

        // Decide from what is observed, not from what was hoped: is the source tree still there?
        bool sourceAlive = ProcessTree.IsAlive(pid);
        if (committedAt != 0 && sourceAlive)
        {
            // The target copy runs (committed after every source task took SIGKILL): the source can only be dying.
            // Never abort a committed target; make sure of the source instead.
            LogSourceStillDying(pid);
            KillFrozenTree(sourceTree);
            sourceAlive = false;
        }

        if (sourceAlive || !restoredOnTarget)
        {
            var reason = Describe(dumpFailure) ?? "source tree still running after the dump";
            if (pages is not null && dumpFailure is not null && await PageFailureAsync(pages).ConfigureAwait(false) is { } pageFailure)
            {
                // CRIU only saw its page-server connection fail; the page stream knows why.
                reason = $"{pageFailure} (criu: {reason})";
            }

            await AbortTargetAsync(id, reason).ConfigureAwait(false);

            var phase = dumpFailure is CriuNotifyHandlerException ? (transferDone == 0 ? MigrationPhase.Transfer : MigrationPhase.Restore) : MigrationPhase.Dump;
            var outcome = sourceAlive ? WorkloadOutcome.ResumedOnSource : WorkloadOutcome.OnTargetUnconfirmed;
            if (!sourceAlive)
            {
                // Neither copy runs: the source died during its own dump, and the target holds nothing restorable.
                LogSourceLost(pid);
            }
            else
            {
                LogRolledBack(pid, reason);
            }

            throw new MigrationException(phase, outcome, $"{phase} failed: {reason}; " +
                (sourceAlive ? $"the workload (pid {pid}) resumed on the source" : "the source tree exited during the dump"), dumpFailure);
        }

        // The source copy is gone and the target holds a stopped copy: it must run now.
        if (dumpFailure is not null)
        {
            LogDumpErrorAfterCommit(Describe(dumpFailure) ?? "");
        }

        long committed = committedAt;
        if (committed == 0)
        {
            progress?.Report(new MigrationProgress(MigrationPhase.Commit, "source stopped; resuming on target"));
            await CommitAsync(id, targetPid, ct).ConfigureAwait(false);
            committed = time.GetTimestamp();
        }

        var result = Result(targetPid, dryRun: false, resumed: committed, end: committed, restore: time.GetElapsedTime(transferDone, restoreDone));
        LogCommitted(id, targetPid, result.Frozen.TotalMilliseconds, result.Total.TotalMilliseconds, bytesSent);
        return result;

        // What this migration did; "resumed" is when the tree ran again (on the target, or on the source for a dry run).
        MigrationResult Result(int targetPid, bool dryRun, long resumed, long end, TimeSpan restore) => new()
        {
            MigrationId = id,
            SourcePid = pid,
            TargetPid = targetPid,
            Mode = options.Mode,
            DryRun = dryRun,
            ImageFiles = manifest.Count,
            BytesSent = bytesSent + (pageStats?.WireBytes ?? 0),
            Pages = pageStats,
            Iterations = precopy?.Iterations ?? [],
            PrecopyNote = precopyNote,
            FinalRound = finalRound,
            BytesFrozen = bytesSent + (pageStats?.WireBytes ?? 0) - wireBeforeFreeze,
            Frozen = time.GetElapsedTime(frozenAt, resumed),
            Total = time.GetElapsedTime(started, end),
            Dump = time.GetElapsedTime(frozenAt, dumpDone),
            Transfer = time.GetElapsedTime(dumpDone, transferDone),
            Restore = restore,
            ProvisionedBytes = begun.ProvisionedBytes,
            Begin = beginTook,
        };
    }

    /// <summary>
    /// Queues SIGKILL to every task of the frozen source tree; true when each one took it (or was already gone). A task
    /// that could not be signalled leaves the kill to CRIU, and the commit waits for its answer.
    /// </summary>
    private bool KillFrozenTree(IReadOnlyList<int> tree)
    {
        if (options.DryRun || tree.Count == 0)
        {
            return false;
        }

        try
        {
            ProcessTree.KillAll(tree); // a task already gone is fine
            return true;
        }
        catch (IOException ex)
        {
            LogKillFailed(ex.Message);
            return false;
        }
    }

    [LoggerMessage(EventId = 217, Level = LogLevel.Warning, Message = "source pid {Pid} still visible after SIGKILL and CRIU's answer; killed again (the target copy is committed)")]
    private partial void LogSourceStillDying(int pid);

    [LoggerMessage(EventId = 216, Level = LogLevel.Warning, Message = "could not kill the source tree ({Error}); CRIU kills it and the commit waits for it")]
    private partial void LogKillFailed(string error);

    /// <summary>The page transport's failure, if it failed (it may take a moment to finish failing).</summary>
    private static async Task<string?> PageFailureAsync(IPageTransport pages)
    {
        try
        {
            await pages.Completion.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            return null;
        }
        catch (TimeoutException)
        {
            return null;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return ex.Message;
        }
    }

    private async Task CommitAsync(string id, int targetPid, CancellationToken ct)
    {
        var deadline = time.GetTimestamp();
        Exception? last = null;
        for (int attempt = 1; time.GetElapsedTime(deadline) < options.CommitRetryFor; attempt++)
        {
            try
            {
                // Not cancelled by the caller: abandoning a commit would leave the only copy stopped.
                await CallAsync(MigrationPhase.Commit, WorkloadOutcome.OnTargetUnconfirmed,
                    c => target.CommitAsync(id, c), CancellationToken.None).ConfigureAwait(false);
                return;
            }
            catch (MigrationException ex)
            {
                last = ex;
                LogCommitRetry(attempt, ex.Message);
                await Task.Delay(TimeSpan.FromSeconds(Math.Min(5, attempt)), time, CancellationToken.None).ConfigureAwait(false);
            }
        }

        throw new MigrationException(MigrationPhase.Commit, WorkloadOutcome.OnTargetUnconfirmed,
            $"the workload was restored on the target (pid {targetPid}, migration {id}) and the source copy is gone, " +
            $"but the target did not confirm resuming it: {last?.Message}. It is kept stopped there; " +
            $"resume it on the target with: kill -CONT {targetPid} (and its children)", last);
    }

    private async Task AbortTargetAsync(string id, string reason)
    {
        try
        {
            using var cts = new CancellationTokenSource(options.CallTimeout);
            await target.AbortAsync(id, reason, cts.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The source copy runs; a target that cannot be told discards its unconfirmed state itself.
            LogAbortFailed(id, ex.Message);
        }
    }

    private async Task<T> CallAsync<T>(MigrationPhase phase, WorkloadOutcome outcome, Func<CancellationToken, Task<T>> call, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(options.CallTimeout);
        try
        {
            return await call(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new MigrationException(phase, outcome, $"{phase}: the target did not answer within {options.CallTimeout.TotalSeconds:0} s");
        }
        catch (MigrationException)
        {
            throw;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            throw new MigrationException(phase, outcome, $"{phase}: {ex.Message}", ex);
        }
    }

    private ulong EstimateBytes(int pid) => (ulong)(ProcessTree.ResidentBytes(pid) * options.SpaceHeadroom) + (1UL << 20);

    private static string? Describe(Exception? ex) => ex switch
    {
        null => null,
        CriuNotifyHandlerException h => h.InnerException?.Message ?? h.Message,
        OperationCanceledException => "timed out or cancelled",
        _ => ex.Message,
    };

    /// <summary>Removes the staged images (CRIU's logs beside them stay for diagnosis).</summary>
    private void Cleanup(string images, string cpuinfoImage)
    {
        if (options.KeepImages)
        {
            return;
        }

        try
        {
            Directory.Delete(images, recursive: true);
            File.Delete(cpuinfoImage);
        }
        catch (IOException ex)
        {
            // Leftover staging files cost disk space, not correctness; say where they are.
            LogCleanupFailed(images, ex.Message);
        }
    }

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "migration of pid {Pid}: staging in {WorkDir}")]
    private partial void LogWorkDir(int pid, string workDir);

    [LoggerMessage(EventId = 201, Level = LogLevel.Debug, Message = "preflight check {Name}: ok={Ok} {Detail}")]
    private partial void LogPreflightCheck(string name, bool ok, string detail);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "preflight ok: target {Host}, criu {SourceCriu} -> {TargetCriu}, need {Needed} bytes, target free {Free} bytes")]
    private partial void LogPreflightOk(string host, string sourceCriu, string targetCriu, ulong needed, ulong free);

    [LoggerMessage(EventId = 203, Level = LogLevel.Information, Message = "migration {Id} begun on target ({ProvisionedMib} MiB of room made for the pages ahead, {Ms:0} ms)")]
    private partial void LogBegun(string id, ulong provisionedMib, double ms);

    [LoggerMessage(EventId = 204, Level = LogLevel.Information, Message = "dumped {Files} image files, {Bytes} bytes, in {Ms:0} ms (tree frozen)")]
    private partial void LogDumped(int files, ulong bytes, double ms);

    [LoggerMessage(EventId = 215, Level = LogLevel.Warning, Message = "{Note}")]
    private partial void LogPrecopyFallback(string note);

    [LoggerMessage(EventId = 214, Level = LogLevel.Information, Message = "dry run {Id} done: dump and page transfer {Ms:0} ms, {Bytes} bytes; discarded on the target, tree kept running")]
    private partial void LogDryRun(string id, double ms, ulong bytes);

    [LoggerMessage(EventId = 213, Level = LogLevel.Information, Message = "pages durable on target: {Pages} pages ({Zero} zero), {Wire} bytes on the wire, ratio {Ratio:0.00}, {Ms:0} ms")]
    private partial void LogPagesDone(ulong pages, ulong zero, ulong wire, double ratio, double ms);

    [LoggerMessage(EventId = 205, Level = LogLevel.Information, Message = "restored on target as pid {Pid} (stopped); acknowledging post-dump")]
    private partial void LogRestored(int pid);

    [LoggerMessage(EventId = 206, Level = LogLevel.Information, Message = "migration {Id} committed: target pid {Pid}, frozen {FrozenMs:0} ms, total {TotalMs:0} ms, {Bytes} bytes sent")]
    private partial void LogCommitted(string id, int pid, double frozenMs, double totalMs, ulong bytes);

    [LoggerMessage(EventId = 207, Level = LogLevel.Warning, Message = "rolled back: pid {Pid} resumed on the source ({Reason})")]
    private partial void LogRolledBack(int pid, string reason);

    [LoggerMessage(EventId = 208, Level = LogLevel.Error, Message = "source tree {Pid} exited during its dump; nothing was restored")]
    private partial void LogSourceLost(int pid);

    [LoggerMessage(EventId = 209, Level = LogLevel.Warning, Message = "criu reported an error after the source was stopped and the target restored: {Message}")]
    private partial void LogDumpErrorAfterCommit(string message);

    [LoggerMessage(EventId = 210, Level = LogLevel.Warning, Message = "commit attempt {Attempt} failed: {Message}")]
    private partial void LogCommitRetry(int attempt, string message);

    [LoggerMessage(EventId = 211, Level = LogLevel.Warning, Message = "could not abort migration {Id} on the target: {Message}")]
    private partial void LogAbortFailed(string id, string message);

    [LoggerMessage(EventId = 212, Level = LogLevel.Warning, Message = "could not remove staging directory {Dir}: {Message}")]
    private partial void LogCleanupFailed(string dir, string message);
}

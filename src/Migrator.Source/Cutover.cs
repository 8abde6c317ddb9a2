using Microsoft.Extensions.Logging;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.PageServer.Transport;
using Migration.Source.Agent;
using Migration.Source.Events;
using Migration.Source.Precopy;

namespace Migration.Source;

/// <summary>
/// One migration from the moment the target has begun it: pre-copy while the tree runs, then the freeze — CRIU's dump,
/// the final pages, the images, the restore on the target — and the decision, taken from what is observed after CRIU
/// answers, to commit on the target or roll back to the source.
///
/// Exactly one live copy: CRIU's post-dump notification is held while the images travel and the target restores (its
/// tree left stopped); only then is it acknowledged and the source tree killed. Whatever fails before that,
/// post-dump is refused and CRIU resumes the source.
/// </summary>
internal sealed partial class Cutover
{
    private readonly SourceMigration _owner;
    private readonly CriuClient _criu;
    private readonly IMigrationTarget _target;
    private readonly SourceMigrationOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly TargetMigration _begun;
    private readonly TimeSpan _beginTook;
    private readonly int _pid;
    private readonly string _work;
    private readonly string _images;
    private readonly long _started;
    private readonly MigrationEvents _events;
    private readonly CommitGate? _gate;

    // What the migration did so far: timestamps (0: not reached), what moved, what the target holds.
    private long _frozenAt, _dumpDone, _transferDone, _restoreDone, _committedAt;
    private bool _restoredOnTarget;
    private int _targetPid;
    private ulong _bytesSent, _wireBeforeFreeze;
    private IReadOnlyList<ImageFileInfo> _manifest = [];
    private PageTransferStats? _pageStats;
    private PrecopySession? _precopy;
    private string? _precopyNote;
    private bool _lazyFinal;
    private FinalRound? _finalRound;
    private IReadOnlyList<int> _sourceTree = [];
    private IPageTransport? _pages;
    private CancellationTokenSource? _frozenCts;
    private string _dumpLog = "";
    private Engine.Processes.TreeThrottle? _throttle;

    public Cutover(SourceMigration owner, CriuClient criu, IMigrationTarget target, SourceMigrationOptions options, ILogger logger, TimeProvider time,
        TargetMigration begun, TimeSpan beginTook, int pid, string work, string images, long started, MigrationEvents events, CommitGate? gate)
    {
        (_owner, _criu, _target, _options, _logger, _time) = (owner, criu, target, options, logger, time);
        (_begun, _beginTook, _pid, _work, _images, _started, _events, _gate) = (begun, beginTook, pid, work, images, started, events, gate);
    }

    private string Id => _begun.Id;

    public async Task<MigrationResult> RunAsync(Func<TargetMigration, CancellationToken, Task<IPageTransport>>? pageTransport, CancellationToken ct)
    {
        // The frozen part has its own bound, armed at post-dump.
        using var frozenCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _frozenCts = frozenCts;

        // Pages go straight from CRIU to the target's page store; only metadata images are staged here.
        _pages = pageTransport is null || _begun.PagePort == 0 ? null
            : await _owner.CallAsync(MigrationPhase.Begin, WorkloadOutcome.Untouched, c => pageTransport(_begun, c), ct).ConfigureAwait(false);
        try
        {
            if (_options.Mode == "precopy")
            {
                _precopy = AttachTracker();
            }

            try
            {
                if (_precopy is not null)
                {
                    await PrecopyAsync(ct).ConfigureAwait(false);
                }

                await LiftThrottleAsync().ConfigureAwait(false); // at the freeze: CRIU must find the tree running
                if (_gate is not null && !_gate.TryEnterFreeze())
                {
                    throw new OperationCanceledException("cancelled by the caller before the freeze");
                }

                var dumpFailure = await DumpAsync(frozenCts.Token).ConfigureAwait(false);
                if (_options.DryRun && dumpFailure is null && _transferDone != 0)
                {
                    return await DryRunDoneAsync().ConfigureAwait(false);
                }

                return await ConcludeAsync(dumpFailure, ct).ConfigureAwait(false);
            }
            finally
            {
                await LiftThrottleAsync().ConfigureAwait(false);
                _precopy?.Dispose();
            }
        }
        finally
        {
            if (_pages is not null)
            {
                await _pages.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Live: the dirty tracker on every task of the tree, or null (and a note) when the migration goes cold.</summary>
    private PrecopySession? AttachTracker()
    {
        PrecopySession? session = null;
        if (_pages is null)
        {
            _precopyNote = "pre-copy needs the target's page stream; migrating cold";
        }
        else
        {
            try
            {
                session = PrecopySession.Attach(ProcessTree.Enumerate(_pid), _logger);
            }
            catch (Exception ex) when (ex is Engine.Tracking.TrackerException or IOException or DllNotFoundException or InvalidOperationException)
            {
                _precopyNote = $"dirty tracking unavailable ({ex.Message}); migrating cold";
            }
        }

        if (_precopyNote is not null)
        {
            LogPrecopyFallback(_precopyNote);
            _events.Note(MigrationPhase.Precopy, _precopyNote);
        }

        return session;
    }

    /// <summary>Pre-copy while the tree runs; the final dump then sends only what changed since.</summary>
    private async Task PrecopyAsync(CancellationToken ct)
    {
        var precopy = _precopy!;
        _events.Started(MigrationPhase.Precopy, "copying memory while the workload runs");
        try
        {
            await precopy.RunAsync(_pages!, _options.Precopy, _events.Iteration, ct,
                _options.Precopy.AutoConverge ? () => _throttle ??= Engine.Processes.TreeThrottle.Start(_pid) : null).ConfigureAwait(false);
            // The target orders what it holds into a parent image now, while the workload runs (pages written
            // meanwhile are caught by the tracker and go in the final round).
            _events.Note(MigrationPhase.Precopy, "target preparing its images of the pre-copied pages");
            await _owner.CallAsync(MigrationPhase.Precopy, WorkloadOutcome.Untouched, async c =>
            {
                await _target.PrepareCutoverAsync(Id, c).ConfigureAwait(false);
                return true;
            }, ct).ConfigureAwait(false);

            _lazyFinal = _options.FinalDump == "lazy";
            if (!_lazyFinal)
            {
                _pages!.SetCutoverFilter(precopy);
            }

            _precopyNote = precopy.StopReason;
            _events.Ended(MigrationPhase.Precopy, $"{precopy.Iterations.Count} iterations; stopped: {_precopyNote}");
        }
        catch (MigrationException ex)
        {
            await _owner.AbortTargetAsync(Id, $"pre-copy failed: {ex.Message}").ConfigureAwait(false);
            throw;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or Engine.Tracking.TrackerException or InvalidOperationException)
        {
            var why = ex is OperationCanceledException && ct.IsCancellationRequested ? "cancelled during pre-copy" : $"pre-copy failed: {ex.Message}";
            await _owner.AbortTargetAsync(Id, why).ConfigureAwait(false);
            throw new MigrationException(MigrationPhase.Precopy, WorkloadOutcome.Untouched, $"{why}; the workload (pid {_pid}) was never frozen", ex);
        }
    }

    /// <summary>Ends auto-converge's throttle, if one ran: the tree runs freely again (and is not stopped by it) once this returns.</summary>
    private async Task LiftThrottleAsync()
    {
        if (_throttle is { } throttle)
        {
            await throttle.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>CRIU's dump, with the whole frozen part run from its notifications. Returns how it failed, or null.</summary>
    private async Task<Exception?> DumpAsync(CancellationToken frozen)
    {
        var spec = new DumpSpec
        {
            Pid = _pid,
            ImagesDir = _images,
            WorkDir = _work,
            Flags = _options.Criu,
            LeaveRunning = _options.DryRun,
            LazyPages = _lazyFinal,
            PageServerConnection = _lazyFinal ? null : _pages?.TakeCriuConnection(),
        };
        _dumpLog = Path.Combine(spec.WorkDir, spec.LogFile);

        try
        {
            await _criu.DumpAsync(spec, OnNotifyAsync, frozen).ConfigureAwait(false);
            return null;
        }
        catch (Exception ex) when (ex is CriuException or CriuNotifyHandlerException or OperationCanceledException or IOException)
        {
            return ex;
        }
    }

    private async Task<bool> OnNotifyAsync(string script, int notifyPid)
    {
        switch (script)
        {
            case CriuScripts.PreDump:
                _frozenAt = _time.GetTimestamp();
                _wireBeforeFreeze = _pages?.Snapshot().WireBytes ?? 0;
                _events.Started(MigrationPhase.Dump, "freezing and dumping");
                return true;
            case CriuScripts.PostDump:
                await OnPostDumpAsync().ConfigureAwait(false);
                return true; // CRIU now kills (or reaps) the source tree, or resumes it for a dry run.
            default:
                return true;
        }
    }

    /// <summary>
    /// The tree is dumped and frozen: the last pages, the images, the restore on the target, and — once every source
    /// task has SIGKILL queued — the commit. Throwing here refuses post-dump, and CRIU resumes the source.
    /// </summary>
    private async Task OnPostDumpAsync()
    {
        _dumpDone = _time.GetTimestamp();
        ThrowIfCancelled();
        _sourceTree = ProcessTree.Enumerate(_pid); // frozen: exactly the tasks CRIU dumped
        _frozenCts!.CancelAfter(_options.CutoverTimeout);
        var frozen = _frozenCts.Token;
        _events.Ended(MigrationPhase.Dump, "CRIU's dump done; the tree is frozen");
        if (_pages is not null)
        {
            _events.Started(MigrationPhase.FinalRound, _lazyFinal ? "sending the pages written since the last iteration" : "waiting for the target to hold every page");
            await FinishPagesAsync(_pages, frozen).ConfigureAwait(false);
            _events.Ended(MigrationPhase.FinalRound, _finalRound is { } fr
                ? $"{fr.MemoryPages + fr.ImagePages} pages sent while frozen, {fr.CleanPages} kept from pre-copy"
                : $"{_pageStats?.Pages} pages durable on the target");
        }

        _manifest = ImageManifest.Build(_images);
        LogDumped(_manifest.Count, ImageManifest.TotalBytes(_manifest), _time.GetElapsedTime(_frozenAt, _dumpDone).TotalMilliseconds);
        _events.Started(MigrationPhase.Transfer, $"dumped {_manifest.Count} images, {ImageManifest.TotalBytes(_manifest) >> 20} MiB; sending");
        long sending = _time.GetTimestamp();
        _bytesSent = await _target.SendImagesAsync(Id, _images, _manifest, frozen).ConfigureAwait(false);
        _transferDone = _time.GetTimestamp();
        LogImagesSent(_manifest.Count, _bytesSent, _time.GetElapsedTime(sending, _transferDone).TotalMilliseconds);
        _events.Ended(MigrationPhase.Transfer, $"{_bytesSent} bytes of images sent");
        if (_options.DryRun)
        {
            // Everything moved; nothing restored. CRIU resumes the tree (leave_running).
            return;
        }

        ThrowIfCancelled();
        _events.Started(MigrationPhase.Restore, "restoring on target");
        if (_owner.Addresses.Any)
        {
            // The tree is frozen and its connections locked: nothing here answers for the address while it moves, and
            // the target brings it up before its restore binds to it. A rollback puts it back (RollBackAsync).
            await _owner.Addresses.TakeDownAsync(frozen).ConfigureAwait(false);
            _events.Note(MigrationPhase.Restore, $"service address {string.Join(", ", _options.MoveAddresses)} off this host");
        }

        _targetPid = await _target.RestoreAsync(Id, _manifest, _pages is not null, _lazyFinal && _options.LazyRestore, frozen).ConfigureAwait(false);
        _restoreDone = _time.GetTimestamp();
        _restoredOnTarget = true;
        LogRestored(_targetPid);
        _events.Ended(MigrationPhase.Restore, $"restored on the target as pid {_targetPid} (stopped)");
        await CommitEarlyAsync().ConfigureAwait(false);
    }

    /// <summary>A cancel that came while frozen (<see cref="CommitGate"/>): refusing post-dump from here resumes the source.</summary>
    private void ThrowIfCancelled()
    {
        if (_gate?.Cancelled == true)
        {
            throw new OperationCanceledException("cancelled by the caller");
        }
    }

    /// <summary>The page stream's last round, acknowledged durable by the target; the tracker detached.</summary>
    private async Task FinishPagesAsync(IPageTransport pages, CancellationToken frozen)
    {
        if (_lazyFinal)
        {
            // CRIU wrote metadata only: the last round is ours, read from the tree CRIU keeps frozen.
            var vpids = _sourceTree.ToDictionary(ProcessMemory.VirtualPid, p => p);
            _finalRound = await _precopy!.SendFinalRoundAsync(pages, _images, vpids, frozen).ConfigureAwait(false);
            _pageStats = await pages.FinishWithoutCriuAsync(frozen).ConfigureAwait(false);
        }
        else
        {
            // CRIU closed its page-server session before post-dump; this is the target's durable ack.
            _pageStats = await pages.Completion.WaitAsync(frozen).ConfigureAwait(false);
        }

        // The final harvest is done: detach now, while the tasks are frozen and alive (after the commit they are gone;
        // on a rollback they resume with nothing of the tracker left).
        _precopy?.Dispose();
        LogPagesDone(_pageStats.Pages, _pageStats.ZeroPages, _pageStats.WireBytes, _pageStats.CompressionRatio, _pageStats.Elapsed.TotalMilliseconds);
    }

    /// <summary>
    /// CRIU would kill the source tree now and answer only once its memory is freed (1 GiB: ~0.15 s). A task with
    /// SIGKILL queued never runs its code again, so the target copy may run as soon as every source task has it: kill
    /// them here (CRIU then reaps them as killed) and commit at once.
    /// </summary>
    private async Task CommitEarlyAsync()
    {
        if (_gate is not null && !_gate.TryPassCommit())
        {
            // Cancelled before the point of no return: refusing post-dump resumes the source (the rollback).
            throw new OperationCanceledException("cancelled by the caller before the commit");
        }

        _events.Started(MigrationPhase.Commit, "source stopped; resuming on target");
        if (!KillFrozenTree(_sourceTree))
        {
            return;
        }

        try
        {
            await _owner.CallAsync(MigrationPhase.Commit, WorkloadOutcome.OnTargetUnconfirmed, c => _target.CommitAsync(Id, c), CancellationToken.None)
                .ConfigureAwait(false);
            _committedAt = _time.GetTimestamp();
            _events.Ended(MigrationPhase.Commit, $"workload resumed on the target as pid {_targetPid}");
        }
        catch (MigrationException ex)
        {
            // The source is gone either way; the commit is retried once CRIU answered.
            LogCommitRetry(0, ex.Message);
        }
    }

    /// <summary>What this migration did; "resumed" is when the tree ran again (on the target, or on the source for a dry run).</summary>
    private MigrationResult Result(bool dryRun, long resumed, long end, TimeSpan restore) => new()
    {
        MigrationId = Id,
        SourcePid = _pid,
        TargetPid = dryRun ? 0 : _targetPid,
        Mode = _options.Mode,
        DryRun = dryRun,
        ImageFiles = _manifest.Count,
        BytesSent = _bytesSent + (_pageStats?.WireBytes ?? 0),
        Pages = _pageStats,
        Iterations = _precopy?.Iterations ?? [],
        PrecopyNote = _precopyNote,
        ThrottlePercent = _throttle?.MaxReached ?? 0,
        FinalRound = _finalRound,
        BytesFrozen = _bytesSent + (_pageStats?.WireBytes ?? 0) - _wireBeforeFreeze,
        Frozen = _time.GetElapsedTime(_frozenAt, resumed),
        Total = _time.GetElapsedTime(_started, end),
        Dump = _time.GetElapsedTime(_frozenAt, _dumpDone),
        Transfer = _time.GetElapsedTime(_dumpDone, _transferDone),
        Restore = restore,
        ProvisionedBytes = _begun.ProvisionedBytes,
        Begin = _beginTook,
    };
}

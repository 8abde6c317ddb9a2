using Migration.Engine.Criu;
using Migration.Engine.Network;
using Migration.Engine.Processes;
using Migration.PageServer.Transport;

namespace Migration.Source;

/// <summary>After CRIU answered: commit on the target, or roll back to the source, from what is observed.</summary>
internal sealed partial class Cutover
{
    private async Task<MigrationResult> DryRunDoneAsync()
    {
        await _owner.AbortTargetAsync(Id, "dry run").ConfigureAwait(false);
        long done = _time.GetTimestamp();
        var dry = Result(dryRun: true, resumed: _transferDone, end: done, restore: TimeSpan.Zero);
        LogDryRun(Id, dry.Dump.TotalMilliseconds, dry.BytesSent);
        return dry;
    }

    /// <summary>CRIU answered: decide from what is observed, not from what was hoped. Is the source tree still there?</summary>
    private async Task<MigrationResult> ConcludeAsync(Exception? dumpFailure, CancellationToken ct)
    {
        bool sourceAlive = ProcessTree.IsAlive(_pid);
        if (_committedAt != 0 && sourceAlive)
        {
            // The target copy runs (committed after every source task took SIGKILL): the source can only be dying.
            // Never abort a committed target; make sure of the source instead.
            LogSourceStillDying(_pid);
            KillFrozenTree(_sourceTree);
            sourceAlive = false;
        }

        if (sourceAlive || !_restoredOnTarget)
        {
            throw await RollBackAsync(dumpFailure, sourceAlive).ConfigureAwait(false);
        }

        // The source copy is gone and the target holds a stopped copy: it must run now.
        if (dumpFailure is not null)
        {
            LogDumpErrorAfterCommit(Describe(dumpFailure) ?? "");
        }

        long committed = _committedAt;
        if (committed == 0)
        {
            if (!_events.HasStarted(MigrationPhase.Commit))
            {
                _events.Started(MigrationPhase.Commit, "source stopped; resuming on target");
            }

            await CommitAsync(ct).ConfigureAwait(false);
            committed = _time.GetTimestamp();
            _events.Ended(MigrationPhase.Commit, $"workload resumed on the target as pid {_targetPid}");
        }

        await RemoveNetworkLockAsync().ConfigureAwait(false);
        var result = Result(dryRun: false, resumed: committed, end: committed, restore: _time.GetElapsedTime(_transferDone, _restoreDone));
        LogCommitted(Id, _targetPid, result.Frozen.TotalMilliseconds, result.Total.TotalMilliseconds, _bytesSent);
        return result;
    }

    /// <summary>
    /// A dump that succeeded leaves CRIU's network lock on this host (its nftables table drops the tree's connections,
    /// so that nothing here answers for them); once the target copy runs it is ours to remove. Best effort: a lock
    /// left is logged with the command that removes it, and does not fail a migration that succeeded.
    /// </summary>
    private async Task RemoveNetworkLockAsync()
    {
        try
        {
            foreach (var table in await CriuNetworkLock.RemoveOfLogAsync(_dumpLog).ConfigureAwait(false))
            {
                LogLockRemoved(table);
            }
        }
        catch (Exception ex) when (ex is IOException or TimeoutException or System.ComponentModel.Win32Exception or UnauthorizedAccessException)
        {
            LogLockLeft(ex.Message);
        }
    }

    /// <summary>The target holds nothing that may run: discard it there, and say where the workload is.</summary>
    private async Task<MigrationException> RollBackAsync(Exception? dumpFailure, bool sourceAlive)
    {
        var reason = Describe(dumpFailure) ?? "source tree still running after the dump";
        if (_pages is not null && dumpFailure is not null && await PageFailureAsync(_pages).ConfigureAwait(false) is { } pageFailure)
        {
            // CRIU only saw its page-server connection fail; the page stream knows why.
            reason = $"{pageFailure} (criu: {reason})";
        }

        await _owner.AbortTargetAsync(Id, reason).ConfigureAwait(false);
        if (sourceAlive)
        {
            // After the target let go of them (its abort takes them down there).
            await _owner.Addresses.BringBackAsync().ConfigureAwait(false);
        }

        var phase = dumpFailure is CriuNotifyHandlerException ? (_transferDone == 0 ? MigrationPhase.Transfer : MigrationPhase.Restore) : MigrationPhase.Dump;
        var outcome = sourceAlive ? WorkloadOutcome.ResumedOnSource : WorkloadOutcome.OnTargetUnconfirmed;
        if (!sourceAlive)
        {
            // Neither copy runs: the source died during its own dump, and the target holds nothing restorable.
            LogSourceLost(_pid);
        }
        else
        {
            LogRolledBack(_pid, reason);
        }

        return new MigrationException(phase, outcome, $"{phase} failed: {reason}; " +
            (sourceAlive ? $"the workload (pid {_pid}) resumed on the source" : "the source tree exited during the dump"), dumpFailure);
    }

    /// <summary>The commit once CRIU answered, retried: the source copy is gone, so abandoning it would leave the only copy stopped.</summary>
    private async Task CommitAsync(CancellationToken ct)
    {
        var deadline = _time.GetTimestamp();
        Exception? last = null;
        for (int attempt = 1; _time.GetElapsedTime(deadline) < _options.CommitRetryFor; attempt++)
        {
            try
            {
                // Not cancelled by the caller: abandoning a commit would leave the only copy stopped.
                await _owner.CallAsync(MigrationPhase.Commit, WorkloadOutcome.OnTargetUnconfirmed,
                    c => _target.CommitAsync(Id, c), CancellationToken.None).ConfigureAwait(false);
                return;
            }
            catch (MigrationException ex) when (ex.InnerException is Grpc.Core.RpcException { StatusCode: Grpc.Core.StatusCode.DataLoss })
            {
                // A definite no: the target killed its copy (it could not be filled). Retrying cannot bring it back.
                LogWorkloadLost(_targetPid, ex.Message);
                throw new MigrationException(MigrationPhase.Commit, WorkloadOutcome.Lost,
                    $"the target refused to resume the workload (migration {Id}): {ex.Message}. The source copy had already been " +
                    "stopped, so the workload is lost", ex);
            }
            catch (MigrationException ex)
            {
                last = ex;
                LogCommitRetry(attempt, ex.Message);
                await Task.Delay(TimeSpan.FromSeconds(Math.Min(5, attempt)), _time, CancellationToken.None).ConfigureAwait(false);
            }
        }

        throw new MigrationException(MigrationPhase.Commit, WorkloadOutcome.OnTargetUnconfirmed,
            $"the workload was restored on the target (pid {_targetPid}, migration {Id}) and the source copy is gone, " +
            $"but the target did not confirm resuming it: {last?.Message}. It is kept stopped there; " +
            $"resume it on the target with: kill -CONT {_targetPid} (and its children)", last);
    }

    /// <summary>
    /// Queues SIGKILL to every task of the frozen source tree; true when each one took it (or was already gone). A task
    /// that could not be signalled leaves the kill to CRIU, and the commit waits for its answer.
    /// </summary>
    private bool KillFrozenTree(IReadOnlyList<int> tree)
    {
        if (_options.DryRun || tree.Count == 0)
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

    private static string? Describe(Exception? ex) => ex switch
    {
        null => null,
        CriuNotifyHandlerException h => h.InnerException?.Message ?? h.Message,
        OperationCanceledException => "timed out or cancelled",
        _ => ex.Message,
    };
}

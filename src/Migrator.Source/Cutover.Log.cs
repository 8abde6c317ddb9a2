using Microsoft.Extensions.Logging;

namespace Migration.Source;

/// <summary>The cutover's log lines (event ids 204-218; 200-203 and 211-212 are <see cref="SourceMigration"/>'s).</summary>
internal sealed partial class Cutover
{
    [LoggerMessage(EventId = 204, Level = LogLevel.Information, Message = "dumped {Files} image files, {Bytes} bytes, in {Ms:0} ms (tree frozen)")]
    private partial void LogDumped(int files, ulong bytes, double ms);

    [LoggerMessage(EventId = 229, Level = LogLevel.Information, Message = "{Files} image files ({Bytes} bytes) on the target in {Ms:0.0} ms")]
    private partial void LogImagesSent(int files, ulong bytes, double ms);

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

    [LoggerMessage(EventId = 213, Level = LogLevel.Information, Message = "pages durable on target: {Pages} pages ({Zero} zero), {Wire} bytes on the wire, ratio {Ratio:0.00}, {Ms:0} ms")]
    private partial void LogPagesDone(ulong pages, ulong zero, ulong wire, double ratio, double ms);

    [LoggerMessage(EventId = 214, Level = LogLevel.Information, Message = "dry run {Id} done: dump and page transfer {Ms:0} ms, {Bytes} bytes; discarded on the target, tree kept running")]
    private partial void LogDryRun(string id, double ms, ulong bytes);

    [LoggerMessage(EventId = 215, Level = LogLevel.Warning, Message = "{Note}")]
    private partial void LogPrecopyFallback(string note);

    [LoggerMessage(EventId = 228, Level = LogLevel.Error, Message = "the target refused to resume its copy (pid {Pid}) after the source copy was stopped: the workload is lost ({Message})")]
    private partial void LogWorkloadLost(int pid, string message);

    [LoggerMessage(EventId = 216, Level = LogLevel.Warning, Message = "could not kill the source tree ({Error}); CRIU kills it and the commit waits for it")]
    private partial void LogKillFailed(string error);

    [LoggerMessage(EventId = 217, Level = LogLevel.Warning, Message = "source pid {Pid} still visible after SIGKILL and CRIU's answer; killed again (the target copy is committed)")]
    private partial void LogSourceStillDying(int pid);

    [LoggerMessage(EventId = 225, Level = LogLevel.Information, Message = "CRIU's network lock on this host removed (nft table inet {Table})")]
    private partial void LogLockRemoved(string table);

    [LoggerMessage(EventId = 226, Level = LogLevel.Warning, Message = "CRIU's network lock may be left on this host: {Reason}; list it with 'nft list tables inet' and remove it with 'nft delete table inet CRIU-...'")]
    private partial void LogLockLeft(string reason);
}

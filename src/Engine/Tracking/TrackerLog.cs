using Microsoft.Extensions.Logging;

namespace Migration.Engine.Tracking;

/// <summary>Log events of the dirty tracker (event ids 900-909).</summary>
internal static partial class TrackerLog
{
    /// <summary>A line logged by libmigrate_track (it starts with "track: ").</summary>
    [LoggerMessage(EventId = 900, Message = "{Line}")]
    public static partial void Native(ILogger logger, LogLevel level, string line);

    [LoggerMessage(EventId = 901, Level = LogLevel.Information,
        Message = "tracking pid {Pid}: {Vmas} VMAs, {MiB} MiB, {Refused} refused; attach {AttachMs:0.000} ms, task stopped {StopMs:0.000} ms")]
    public static partial void Attached(ILogger logger, int pid, uint vmas, ulong mib, uint refused, double attachMs, double stopMs);

    [LoggerMessage(EventId = 902, Level = LogLevel.Warning,
        Message = "pid {Pid}: VMA {Start:x}-{End:x} {Perms} is not tracked ({Reason}): treat it as always dirty")]
    public static partial void VmaRefused(ILogger logger, int pid, ulong start, ulong end, string perms, string reason);

    [LoggerMessage(EventId = 903, Level = LogLevel.Information,
        Message = "pid {Pid}: a tracked VMA was replaced; it was reported whole and the tracker needs a refresh")]
    public static partial void LayoutChanged(ILogger logger, int pid);

    [LoggerMessage(EventId = 904, Level = LogLevel.Information, Message = "stopped tracking pid {Pid}")]
    public static partial void Detached(ILogger logger, int pid);

    [LoggerMessage(EventId = 905, Level = LogLevel.Debug,
        Message = "pid {Pid}: {Count} signals arrived while the tracker was injecting and were sent again")]
    public static partial void SignalsRedelivered(ILogger logger, int pid, uint count);

    [LoggerMessage(EventId = 906, Level = LogLevel.Debug,
        Message = "pid {Pid}: refresh found {Ranges} new dirty ranges ({Pages} pages)")]
    public static partial void Refreshed(ILogger logger, int pid, int ranges, ulong pages);
}

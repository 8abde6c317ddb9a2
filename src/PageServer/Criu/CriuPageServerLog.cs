using Microsoft.Extensions.Logging;

namespace Migration.PageServer.Criu;

/// <summary>Log definitions of the CRIU page-server endpoints (event ids 1100-1119).</summary>
internal static partial class CriuPageServerLog
{
    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "page server listening on {EndPoint}")]
    public static partial void Listening(this ILogger logger, string endPoint);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Information, Message = "page server on {EndPoint} accepted {Remote}")]
    public static partial void Accepted(this ILogger logger, string endPoint, string remote);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Warning, Message = "page server on {EndPoint}: no connection within {Timeout}")]
    public static partial void AcceptTimedOut(this ILogger logger, string endPoint, TimeSpan timeout);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Information, Message = "{Session} completed: {Counters}")]
    public static partial void SessionCompleted(this ILogger logger, string session, PageServerCounters counters);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Warning, Message = "{Session} failed ({Outcome}): {Error}")]
    public static partial void SessionFailed(this ILogger logger, string session, PageServerOutcome outcome, string error);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Information, Message = "{Session} canceled after {Counters}")]
    public static partial void SessionCanceled(this ILogger logger, string session, PageServerCounters counters);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Debug, Message = "{Session}: {Target} opened, has parent {HasParent}")]
    public static partial void TargetOpened(this ILogger logger, string session, Pages.PageTarget target, bool hasParent);
}

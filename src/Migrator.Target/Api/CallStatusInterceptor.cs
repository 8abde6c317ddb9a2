using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Migration.Target.Api;

/// <summary>
/// The API boundary of every Agent call: whatever its handler throws becomes the caller's status (<see cref="CallStatus"/>)
/// and is logged, so that a bug in one call fails that call only and never the agent.
/// </summary>
public sealed partial class CallStatusInterceptor(ILogger<CallStatusInterceptor> logger) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw Refusal(ex, context);
        }
    }

    /// <summary>A server stream (WatchMigration) the same way: a failure before or between its messages ends it with its status.</summary>
    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw Refusal(ex, context);
        }
    }

    private RpcException Refusal(Exception ex, ServerCallContext context)
    {
        bool clientGone = context.GetHttpContext().RequestAborted.IsCancellationRequested;
        var status = CallStatus.From(ex, context.Method, clientGone, out bool unexpected);
        if (unexpected)
        {
            LogUnexpected(context.Method, ex);
        }

        if (status.StatusCode == StatusCode.Cancelled && clientGone)
        {
            LogClientGone(context.Method);
        }
        else
        {
            LogCallFailed(context.Method, status.StatusCode, status.Detail);
        }

        return new RpcException(status);
    }

    [LoggerMessage(EventId = 500, Level = LogLevel.Warning, Message = "{Method} failed: {Status} {Detail}")]
    private partial void LogCallFailed(string method, StatusCode status, string detail);

    [LoggerMessage(EventId = 501, Level = LogLevel.Information, Message = "{Method}: client went away")]
    private partial void LogClientGone(string method);

    [LoggerMessage(EventId = 502, Level = LogLevel.Error, Message = "unexpected failure in {Method}")]
    private partial void LogUnexpected(string method, Exception ex);
}

using System.Buffers;
using Google.Protobuf;
using Migration.Engine.Network;
using Migration.PageServer.Control;
using Migration.Target.Incoming;

namespace Migration.Target.Api;

/// <summary>What a unary handler sees of its call.</summary>
public sealed class CallContext(HttpContext http, CancellationToken cancellation)
{
    public HttpContext Http { get; } = http;

    /// <summary>Cancelled when the deadline passes or the client goes away.</summary>
    public CancellationToken Cancellation { get; } = cancellation;

    public string Peer => $"{Http.Connection.RemoteIpAddress}:{Http.Connection.RemotePort}";
}

/// <summary>
/// Server side of the project's own gRPC binding on Kestrel HTTP/2: unary methods, standard framing,
/// grpc-timeout deadlines, grpc-status/grpc-message trailers. Interoperates with standard gRPC clients.
/// </summary>
public sealed partial class GrpcServer(ILogger<GrpcServer> logger)
{
    private readonly Dictionary<string, Func<ReadOnlySequence<byte>, CallContext, Task<IMessage>>> _methods = new(StringComparer.Ordinal);

    public void Map<TRequest, TResponse>(string path, MessageParser<TRequest> parser, Func<TRequest, CallContext, Task<TResponse>> handler)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse>
    {
        _methods[path] = async (payload, ctx) => await handler(parser.ParseFrom(payload), ctx).ConfigureAwait(false);
    }

    public async Task HandleAsync(HttpContext http)
    {
        var path = http.Request.Path.Value ?? "";
        if (!HttpMethods.IsPost(http.Request.Method) || http.Request.ContentType?.StartsWith(GrpcProtocol.ContentType, StringComparison.Ordinal) != true)
        {
            http.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return;
        }

        http.Response.ContentType = GrpcProtocol.ContentType;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        if (GrpcProtocol.TryParseTimeout(http.Request.Headers[GrpcProtocol.TimeoutHeader], out var timeout))
        {
            cts.CancelAfter(timeout);
        }

        var status = GrpcStatusCode.OK;
        string detail = "";
        try
        {
            if (!_methods.TryGetValue(path, out var method))
            {
                throw new GrpcCallException(GrpcStatusCode.Unimplemented, $"method {path} is not served by this agent");
            }

            var payload = await ReadSingleMessageAsync(http, cts.Token).ConfigureAwait(false);
            var reply = await method(payload, new CallContext(http, cts.Token)).ConfigureAwait(false);
            await http.Response.Body.WriteAsync(GrpcProtocol.Frame(reply.ToByteArray()), cts.Token).ConfigureAwait(false);
        }
        catch (GrpcCallException ex)
        {
            (status, detail) = (ex.Status, ex.Detail);
        }
        catch (TargetRequestException ex)
        {
            (status, detail) = (Map(ex.Error), ex.Message);
        }
        catch (InvalidProtocolBufferException ex)
        {
            (status, detail) = (GrpcStatusCode.InvalidArgument, $"malformed request message: {ex.Message}");
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            LogClientGone(path);
            return;
        }
        catch (OperationCanceledException)
        {
            (status, detail) = (GrpcStatusCode.DeadlineExceeded, $"{path}: deadline exceeded");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            (status, detail) = (GrpcStatusCode.Internal, ex.Message);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The API boundary: a bug in one call must become a status for that caller, never a dead agent.
            LogUnexpected(path, ex);
            (status, detail) = (GrpcStatusCode.Internal, $"internal error in {path}: {ex.GetType().Name}: {ex.Message}");
        }

        if (status != GrpcStatusCode.OK)
        {
            LogCallFailed(path, status, detail);
        }

        http.Response.AppendTrailer(GrpcProtocol.StatusTrailer, ((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (detail.Length > 0)
        {
            http.Response.AppendTrailer(GrpcProtocol.MessageTrailer, GrpcProtocol.EncodeMessage(detail));
        }
    }

    /// <summary>Reads the request body: exactly one message, length checked before its body is awaited.</summary>
    private static async Task<ReadOnlySequence<byte>> ReadSingleMessageAsync(HttpContext http, CancellationToken ct)
    {
        var reader = http.Request.BodyReader;
        while (true)
        {
            var result = await reader.ReadAsync(ct).ConfigureAwait(false);
            var buffer = result.Buffer;
            var consumed = buffer.Start;
            try
            {
                var probe = buffer;
                if (GrpcProtocol.TryReadFrame(ref probe, GrpcProtocol.MaxMessageBytes, out var payload) == GrpcProtocol.FrameStatus.Complete)
                {
                    if (!result.IsCompleted || !probe.IsEmpty)
                    {
                        // Wait for the end of the stream to be sure there is no second message.
                        if (!probe.IsEmpty)
                        {
                            throw new GrpcCallException(GrpcStatusCode.Unimplemented, "unary method received more than one message");
                        }
                    }
                    else
                    {
                        // Copy out: the pipe's memory is returned when we advance.
                        return new ReadOnlySequence<byte>(payload.ToArray());
                    }
                }
                else if (result.IsCompleted)
                {
                    throw new GrpcCallException(GrpcStatusCode.Internal, buffer.IsEmpty ? "request has no message" : $"incomplete message: {buffer.Length} bytes at end of stream");
                }
            }
            finally
            {
                reader.AdvanceTo(consumed, buffer.End);
            }
        }
    }

    private static GrpcStatusCode Map(TargetError e) => e switch
    {
        TargetError.InvalidArgument => GrpcStatusCode.InvalidArgument,
        TargetError.NotFound => GrpcStatusCode.NotFound,
        TargetError.FailedPrecondition => GrpcStatusCode.FailedPrecondition,
        TargetError.ResourceExhausted => GrpcStatusCode.ResourceExhausted,
        TargetError.DataLoss => GrpcStatusCode.DataLoss,
        _ => GrpcStatusCode.Internal,
    };

    [LoggerMessage(EventId = 500, Level = LogLevel.Warning, Message = "{Path} failed: {Status} {Detail}")]
    private partial void LogCallFailed(string path, GrpcStatusCode status, string detail);

    [LoggerMessage(EventId = 502, Level = LogLevel.Error, Message = "unexpected failure in {Path}")]
    private partial void LogUnexpected(string path, Exception ex);

    [LoggerMessage(EventId = 501, Level = LogLevel.Information, Message = "{Path}: client went away")]
    private partial void LogClientGone(string path);
}

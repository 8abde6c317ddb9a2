using Google.Protobuf;
using Grpc.Core;
using Migration.Target.Incoming;

namespace Migration.Target.Api;

/// <summary>The status a caller reads for what a call's handler threw.</summary>
public static class CallStatus
{
    /// <summary>
    /// <paramref name="ex"/> as a status of <paramref name="method"/>: a refusal keeps its code and its message, a malformed
    /// message is InvalidArgument, the call's own cancellation is DeadlineExceeded (or Cancelled once the client is gone),
    /// a failure of the host (disk, permissions) is Internal with its message. Anything else is a bug: Internal,
    /// <paramref name="unexpected"/> set so that it is logged with its stack.
    /// </summary>
    public static Status From(Exception ex, string method, bool clientGone, out bool unexpected)
    {
        unexpected = false;
        switch (ex)
        {
            case RpcException rpc:
                return rpc.Status;
            case TargetRequestException refused:
                return new Status(ToStatusCode(refused.Error), refused.Message);
            case InvalidProtocolBufferException malformed:
                return new Status(StatusCode.InvalidArgument, $"malformed message in {method}: {malformed.Message}");
            case OperationCanceledException when clientGone:
                return new Status(StatusCode.Cancelled, $"{method}: the client went away");
            case OperationCanceledException:
                return new Status(StatusCode.DeadlineExceeded, $"{method}: deadline exceeded");
            case IOException or UnauthorizedAccessException or InvalidDataException:
                return new Status(StatusCode.Internal, ex.Message);
            default:
                unexpected = true;
                return new Status(StatusCode.Internal, $"internal error in {method}: {ex.GetType().Name}: {ex.Message}");
        }
    }

    public static StatusCode ToStatusCode(TargetError error) => error switch
    {
        TargetError.InvalidArgument => StatusCode.InvalidArgument,
        TargetError.NotFound => StatusCode.NotFound,
        TargetError.FailedPrecondition => StatusCode.FailedPrecondition,
        TargetError.ResourceExhausted => StatusCode.ResourceExhausted,
        TargetError.DataLoss => StatusCode.DataLoss,
        _ => StatusCode.Internal,
    };
}

namespace Migration.Target.Incoming;

/// <summary>Why the target refused a request; maps one to one onto gRPC status codes at the API boundary.</summary>
public enum TargetError
{
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    DataLoss,
    Internal,
}

/// <summary>A request the target refused, with a message meant for the source's user.</summary>
public sealed class TargetRequestException(TargetError error, string message) : Exception(message)
{
    public TargetError Error { get; } = error;
}

using System.Net.Sockets;
using System.Security.Authentication;
using Grpc.Core;
using Migration.Engine.Network;

namespace Migration.Source.Agent;

/// <summary>
/// What a failed call to the agent tells the user. Grpc.Net.Client reports a transport failure as Unavailable (or
/// Internal) with the HTTP exception as the status's debug exception; this names the cause: the agent did not prove
/// the token, refused ours, could not be reached, or did not answer in time. A status the agent sent keeps its code
/// and its detail.
/// </summary>
public static class AgentCallErrors
{
    /// <summary>An <see cref="RpcException"/> with the same kind of failure and a message saying what it means.</summary>
    public static RpcException Describe(RpcException ex, string method, Endpoint endpoint, TimeSpan timeout)
    {
        var (code, detail) = ex.StatusCode switch
        {
            StatusCode.DeadlineExceeded => (StatusCode.DeadlineExceeded, $"{method} on {endpoint}: no answer within {timeout.TotalSeconds:0.#} s"),
            _ when ex.Status.DebugException is { } local => Transport(local, ex.StatusCode, method, endpoint),
            _ => (ex.StatusCode, ex.Status.Detail.Length > 0 ? ex.Status.Detail : $"{method} on {endpoint} failed"),
        };
        return new RpcException(new Status(code, detail, ex.Status.DebugException), ex.Trailers, $"{code}: {detail}");
    }

    /// <summary>The call failed on this side, before or while the agent answered: which part of the transport failed.</summary>
    private static (StatusCode, string) Transport(Exception local, StatusCode code, string method, Endpoint endpoint)
    {
        var chain = Chain(local).ToArray();
        if (chain.OfType<AuthenticationException>().Any())
        {
            return (StatusCode.Unauthenticated,
                $"{endpoint} did not prove knowledge of the token (TLS peer key mismatch): is it a migrate-agent using the same token file?");
        }

        var http = chain.OfType<HttpRequestException>().FirstOrDefault();
        // Grpc.Net.Client may hand over the socket's failure itself or wrapped in HttpRequestException(ConnectionError).
        if (chain.OfType<SocketException>().FirstOrDefault() is { } socket && http?.HttpRequestError is null or HttpRequestError.ConnectionError)
        {
            return (StatusCode.Unavailable, $"cannot connect to the agent at {endpoint}: {socket.Message} (is migrate-agent running and listening there?)");
        }

        if (http?.HttpRequestError == HttpRequestError.SecureConnectionError)
        {
            return (StatusCode.Unauthenticated,
                $"TLS with {endpoint} failed: the agent refused our credentials (different token?) or is not a migrate-agent ({chain[^1].Message})");
        }

        return (code, $"{method} on {endpoint}: {chain[^1].Message}");
    }

    private static IEnumerable<Exception> Chain(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
        {
            yield return e;
        }
    }
}

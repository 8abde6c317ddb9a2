using System.Net.Security;
using System.Security.Authentication;
using Grpc.Core;
using Grpc.Net.Client;
using Migration.Engine.Contract;
using Migration.Engine.Network;
using Migration.Engine.Security;
using AgentApi = Migration.Control.V1.Agent;

namespace Migration.Source.Agent;

/// <summary>
/// The gRPC channel to a target agent (Grpc.Net.Client): HTTP/2 over TLS 1.3 whose peer must hold the token-derived key
/// and which presents the same key to the agent (mutual authentication). Every call carries a deadline and the caller's
/// cancellation; a failed call is an <see cref="RpcException"/> whose message says what failed (<see cref="AgentCallErrors"/>).
/// </summary>
public sealed class AgentChannel : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly TimeProvider _time;

    public AgentChannel(Endpoint endpoint, TokenCredentials credentials, TimeSpan connectTimeout, TimeProvider? time = null)
    {
        Endpoint = endpoint;
        _time = time ?? TimeProvider.System;
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = connectTimeout,
            EnableMultipleHttp2Connections = false,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            KeepAlivePingDelay = TimeSpan.FromSeconds(20),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(20),
            SslOptions = new SslClientAuthenticationOptions
            {
                TargetHost = TokenCredentials.ServerName,
                EnabledSslProtocols = SslProtocols.Tls13,
                ApplicationProtocols = [SslApplicationProtocol.Http2],
                ClientCertificates = [credentials.Certificate],
                LocalCertificateSelectionCallback = (_, _, _, _, _) => credentials.Certificate,
                // The agent is trusted because it proves the token-derived key, not by any CA.
                RemoteCertificateValidationCallback = (_, cert, _, _) => credentials.IsPeer(cert),
            },
        };
        _channel = GrpcChannel.ForAddress(endpoint.ToHttpsUri(), new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxSendMessageSize = ControlApi.MaxMessageBytes,
            MaxReceiveMessageSize = ControlApi.MaxMessageBytes,
        });
        Client = new AgentApi.AgentClient(_channel);
    }

    public Endpoint Endpoint { get; }

    /// <summary>The generated client of the Agent service on this channel.</summary>
    public AgentApi.AgentClient Client { get; }

    /// <summary>Calls outside the generated client (tests feed the agent what no well-behaved client would).</summary>
    public CallInvoker CreateCallInvoker() => _channel.CreateCallInvoker();

    /// <summary>
    /// Makes one call (<paramref name="method"/> names it in messages) with a deadline <paramref name="timeout"/> from now,
    /// which travels to the agent (grpc-timeout), and <paramref name="ct"/>, which cancels it on both sides.
    /// </summary>
    /// <exception cref="RpcException">The call failed; its message says how (<see cref="AgentCallErrors.Describe"/>).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled.</exception>
    public async Task<TResponse> CallAsync<TResponse>(string method, Func<AgentApi.AgentClient, CallOptions, AsyncUnaryCall<TResponse>> call,
        TimeSpan timeout, CancellationToken ct)
    {
        var options = new CallOptions(deadline: _time.GetUtcNow().UtcDateTime + timeout, cancellationToken: ct);
        try
        {
            using var pending = call(Client, options);
            return await pending.ResponseAsync.ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
        {
            // The caller gave up (its own bound or its cancellation): cancellation, not a failure of the agent.
            throw new OperationCanceledException($"{method} on {Endpoint}: cancelled", ex, ct);
        }
        catch (RpcException ex)
        {
            throw AgentCallErrors.Describe(ex, method, Endpoint, timeout);
        }
    }

    public void Dispose() => _channel.Dispose();
}

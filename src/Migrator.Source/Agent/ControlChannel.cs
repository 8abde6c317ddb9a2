using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Authentication;
using Google.Protobuf;
using Migration.Engine.Network;
using Migration.Engine.Security;
using Migration.PageServer.Control;

namespace Migration.Source.Agent;

/// <summary>
/// Client side of the project's own gRPC binding: unary calls over HttpClient HTTP/2, with TLS whose peer
/// must hold the token-derived key and which presents the same to the agent (mutual authentication).
/// </summary>
public sealed class ControlChannel : IDisposable
{
    private readonly HttpClient _http;
    private readonly Uri _base;

    public ControlChannel(Endpoint endpoint, TokenCredentials credentials, TimeSpan connectTimeout)
    {
        Endpoint = endpoint;
        _base = endpoint.ToHttpsUri();
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
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public Endpoint Endpoint { get; }

    public async Task<TResponse> CallAsync<TRequest, TResponse>(string method, TRequest request, MessageParser<TResponse> parser,
        TimeSpan timeout, CancellationToken ct)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse>
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(_base, method))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(GrpcProtocol.Frame(request.ToByteArray())),
        };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(GrpcProtocol.ContentType);
        message.Headers.TryAddWithoutValidation("te", "trailers");
        message.Headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, GrpcProtocol.EncodeTimeout(timeout));

        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new GrpcCallException(GrpcStatusCode.DeadlineExceeded, $"{method} on {Endpoint}: no answer within {timeout.TotalSeconds:0.#} s");
        }
        catch (HttpRequestException ex)
        {
            throw Classify(method, ex);
        }

        using (response)
        {
            if (response.StatusCode != HttpStatusCode.OK)
            {
                throw new GrpcCallException(GrpcStatusCode.Internal, $"{method} on {Endpoint}: HTTP {(int)response.StatusCode}");
            }

            byte[] body;
            try
            {
                body = await ReadBoundedAsync(response.Content, cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new GrpcCallException(GrpcStatusCode.DeadlineExceeded, $"{method} on {Endpoint}: answer not complete within {timeout.TotalSeconds:0.#} s");
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException)
            {
                throw new GrpcCallException(GrpcStatusCode.Unavailable, $"{method} on {Endpoint}: connection lost while reading the answer ({ex.Message})", ex);
            }

            var status = Header(response, GrpcProtocol.StatusTrailer);
            var detail = GrpcProtocol.DecodeMessage(Header(response, GrpcProtocol.MessageTrailer));
            if (status is null)
            {
                throw new GrpcCallException(GrpcStatusCode.Internal, $"{method} on {Endpoint}: answer without grpc-status");
            }

            if (status != "0")
            {
                var code = int.TryParse(status, out var c) && Enum.IsDefined((GrpcStatusCode)c) ? (GrpcStatusCode)c : GrpcStatusCode.Unknown;
                throw new GrpcCallException(code, detail.Length > 0 ? detail : $"{method} failed");
            }

            var seq = new System.Buffers.ReadOnlySequence<byte>(body);
            if (GrpcProtocol.TryReadFrame(ref seq, GrpcProtocol.MaxMessageBytes, out var payload) != GrpcProtocol.FrameStatus.Complete || !seq.IsEmpty)
            {
                throw new GrpcCallException(GrpcStatusCode.Internal, $"{method} on {Endpoint}: answer is not exactly one message ({body.Length} bytes)");
            }

            return parser.ParseFrom(payload);
        }
    }

    private static string? Header(HttpResponseMessage response, string name)
    {
        if (response.TrailingHeaders.TryGetValues(name, out var v) || response.Headers.TryGetValues(name, out v))
        {
            return v.FirstOrDefault();
        }

        return null;
    }

    private static async Task<byte[]> ReadBoundedAsync(HttpContent content, CancellationToken ct)
    {
        await using var stream = await content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        using var ms = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int n;
        while ((n = await stream.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
        {
            if (ms.Length + n > GrpcProtocol.MaxMessageBytes + GrpcProtocol.FrameHeaderSize)
            {
                throw new GrpcCallException(GrpcStatusCode.ResourceExhausted, "answer exceeds the message size limit");
            }

            ms.Write(buffer, 0, n);
        }

        return ms.ToArray();
    }

    private GrpcCallException Classify(string method, HttpRequestException ex)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
        {
            if (e is AuthenticationException)
            {
                return new GrpcCallException(GrpcStatusCode.Unauthenticated,
                    $"{Endpoint} did not prove knowledge of the token (TLS peer key mismatch): is it a migrate-agent using the same token file?", ex);
            }
        }

        if (ex.HttpRequestError == HttpRequestError.ConnectionError && ex.InnerException is System.Net.Sockets.SocketException se)
        {
            return new GrpcCallException(GrpcStatusCode.Unavailable, $"cannot connect to the agent at {Endpoint}: {se.Message}", ex);
        }

        if (ex.HttpRequestError == HttpRequestError.SecureConnectionError || ex.InnerException is IOException)
        {
            return new GrpcCallException(GrpcStatusCode.Unauthenticated,
                $"TLS with {Endpoint} failed: the agent refused our credentials (different token?) or is not a migrate-agent ({ex.InnerException?.Message ?? ex.Message})", ex);
        }

        return new GrpcCallException(GrpcStatusCode.Unavailable, $"{method} on {Endpoint}: {ex.Message}", ex);
    }

    public void Dispose() => _http.Dispose();
}

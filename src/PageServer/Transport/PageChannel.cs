using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using Migration.Engine.Network;
using Migration.Engine.Security;

namespace Migration.PageServer.Transport;


/// <summary>
/// Opens the page stream's connection between the hosts, authenticated both ways with the shared token:
/// TLS 1.3 pinned to the token-derived key (as the control API) when the peer is not loopback; on loopback,
/// where nothing crosses a wire, plain TCP after an HMAC challenge-response with the token-derived MAC key.
/// </summary>
public static class PageChannel
{
    /// <summary>ALPN name of the page stream, so a TLS peer of another kind is refused in the handshake.</summary>
    public static readonly SslApplicationProtocol Alpn = new("migrate-pages/1");

    /// <summary>Socket buffers large enough for a fast link's bandwidth-delay product (the kernel caps them).</summary>
    public const int SocketBufferBytes = 4 << 20;

    public static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(15);

    private static ReadOnlySpan<byte> Magic => "MPS1"u8;

    private const int NonceBytes = 32;

    public static async Task<Stream> ConnectAsync(Endpoint endpoint, TokenCredentials credentials, CancellationToken ct)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, SendBufferSize = SocketBufferBytes, ReceiveBufferSize = SocketBufferBytes };
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(HandshakeTimeout);
            await socket.ConnectAsync(endpoint.Host, endpoint.Port, cts.Token).ConfigureAwait(false);
            var net = new NetworkStream(socket, ownsSocket: true);
            if (IsLoopback(socket.RemoteEndPoint))
            {
                await ClientProofAsync(net, credentials, cts.Token).ConfigureAwait(false);
                return net;
            }

            var ssl = new SslStream(net, leaveInnerStreamOpen: false);
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = TokenCredentials.ServerName,
                EnabledSslProtocols = SslProtocols.Tls13,
                ApplicationProtocols = [Alpn],
                ClientCertificates = [credentials.Certificate],
                LocalCertificateSelectionCallback = (_, _, _, _, _) => credentials.Certificate,
                RemoteCertificateValidationCallback = (_, cert, _, _) => credentials.IsPeer(cert),
            }, cts.Token).ConfigureAwait(false);
            return ssl;
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException or SocketException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            socket.Dispose();
            throw new IOException(ex is AuthenticationException
                ? $"page stream to {endpoint}: the peer did not prove the token (TLS peer key mismatch)"
                : $"page stream to {endpoint}: {ex.Message}", ex);
        }
    }

    /// <summary>Authenticates an accepted connection; the caller owns <paramref name="socket"/> until this returns.</summary>
    public static async Task<Stream> AcceptAsync(Socket socket, TokenCredentials credentials, CancellationToken ct)
    {
        socket.NoDelay = true;
        socket.SendBufferSize = SocketBufferBytes;
        socket.ReceiveBufferSize = SocketBufferBytes;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(HandshakeTimeout);
        var net = new NetworkStream(socket, ownsSocket: true);
        try
        {
            if (IsLoopback(socket.RemoteEndPoint))
            {
                await ServerProofAsync(net, credentials, cts.Token).ConfigureAwait(false);
                return net;
            }

            var ssl = new SslStream(net, leaveInnerStreamOpen: false);
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = credentials.Certificate,
                ClientCertificateRequired = true,
                EnabledSslProtocols = SslProtocols.Tls13,
                ApplicationProtocols = [Alpn],
                RemoteCertificateValidationCallback = (_, cert, _, _) => credentials.IsPeer(cert),
            }, cts.Token).ConfigureAwait(false);
            return ssl;
        }
        catch
        {
            await net.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static bool IsLoopback(EndPoint? ep) => ep is IPEndPoint ip && IPAddress.IsLoopback(ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address);

    // Loopback handshake: C -> S  "MPS1" cn;  S -> C  sn HMAC(k, "S" cn sn);  C -> S  HMAC(k, "C" cn sn).
    private static async Task ClientProofAsync(Stream s, TokenCredentials c, CancellationToken ct)
    {
        var cn = RandomNumberGenerator.GetBytes(NonceBytes);
        await s.WriteAsync(Concat(Magic, cn), ct).ConfigureAwait(false);
        var reply = new byte[NonceBytes + 32];
        await s.ReadExactlyAsync(reply, ct).ConfigureAwait(false);
        var sn = reply.AsSpan(0, NonceBytes).ToArray();
        if (!CryptographicOperations.FixedTimeEquals(reply.AsSpan(NonceBytes), Mac(c, "S", cn, sn)))
        {
            throw new AuthenticationException("the page stream peer did not prove the token");
        }

        await s.WriteAsync(Mac(c, "C", cn, sn), ct).ConfigureAwait(false);
    }

    private static async Task ServerProofAsync(Stream s, TokenCredentials c, CancellationToken ct)
    {
        var hello = new byte[Magic.Length + NonceBytes];
        await s.ReadExactlyAsync(hello, ct).ConfigureAwait(false);
        if (!hello.AsSpan(0, Magic.Length).SequenceEqual(Magic))
        {
            throw new AuthenticationException("not a page stream client");
        }

        var cn = hello.AsSpan(Magic.Length).ToArray();
        var sn = RandomNumberGenerator.GetBytes(NonceBytes);
        await s.WriteAsync(Concat(sn, Mac(c, "S", cn, sn)), ct).ConfigureAwait(false);
        var proof = new byte[32];
        await s.ReadExactlyAsync(proof, ct).ConfigureAwait(false);
        if (!CryptographicOperations.FixedTimeEquals(proof, Mac(c, "C", cn, sn)))
        {
            throw new AuthenticationException("the page stream client did not prove the token");
        }
    }

    private static byte[] Mac(TokenCredentials c, string role, byte[] cn, byte[] sn) =>
        HMACSHA256.HashData(c.AuthKey, Concat(System.Text.Encoding.ASCII.GetBytes("migrate-pages/1 " + role), Concat(cn, sn)));

    private static byte[] Concat(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        var r = new byte[a.Length + b.Length];
        a.CopyTo(r);
        b.CopyTo(r.AsSpan(a.Length));
        return r;
    }
}

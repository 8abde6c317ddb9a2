using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Migration.Engine.Security;

/// <summary>
/// Mutual authentication from one shared token, with nothing else to distribute.
///
/// Both sides derive the same P-256 key pair from the token (PBKDF2-SHA256, then reduced to a valid
/// scalar) and present a self-signed certificate for it in TLS; each side accepts a peer only when the
/// peer's certificate carries exactly that public key. So proving possession of the private key in the
/// TLS handshake proves knowledge of the token, the token itself never leaves the host (not in logs,
/// arguments or on the wire), and someone on the path without it can neither terminate TLS as either
/// side nor read or alter the stream.
///
/// The public key is visible to anyone who connects, so a guessable token could be searched offline:
/// tokens must be long random strings (<see cref="MinimumTokenBytes"/>), and the slow KDF raises the cost.
/// </summary>
public sealed class TokenCredentials : IDisposable
{
    /// <summary>A token shorter than this is refused: 16 random bytes base64-encoded are 24 characters.</summary>
    public const int MinimumTokenBytes = 24;

    /// <summary>PBKDF2 iterations: ~0.1 s once per process, so each guess of an offline search costs as much.</summary>
    public const int KdfIterations = 200_000;

    /// <summary>Domain separation for the key derivation; bump the version to change the scheme.</summary>
    private static readonly byte[] s_salt = "migrate/v1/mtls-p256"u8.ToArray();

    /// <summary>The name in the certificates (SAN); clients that check names use it as the target name.</summary>
    public const string ServerName = "migrate-agent";

    private static readonly BigInteger s_p256Order = BigInteger.Parse(
        "0FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", System.Globalization.NumberStyles.HexNumber);

    private readonly ECDsa _key;

    private TokenCredentials(ECDsa key, byte[] publicKey, byte[] authKey)
    {
        _key = key;
        PublicKey = publicKey;
        AuthKey = authKey;
        Certificate = CreateCertificate(key);
    }

    /// <summary>
    /// A 32-byte MAC key from the same derivation (PBKDF2 output bytes 48..79; PBKDF2 is prefix-consistent, so
    /// the signing key is unchanged): proves the token where a channel runs without TLS (loopback).
    /// </summary>
    public byte[] AuthKey { get; }

    /// <summary>The SubjectPublicKeyInfo (DER) both peers must present.</summary>
    public byte[] PublicKey { get; }

    /// <summary>A self-signed certificate with the derived key (private key attached).</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>Short fingerprint of the derived public key, safe to log: it identifies the token without revealing it.</summary>
    public string KeyId => Convert.ToHexString(SHA256.HashData(PublicKey).AsSpan(0, 6)).ToLowerInvariant();

    /// <summary>Reads a token file (whitespace trimmed) and derives the credentials.</summary>
    public static TokenCredentials FromFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"token file {path} does not exist (create one with: head -c 32 /dev/urandom | base64 > {path}; chmod 600 {path})", path);
        }

        var mode = File.GetUnixFileMode(path);
        if ((mode & (UnixFileMode.OtherRead | UnixFileMode.OtherWrite)) != 0)
        {
            throw new UnauthorizedAccessException($"token file {path} is readable by other users (mode {Convert.ToString((int)mode, 8)}): chmod 600 {path}");
        }

        var token = File.ReadAllText(path).Trim();
        return FromToken(token, path);
    }

    public static TokenCredentials FromToken(string token, string source = "token")
    {
        var bytes = Encoding.UTF8.GetBytes(token);
        if (bytes.Length < MinimumTokenBytes)
        {
            throw new ArgumentException($"{source}: token is {bytes.Length} bytes; at least {MinimumTokenBytes} random bytes are required (head -c 32 /dev/urandom | base64)");
        }

        var seed = Rfc2898DeriveBytes.Pbkdf2(bytes, s_salt, KdfIterations, HashAlgorithmName.SHA256, 80);
        var authKey = seed.AsSpan(48, 32).ToArray();
        CryptographicOperations.ZeroMemory(bytes);

        // Reduce 384 bits modulo (n - 1), plus one: a uniform scalar in [1, n - 1].
        var k = new BigInteger(seed.AsSpan(0, 48), isUnsigned: true, isBigEndian: true) % (s_p256Order - 1) + 1;
        CryptographicOperations.ZeroMemory(seed);
        var d = new byte[32];
        k.TryWriteBytes(d, out int written, isUnsigned: true, isBigEndian: true);
        if (written < 32)
        {
            // Left-pad the big-endian scalar.
            Array.Copy(d, 0, d, 32 - written, written);
            Array.Clear(d, 0, 32 - written);
        }

        var key = ECDsa.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, D = d });
        CryptographicOperations.ZeroMemory(d);
        return new TokenCredentials(key, key.ExportSubjectPublicKeyInfo(), authKey);
    }

    /// <summary>True when <paramref name="peer"/> carries the token's public key.</summary>
    public bool IsPeer(X509Certificate? peer)
    {
        if (peer is null)
        {
            return false;
        }

        using var cert = new X509Certificate2(peer);
        using var pub = cert.GetECDsaPublicKey();
        if (pub is null)
        {
            return false;
        }

        return CryptographicOperations.FixedTimeEquals(pub.ExportSubjectPublicKeyInfo(), PublicKey);
    }

    /// <summary>PEM of the certificate and of the private key, for standard tools (grpcurl, grpcio) acting as a peer.</summary>
    public (string CertificatePem, string PrivateKeyPem) ExportPem() =>
        (Certificate.ExportCertificatePem(), _key.ExportPkcs8PrivateKeyPem());

    private static X509Certificate2 CreateCertificate(ECDsa key)
    {
        var req = new CertificateRequest($"CN={ServerName}", key, HashAlgorithmName.SHA256);
        // CA so that standard TLS stacks can take it as the trust anchor for the peer's (same-key) certificate.
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(
            X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyCertSign, false));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(ServerName);
        req.CertificateExtensions.Add(san.Build());
        var notBefore = new DateTimeOffset(2020, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var notAfter = new DateTimeOffset(2099, 12, 31, 0, 0, 0, TimeSpan.Zero);
        using var cert = req.CreateSelfSigned(notBefore, notAfter);
        // Round-trip through PKCS#12 so that SslStream on Linux can use the private key.
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pkcs12), null);
    }

    public void Dispose()
    {
        Certificate.Dispose();
        _key.Dispose();
    }
}

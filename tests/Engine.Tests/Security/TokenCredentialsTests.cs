using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Migration.Engine.Security;
using Xunit;

namespace Migration.Engine.Tests.Security;

/// <summary>
/// The derivations shared by the tests: each costs ~0.1-0.2 s (PBKDF2, <see cref="TokenCredentials.KdfIterations"/>).
/// </summary>
public sealed class TokenCredentialsFixture : IDisposable
{
    public const string TokenA = "q0Zc7m2J4yWb8pR1tXvN6sKe9LhD3uGf5aYoBiTzEw=";

    /// <summary>Exactly <see cref="TokenCredentials.MinimumTokenBytes"/> bytes: the shortest token accepted.</summary>
    public const string TokenB = "0123456789abcdefghijklmn";

    public TokenCredentialsFixture()
    {
        A1 = TokenCredentials.FromToken(TokenA);
        A2 = TokenCredentials.FromToken(TokenA);
        B = TokenCredentials.FromToken(TokenB);
    }

    public TokenCredentials A1 { get; }

    public TokenCredentials A2 { get; }

    public TokenCredentials B { get; }

    public void Dispose()
    {
        A1.Dispose();
        A2.Dispose();
        B.Dispose();
    }
}

public sealed class TokenCredentialsTests(TokenCredentialsFixture fx) : IClassFixture<TokenCredentialsFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("token-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void SameToken_GivesSamePublicKeyAndKeyId()
    {
        Assert.NotSame(fx.A1, fx.A2);
        Assert.Equal(fx.A1.PublicKey, fx.A2.PublicKey);
        Assert.Equal(fx.A1.KeyId, fx.A2.KeyId);
    }

    [Fact]
    public void DifferentTokens_GiveDifferentKeys()
    {
        Assert.NotEqual(fx.A1.PublicKey, fx.B.PublicKey);
        Assert.NotEqual(fx.A1.KeyId, fx.B.KeyId);
    }

    [Fact]
    public void KeyId_IsTwelveLowerCaseHexDigitsOfThePublicKeyHash()
    {
        var expected = Convert.ToHexString(SHA256.HashData(fx.A1.PublicKey))[..12].ToLowerInvariant();

        Assert.Equal(expected, fx.A1.KeyId);
        Assert.Matches("^[0-9a-f]{12}$", fx.A1.KeyId);
    }

    [Fact]
    public void PrivateKey_IsTheDocumentedDerivation()
    {
        // PBKDF2-SHA256(token, "migrate/v1/mtls-p256", 200000) to 48 bytes, then mod (n - 1) + 1: both peers
        // (possibly different versions of this tool) must agree on it, so it is checked independently here.
        var seed = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(TokenCredentialsFixture.TokenA),
            "migrate/v1/mtls-p256"u8.ToArray(), 200_000, HashAlgorithmName.SHA256, 48);
        var n = BigInteger.Parse("0FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", System.Globalization.NumberStyles.HexNumber);
        var expectedD = new BigInteger(seed, isUnsigned: true, isBigEndian: true) % (n - 1) + 1;

        using var key = ECDsa.Create();
        key.ImportFromPem(fx.A1.ExportPem().PrivateKeyPem);
        var p = key.ExportParameters(includePrivateParameters: true);

        Assert.Equal(ECCurve.NamedCurves.nistP256.Oid.Value, p.Curve.Oid.Value);
        Assert.Equal(expectedD, new BigInteger(p.D, isUnsigned: true, isBigEndian: true));
        Assert.Equal(fx.A1.PublicKey, key.ExportSubjectPublicKeyInfo());
    }

    [Fact]
    public void Certificate_IsSelfSignedForServerName_WithPrivateKey()
    {
        var cert = fx.A1.Certificate;

        Assert.True(cert.HasPrivateKey);
        Assert.Equal($"CN={TokenCredentials.ServerName}", cert.Subject);
        Assert.Equal(cert.Subject, cert.Issuer);
        Assert.Equal(TokenCredentials.ServerName, cert.GetNameInfo(X509NameType.DnsName, forIssuer: false));
        using var pub = cert.GetECDsaPublicKey();
        Assert.NotNull(pub);
        Assert.Equal(fx.A1.PublicKey, pub.ExportSubjectPublicKeyInfo());
    }

    [Fact]
    public void MinimumTokenBytes_IsAccepted()
    {
        Assert.Equal(TokenCredentials.MinimumTokenBytes, Encoding.UTF8.GetByteCount(TokenCredentialsFixture.TokenB));
        Assert.NotEmpty(fx.B.PublicKey);
    }

    [Fact]
    public void ShortToken_ThrowsArgumentException_WithoutTheToken()
    {
        const string shortToken = "s3cr3t-but-too-short-23"; // 23 bytes

        var ex = Assert.Throws<ArgumentException>(() => TokenCredentials.FromToken(shortToken));

        Assert.Contains($"token is 23 bytes; at least {TokenCredentials.MinimumTokenBytes}", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(shortToken, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ShortToken_CountsUtf8BytesNotChars()
    {
        // 12 chars, 24 UTF-8 bytes would pass; 11 of them (22 bytes) must not.
        Assert.Throws<ArgumentException>(() => TokenCredentials.FromToken(new string('é', 11)));
    }

    [Fact]
    public void IsPeer_TrueForCertificateOfSameToken()
    {
        Assert.True(fx.A1.IsPeer(fx.A2.Certificate));
        Assert.True(fx.A2.IsPeer(fx.A1.Certificate));
    }

    [Fact]
    public void IsPeer_TrueForPublicOnlyCopyOfPeerCertificate()
    {
        // What TLS hands over: the certificate without its private key.
        using var publicOnly = X509CertificateLoader.LoadCertificate(fx.A2.Certificate.RawData);

        Assert.False(publicOnly.HasPrivateKey);
        Assert.True(fx.A1.IsPeer(publicOnly));
    }

    [Fact]
    public void IsPeer_FalseForCertificateOfAnotherToken()
    {
        Assert.False(fx.A1.IsPeer(fx.B.Certificate));
        Assert.False(fx.B.IsPeer(fx.A1.Certificate));
    }

    [Fact]
    public void IsPeer_FalseForNull()
    {
        Assert.False(fx.A1.IsPeer(null));
    }

    [Fact]
    public void IsPeer_FalseForSameNameCertificateWithAnotherKey()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={TokenCredentials.ServerName}", key, HashAlgorithmName.SHA256);
        using var impostor = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));

        Assert.False(fx.A1.IsPeer(impostor));
    }

    [Fact]
    public void IsPeer_FalseForRsaCertificate()
    {
        using var rsa = RSA.Create(1024);
        var req = new CertificateRequest($"CN={TokenCredentials.ServerName}", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var rsaCert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));

        Assert.False(fx.A1.IsPeer(rsaCert));
    }

    [Fact]
    public void ExportPem_ReturnsCertificateAndPkcs8KeyBlocks_ThatLoadAsThePeer()
    {
        var (certPem, keyPem) = fx.A1.ExportPem();

        Assert.StartsWith("-----BEGIN CERTIFICATE-----", certPem, StringComparison.Ordinal);
        Assert.Contains("-----END CERTIFICATE-----", certPem, StringComparison.Ordinal);
        Assert.StartsWith("-----BEGIN PRIVATE KEY-----", keyPem, StringComparison.Ordinal);
        Assert.Contains("-----END PRIVATE KEY-----", keyPem, StringComparison.Ordinal);
        using var loaded = X509Certificate2.CreateFromPem(certPem, keyPem);
        Assert.True(loaded.HasPrivateKey);
        Assert.True(fx.A2.IsPeer(loaded));
    }

    [Fact]
    public void Token_NeverAppearsInCertificateOrKey()
    {
        var (certPem, keyPem) = fx.A1.ExportPem();
        var tokenBytes = Encoding.UTF8.GetBytes(TokenCredentialsFixture.TokenA);

        Assert.DoesNotContain(TokenCredentialsFixture.TokenA, certPem, StringComparison.Ordinal);
        Assert.DoesNotContain(TokenCredentialsFixture.TokenA, keyPem, StringComparison.Ordinal);
        Assert.Equal(-1, fx.A1.Certificate.RawData.AsSpan().IndexOf(tokenBytes));
        Assert.Equal(-1, fx.A1.PublicKey.AsSpan().IndexOf(tokenBytes));
        Assert.Equal(-1, fx.A1.Certificate.Export(X509ContentType.Pkcs12).AsSpan().IndexOf(tokenBytes));
    }

    [Fact]
    public void FromFile_TrimsWhitespaceAndNewline()
    {
        var path = WriteTokenFile($"  {TokenCredentialsFixture.TokenA}\n\n", UnixFileMode.UserRead | UnixFileMode.UserWrite);

        using var fromFile = TokenCredentials.FromFile(path);

        Assert.Equal(fx.A1.PublicKey, fromFile.PublicKey);
    }

    [Theory]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead)] // 0644
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherWrite)]                         // 0602
    public void FromFile_OtherAccessibleFile_IsRefused_WithoutTheToken(UnixFileMode mode)
    {
        var path = WriteTokenFile(TokenCredentialsFixture.TokenA + "\n", mode);

        var ex = Assert.Throws<UnauthorizedAccessException>(() => TokenCredentials.FromFile(path));

        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"chmod 600 {path}", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(TokenCredentialsFixture.TokenA, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FromFile_ShortTokenInFile_NamesTheFileNotTheToken()
    {
        var path = WriteTokenFile("short-token\n", UnixFileMode.UserRead | UnixFileMode.UserWrite);

        var ex = Assert.Throws<ArgumentException>(() => TokenCredentials.FromFile(path));

        Assert.StartsWith(path, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("short-token", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FromFile_MissingFile_ThrowsFileNotFound_SayingHowToCreateOne()
    {
        var path = Path.Combine(_dir, "missing.token");

        var ex = Assert.Throws<FileNotFoundException>(() => TokenCredentials.FromFile(path));

        Assert.Equal(path, ex.FileName);
        Assert.Contains("/dev/urandom", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"> {path}", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"chmod 600 {path}", ex.Message, StringComparison.Ordinal);
    }

    private string WriteTokenFile(string content, UnixFileMode mode)
    {
        var path = Path.Combine(_dir, "agent.token");
        File.WriteAllText(path, content);
        File.SetUnixFileMode(path, mode);
        return path;
    }
}

using Migration.Engine.Network;
using Xunit;

namespace Migration.Engine.Tests.Network;

public class EndpointTests
{
    [Theory]
    [InlineData("10.0.0.2:7070", "10.0.0.2", 7070)]
    [InlineData("localhost:1", "localhost", 1)]
    [InlineData("[fd00::2]:7070", "fd00::2", 7070)]
    [InlineData("[::1]:443", "::1", 443)]
    [InlineData("agent.example:65535", "agent.example", 65535)]
    public void Parse_AcceptsHostPort(string text, string host, int port)
    {
        var ep = Endpoint.Parse(text);

        Assert.Equal(host, ep.Host);
        Assert.Equal(port, ep.Port);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("host")]
    [InlineData("host:")]
    [InlineData("host:0")]
    [InlineData("host:65536")]
    [InlineData("host:99999999999")]
    [InlineData("host:abc")]
    [InlineData("host:-1")]
    [InlineData("host:+80")]
    [InlineData("host: 80")]
    [InlineData(":80")]
    [InlineData("fd00::2:7070")] // bare IPv6: ambiguous
    [InlineData("[fd00::2]")]
    [InlineData("[fd00::2]:")]
    [InlineData("[fd00::2]7070")]
    [InlineData("[]:80")]
    [InlineData("a b:1")]
    [InlineData("a\tb:1")]
    [InlineData("/x:1")]
    [InlineData("x/y:1")]
    public void TryParse_RejectsMalformed_WithAMessage(string text)
    {
        Assert.False(Endpoint.TryParse(text, out _, out var error));
        Assert.False(string.IsNullOrWhiteSpace(error));
    }

    [Fact]
    public void TryParse_RejectsNull()
    {
        Assert.False(Endpoint.TryParse(null, out _, out var error));
        Assert.Contains("HOST:PORT", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryParse_RejectsTooLongHost()
    {
        Assert.False(Endpoint.TryParse(new string('a', 254) + ":80", out _, out _));
        Assert.True(Endpoint.TryParse(new string('a', 253) + ":80", out _, out _));
    }

    [Theory]
    [InlineData("host:0", "port must be 1-65535")]
    [InlineData("fd00::2:7070", "[ADDR]:PORT")]
    [InlineData("[fd00::2]7070", "[IPv6]:PORT")]
    [InlineData("a b:1", "invalid host")]
    public void Parse_Malformed_ThrowsFormatException_NamingInputAndProblem(string text, string problem)
    {
        var ex = Assert.Throws<FormatException>(() => Endpoint.Parse(text));

        Assert.Contains($"'{text}'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(problem, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("127.0.0.1:7070", true)]
    [InlineData("127.1.2.3:7070", true)]
    [InlineData("[::1]:7070", true)]
    [InlineData("localhost:7070", true)]
    [InlineData("10.0.0.2:7070", false)]
    [InlineData("[fd00::2]:7070", false)]
    [InlineData("agent.example:7070", false)]
    [InlineData("localhost.example:7070", false)]
    public void IsLoopback(string text, bool expected)
    {
        Assert.Equal(expected, Endpoint.Parse(text).IsLoopback);
    }

    [Theory]
    [InlineData("10.0.0.2:7070")]
    [InlineData("[fd00::2]:7070")]
    [InlineData("[::1]:1")]
    [InlineData("agent.example:65535")]
    public void ToString_RoundTripsThroughParse(string text)
    {
        var ep = Endpoint.Parse(text);

        Assert.Equal(text, ep.ToString());
        Assert.Equal(ep, Endpoint.Parse(ep.ToString()));
    }

    [Theory]
    [InlineData("10.0.0.2:7070", "https://10.0.0.2:7070/")]
    [InlineData("[fd00::2]:7070", "https://[fd00::2]:7070/")]
    [InlineData("agent.example:443", "https://agent.example:443/")]
    public void ToHttpsUri(string text, string expected)
    {
        var uri = Endpoint.Parse(text).ToHttpsUri();

        Assert.Equal(expected, uri.OriginalString);
        Assert.Equal("https", uri.Scheme);
        Assert.Equal(Endpoint.Parse(text).Port, uri.Port);
    }

    [Fact]
    public void ToHttpsUri_IPv6_HostIsTheBracketedAddress()
    {
        var uri = Endpoint.Parse("[fd00::2]:7070").ToHttpsUri();

        Assert.Equal("[fd00::2]", uri.Host);
        Assert.Equal(System.UriHostNameType.IPv6, uri.HostNameType);
    }
}

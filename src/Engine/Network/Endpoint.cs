using System.Globalization;
using System.Net;

namespace Migration.Engine.Network;

/// <summary>A host:port pair as users type it ("10.0.0.2:7070", "[fd00::2]:7070", "agent.example:7070").</summary>
public sealed record Endpoint(string Host, int Port)
{
    public static Endpoint Parse(string text)
    {
        if (!TryParse(text, out var ep, out var error))
        {
            throw new FormatException(error);
        }

        return ep;
    }

    public static bool TryParse(string? text, out Endpoint endpoint, out string error)
    {
        endpoint = null!;
        error = "";
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "empty address: expected HOST:PORT";
            return false;
        }

        string host;
        string port;
        if (text.StartsWith('['))
        {
            int close = text.IndexOf("]:", StringComparison.Ordinal);
            if (close < 0)
            {
                error = $"'{text}': expected [IPv6]:PORT";
                return false;
            }

            host = text[1..close];
            port = text[(close + 2)..];
        }
        else
        {
            int colon = text.LastIndexOf(':');
            if (colon <= 0 || text.IndexOf(':') != colon)
            {
                error = $"'{text}': expected HOST:PORT (IPv6 as [ADDR]:PORT)";
                return false;
            }

            host = text[..colon];
            port = text[(colon + 1)..];
        }

        if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int p) || p is < 1 or > 65535)
        {
            error = $"'{text}': port must be 1-65535";
            return false;
        }

        if (host.Length == 0 || host.Length > 253 || host.Any(c => char.IsWhiteSpace(c) || c == '/'))
        {
            error = $"'{text}': invalid host";
            return false;
        }

        endpoint = new Endpoint(host, p);
        return true;
    }

    public bool IsLoopback => Host == "localhost" || (IPAddress.TryParse(Host, out var ip) && IPAddress.IsLoopback(ip));

    public Uri ToHttpsUri() => new($"https://{(Host.Contains(':') ? $"[{Host}]" : Host)}:{Port}/");

    public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}

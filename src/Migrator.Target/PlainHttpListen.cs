using System.Globalization;
using System.Net;
using Endpoint = Migration.Engine.Network.Endpoint;

namespace Migration.Target;

/// <summary>Where the agent's plain-HTTP servers listen (<c>--metrics-listen</c>, <c>--dashboard-listen</c>).</summary>
internal static class PlainHttpListen
{
    /// <summary>"PORT" (on 127.0.0.1), "ADDR:PORT" or "[ADDR6]:PORT"; the address must be an IP literal.</summary>
    public static bool TryParse(string text, out Endpoint? endpoint, out string error)
    {
        endpoint = null;
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int port))
        {
            text = $"127.0.0.1:{port}";
        }

        if (!Endpoint.TryParse(text, out var parsed, out error))
        {
            return false;
        }

        if (!IPAddress.TryParse(parsed.Host, out _))
        {
            error = $"'{parsed.Host}': give an IP address (or only a port, for 127.0.0.1)";
            return false;
        }

        endpoint = parsed;
        return true;
    }

}

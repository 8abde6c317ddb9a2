using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Migration.Engine.Processes;

namespace Migration.Engine.Network;

/// <summary>An address a service answers on, with its prefix: "10.0.0.100/24", "fd00::100/64".</summary>
public sealed record ServiceAddress(IPAddress Address, int PrefixLength)
{
    public override string ToString() => $"{Address}/{PrefixLength}";

    /// <summary>
    /// Parses ADDR/PREFIX. Refused: no prefix, a prefix out of range, and addresses no service can move to another
    /// host: unspecified, loopback, multicast, IPv4 broadcast, IPv6 link-local (it needs a scope that is the host's).
    /// </summary>
    public static bool TryParse(string? text, out ServiceAddress address, out string error)
    {
        address = null!;
        int slash = text?.IndexOf('/', StringComparison.Ordinal) ?? -1;
        if (text is null || slash < 0)
        {
            error = $"'{text}' is not ADDRESS/PREFIX (for example 10.0.0.100/24 or fd00::100/64)";
            return false;
        }

        if (!IPAddress.TryParse(text.AsSpan(0, slash), out var ip) || text.AsSpan(0, slash).Contains('%'))
        {
            error = $"'{text[..slash]}' is not an IPv4 or IPv6 address";
            return false;
        }

        int max = ip.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        if (!int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) || prefix < 1 || prefix > max)
        {
            error = $"prefix '{text[(slash + 1)..]}' of {text} is not 1 to {max}";
            return false;
        }

        if (ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any) || IPAddress.IsLoopback(ip) || ip.Equals(IPAddress.Broadcast)
            || ip.IsIPv6Multicast || ip.IsIPv6LinkLocal || ip.IsIPv4MappedToIPv6
            || (ip.AddressFamily == AddressFamily.InterNetwork && ip.GetAddressBytes()[0] is >= 224 and <= 239))
        {
            error = $"{ip} cannot be a service address that moves between hosts (unspecified, loopback, multicast, broadcast or link-local)";
            return false;
        }

        address = new ServiceAddress(ip, prefix);
        error = "";
        return true;
    }

    public static ServiceAddress Parse(string text) =>
        TryParse(text, out var a, out var error) ? a : throw new FormatException(error);
}

/// <summary>
/// Takes a service address off this host and brings it up here, in the network namespace this process runs in:
/// with iproute2 (<c>ip addr del/add</c>, IPv6 without duplicate address detection, since the address is known to
/// have just left its other host) and an announcement to the neighbours (<see cref="NeighbourAnnouncer"/>); or, where
/// the address is not a plain interface address (a cloud VIP, a route, BGP), by an operator's hook run as
/// <c>HOOK down|up ADDR/PREFIX IFACE</c>, whose exit code and output are logged.
/// </summary>
public sealed partial class AddressMover(ILogger logger, string? hook = null, TimeSpan? hookTimeout = null)
{
    public static readonly TimeSpan DefaultHookTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan s_ipTimeout = TimeSpan.FromSeconds(10);

    public string? Hook => hook;

    /// <summary>The interface that holds <paramref name="address"/> (any prefix) in this namespace, or null.</summary>
    public static async Task<string?> InterfaceHoldingAsync(IPAddress address, CancellationToken ct = default)
    {
        var r = await Command.RunAsync("ip", ["-j", "addr", "show"], s_ipTimeout, ct).ConfigureAwait(false);
        if (!r.Succeeded)
        {
            throw new IOException($"cannot list addresses: {r}");
        }

        return InterfaceHolding(r.Stdout, address);
    }

    /// <summary>From <c>ip -j addr show</c>'s JSON: [{"ifname":"eth0","addr_info":[{"family":"inet","local":"10.0.0.1","prefixlen":24}]}].</summary>
    internal static string? InterfaceHolding(string ipJson, IPAddress address)
    {
        using var doc = JsonDocument.Parse(ipJson);
        foreach (var link in doc.RootElement.EnumerateArray())
        {
            if (!link.TryGetProperty("addr_info", out var infos))
            {
                continue;
            }

            foreach (var info in infos.EnumerateArray())
            {
                if (info.TryGetProperty("local", out var local) && IPAddress.TryParse(local.GetString(), out var held) && held.Equals(address))
                {
                    return link.GetProperty("ifname").GetString();
                }
            }
        }

        return null;
    }

    /// <summary>Whether <paramref name="interfaceName"/> exists in this namespace.</summary>
    public static bool InterfaceExists(string interfaceName) =>
        System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces().Any(n => n.Name == interfaceName);

    /// <summary>Takes <paramref name="address"/> off <paramref name="interfaceName"/>.</summary>
    /// <exception cref="IOException">It could not: the message says what the tool or the hook said.</exception>
    public async Task DownAsync(ServiceAddress address, string interfaceName, CancellationToken ct = default)
    {
        if (hook is not null)
        {
            await RunHookAsync("down", address, interfaceName, ct).ConfigureAwait(false);
            return;
        }

        var r = await Command.RunAsync("ip", ["addr", "del", address.ToString(), "dev", interfaceName], s_ipTimeout, ct).ConfigureAwait(false);
        if (!r.Succeeded)
        {
            throw new IOException($"cannot take {address} off {interfaceName}: {r}");
        }

        LogDown(address.ToString(), interfaceName, r.Took.TotalMilliseconds);
    }

    /// <summary>
    /// Brings <paramref name="address"/> up on <paramref name="interfaceName"/> and, with <paramref name="announce"/>,
    /// tells the neighbours (else <see cref="AnnounceAsync"/> does, once something answers on it).
    /// </summary>
    /// <exception cref="IOException">It could not: the message says what the tool or the hook said.</exception>
    public async Task UpAsync(ServiceAddress address, string interfaceName, CancellationToken ct = default, bool announce = true)
    {
        if (hook is not null)
        {
            await RunHookAsync("up", address, interfaceName, ct).ConfigureAwait(false);
            return;
        }

        var args = new List<string> { "addr", "add", address.ToString(), "dev", interfaceName };
        if (address.Address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            args.Add("nodad"); // usable at once: no second of duplicate address detection while the service waits
        }

        var r = await Command.RunAsync("ip", args, s_ipTimeout, ct).ConfigureAwait(false);
        if (!r.Succeeded)
        {
            throw new IOException($"cannot bring {address} up on {interfaceName}: {r}");
        }

        LogUp(address.ToString(), interfaceName, r.Took.TotalMilliseconds);
        if (announce)
        {
            await AnnounceAsync(address, interfaceName, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Tells the neighbours <paramref name="address"/> is here now (nothing with a hook: the hook's business). Never throws but for cancellation.</summary>
    public async Task AnnounceAsync(ServiceAddress address, string interfaceName, CancellationToken ct = default)
    {
        if (hook is not null)
        {
            return;
        }

        try
        {
            await NeighbourAnnouncer.AnnounceAsync(address.Address, interfaceName, ct: ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or SocketException)
        {
            // The address is up; neighbours learn it when their cache entry expires. Slower, not broken.
            LogAnnounceFailed(address.ToString(), interfaceName, ex.Message);
        }
    }

    private async Task RunHookAsync(string action, ServiceAddress address, string interfaceName, CancellationToken ct)
    {
        var timeout = hookTimeout ?? DefaultHookTimeout;
        CommandResult r;
        try
        {
            r = await Command.RunAsync(hook!, [action, address.ToString(), interfaceName], timeout, ct).ConfigureAwait(false);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new IOException($"address hook {hook} cannot be run: {ex.Message}", ex);
        }
        catch (TimeoutException ex)
        {
            LogHook(hook!, action, address.ToString(), interfaceName, -1, ex.Message);
            throw new IOException($"address hook {hook} {action} {address} {interfaceName}: no end within {timeout.TotalSeconds:0.#} s; killed", ex);
        }

        LogHook(hook!, action, address.ToString(), interfaceName, r.ExitCode, (r.Stdout + r.Stderr).Trim().ReplaceLineEndings(" | "));
        if (!r.Succeeded)
        {
            throw new IOException($"address hook failed: {r}");
        }
    }

    [LoggerMessage(EventId = 1200, Level = LogLevel.Information, Message = "service address {Address} taken off {Interface} ({Ms:0.0} ms)")]
    private partial void LogDown(string address, string @interface, double ms);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Information, Message = "service address {Address} up on {Interface} ({Ms:0.0} ms)")]
    private partial void LogUp(string address, string @interface, double ms);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Warning, Message = "service address {Address} is up on {Interface} but announcing it failed: {Reason}")]
    private partial void LogAnnounceFailed(string address, string @interface, string reason);

    [LoggerMessage(EventId = 1203, Level = LogLevel.Information, Message = "address hook {Hook} {Action} {Address} {Interface}: exit {Exit}: {Output}")]
    private partial void LogHook(string hook, string action, string address, string @interface, int exit, string output);
}

using Migration.Engine.Processes;

namespace Migration.Engine.Network;

/// <summary>
/// Drops every packet to a set of service addresses on this host, in an nftables table of our own
/// (<c>inet migrate-lock-NAME</c>), while they are up here but nothing listens on them yet: between the address
/// coming up on the target and the restore recreating the tree's sockets, a client's packet would otherwise meet no
/// socket and be answered with a reset. Packets dropped are retransmitted by the client once the lock goes.
/// </summary>
public static class AddressLock
{
    public const string Prefix = "migrate-lock-";
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(10);

    /// <summary>Locks <paramref name="addresses"/>; <paramref name="name"/> (letters, digits, '-') names the table.</summary>
    /// <exception cref="IOException">nft refused.</exception>
    public static async Task LockAsync(string name, IReadOnlyList<ServiceAddress> addresses, CancellationToken ct = default)
    {
        string table = Table(name);
        await NftAsync(["add", "table", "inet", table], ct).ConfigureAwait(false);
        try
        {
            // Before conntrack and the rest of the filter hooks: nothing here sees the packet.
            await NftAsync(["add", "chain", "inet", table, "input", "{", "type", "filter", "hook", "input", "priority", "-300", ";", "policy", "accept", ";", "}"], ct).ConfigureAwait(false);
            foreach (var a in addresses)
            {
                string family = a.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? "ip" : "ip6";
                await NftAsync(["add", "rule", "inet", table, "input", family, "daddr", a.Address.ToString(), "drop"], ct).ConfigureAwait(false);
            }
        }
        catch
        {
            await UnlockAsync(name, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Removes the lock; one already gone is fine.</summary>
    public static async Task UnlockAsync(string name, CancellationToken ct = default)
    {
        var r = await Command.RunAsync("nft", ["delete", "table", "inet", Table(name)], s_timeout, ct).ConfigureAwait(false);
        if (!r.Succeeded && !r.Stderr.Contains("No such file", StringComparison.Ordinal))
        {
            throw new IOException($"cannot remove the address lock inet {Table(name)}: {r}");
        }
    }

    /// <summary>Every address lock in this namespace (a killed agent's, for its successor to remove).</summary>
    public static async Task<IReadOnlyList<string>> ListAsync(CancellationToken ct = default)
    {
        var r = await Command.RunAsync("nft", ["-j", "list", "tables", "inet"], s_timeout, ct).ConfigureAwait(false);
        if (!r.Succeeded || string.IsNullOrWhiteSpace(r.Stdout))
        {
            return [];
        }

        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        return doc.RootElement.GetProperty("nftables").EnumerateArray()
            .Where(i => i.TryGetProperty("table", out _))
            .Select(i => i.GetProperty("table").GetProperty("name").GetString() ?? "")
            .Where(n => n.StartsWith(Prefix, StringComparison.Ordinal))
            .Select(n => n[Prefix.Length..])
            .ToArray();
    }

    private static string Table(string name) =>
        name.Length is > 0 and <= 40 && name.All(c => char.IsAsciiLetterOrDigit(c) || c == '-')
            ? Prefix + name
            : throw new ArgumentException($"'{name}' cannot name an address lock", nameof(name));

    private static async Task NftAsync(IReadOnlyList<string> args, CancellationToken ct)
    {
        CommandResult r;
        try
        {
            r = await Command.RunAsync("nft", args, s_timeout, ct).ConfigureAwait(false);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new IOException($"nft cannot be run: {ex.Message}", ex);
        }

        if (!r.Succeeded)
        {
            throw new IOException($"address lock: {r}");
        }
    }
}

using System.Text.Json;
using Migration.Engine.Processes;

namespace Migration.Engine.Network;

/// <summary>
/// The nftables tables CRIU's network lock leaves (<c>inet CRIU-RUNID</c>, criu/netfilter.c): a dump with
/// --tcp-established that succeeds keeps the tree's connections locked on the source, so that nothing there answers
/// the clients for a connection that now lives elsewhere; once the migration is committed the table is ours to
/// remove. CRIU removes it itself when the dump fails or the source resumes, and on the target after the restore.
/// </summary>
public static class CriuNetworkLock
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(10);

    /// <summary>Names of the CRIU lock tables in this network namespace (family inet).</summary>
    public static async Task<IReadOnlyList<string>> ListAsync(CancellationToken ct = default)
    {
        CommandResult r;
        try
        {
            r = await Command.RunAsync("nft", ["-j", "list", "tables", "inet"], s_timeout, ct).ConfigureAwait(false);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return []; // no nft: CRIU cannot have locked with nftables either
        }

        return r.Succeeded ? Parse(r.Stdout) : throw new IOException($"cannot list nftables tables: {r}");
    }

    /// <summary>From <c>nft -j list tables</c>: {"nftables": [{"metainfo": ...}, {"table": {"family": "inet", "name": "CRIU-x"}}]}.</summary>
    internal static IReadOnlyList<string> Parse(string json)
    {
        if (string.IsNullOrWhiteSpace(json))
        {
            return [];
        }

        using var doc = JsonDocument.Parse(json);
        var names = new List<string>();
        if (doc.RootElement.TryGetProperty("nftables", out var items))
        {
            foreach (var item in items.EnumerateArray())
            {
                if (item.TryGetProperty("table", out var table) && table.TryGetProperty("family", out var family) && family.GetString() == "inet"
                    && table.TryGetProperty("name", out var name) && name.GetString() is { } n && n.StartsWith("CRIU-", StringComparison.Ordinal))
                {
                    names.Add(n);
                }
            }
        }

        return names;
    }

    /// <summary>
    /// The run ids CRIU logged ("CRIU run id = UUID", once per criu process of a request) in <paramref name="logText"/>:
    /// the lock table of that request is <c>inet CRIU-</c> and a prefix of one of them (CRIU cuts the name to its
    /// 32-byte buffer: 21 characters of the id).
    /// </summary>
    public static IReadOnlyList<string> RunIds(string logText)
    {
        const string marker = "CRIU run id = ";
        var ids = new List<string>();
        foreach (var line in logText.Split('\n'))
        {
            int at = line.IndexOf(marker, StringComparison.Ordinal);
            if (at >= 0)
            {
                var id = line[(at + marker.Length)..].Trim();
                if (id.Length >= 8 && id.All(c => char.IsAsciiHexDigit(c) || c == '-'))
                {
                    ids.Add(id);
                }
            }
        }

        return ids;
    }

    /// <summary>Of <paramref name="tables"/>, those that belong to one of the CRIU runs <paramref name="runIds"/>.</summary>
    public static IReadOnlyList<string> OfRuns(IReadOnlyList<string> tables, IReadOnlyList<string> runIds) =>
        tables.Where(t => t.Length > "CRIU-".Length + 7 && runIds.Any(id => id.StartsWith(t["CRIU-".Length..], StringComparison.Ordinal))).ToArray();

    /// <summary>
    /// Removes the lock tables of the CRIU runs that wrote <paramref name="logPath"/> (a dump's log), in this network
    /// namespace; returns their names. Nothing else is touched: another migration's lock stays.
    /// </summary>
    public static async Task<IReadOnlyList<string>> RemoveOfLogAsync(string logPath, CancellationToken ct = default)
    {
        if (!File.Exists(logPath))
        {
            return [];
        }

        var ours = OfRuns(await ListAsync(ct).ConfigureAwait(false), RunIds(await File.ReadAllTextAsync(logPath, ct).ConfigureAwait(false)));
        foreach (var table in ours)
        {
            await RemoveAsync(table, ct).ConfigureAwait(false);
        }

        return ours;
    }

    /// <summary>Removes table <c>inet NAME</c>; a table already gone is fine.</summary>
    public static async Task RemoveAsync(string name, CancellationToken ct = default)
    {
        if (!name.StartsWith("CRIU-", StringComparison.Ordinal) || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_')))
        {
            throw new ArgumentException($"'{name}' is not a CRIU lock table", nameof(name));
        }

        var r = await Command.RunAsync("nft", ["delete", "table", "inet", name], s_timeout, ct).ConfigureAwait(false);
        if (!r.Succeeded && (await ListAsync(ct).ConfigureAwait(false)).Contains(name))
        {
            throw new IOException($"cannot remove the network lock table inet {name}: {r}");
        }
    }
}

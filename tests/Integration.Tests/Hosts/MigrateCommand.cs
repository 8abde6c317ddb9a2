using System.Text.Json;

namespace Migration.Integration.Tests.Hosts;

/// <summary>Runs `migrate` on the source host and parses its --json result.</summary>
public static class MigrateCommand
{
    public static Task<(CommandResult Result, JsonElement Json)> RunAsync(TestHosts hosts, string to, string tokenFile, int pid, params string[] extra) =>
        RunOnAsync(hosts, hosts.Source, to, tokenFile, pid, extra);

    /// <summary>`migrate` run on host <paramref name="netns"/> (where the tree runs now).</summary>
    public static async Task<(CommandResult Result, JsonElement Json)> RunOnAsync(TestHosts hosts, string netns, string to, string tokenFile, int pid, params string[] extra)
    {
        var args = new List<string>(TestHosts.On(netns))
        {
            Binaries.Migrate, "--to", to, "--token-file", tokenFile, "--json",
            "--work-dir", Path.Combine(hosts.Root, "source-work"), "--log-dir", Path.Combine(hosts.Root, "source-logs"),
        };
        args.AddRange(extra);
        args.Add(pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var result = await Run.CommandAsync("nsenter", args, TimeSpan.FromMinutes(5), "migrate");
        JsonElement json;
        try
        {
            json = JsonDocument.Parse(result.LastStdoutLine).RootElement;
        }
        catch (JsonException ex)
        {
            throw new InvalidOperationException($"migrate's last stdout line is not JSON: {result}", ex);
        }

        return (result, json);
    }
}

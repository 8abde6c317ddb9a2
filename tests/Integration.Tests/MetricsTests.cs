using System.Globalization;
using System.Text.RegularExpressions;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// The agent's Prometheus endpoint (--metrics-listen) after real migrations: Prometheus' own promtool accepts the
/// exposition, and its counters say what the migrations did.
/// </summary>
public sealed partial class MetricsTests(ITestOutputHelper output)
{
    private const int MetricsPort = 9464;

    [RequiresRootFact]
    public async Task MetricsPassPromtoolAndCountWhatTheMigrationsDid()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token, "--metrics-listen", MetricsPort.ToString(CultureInfo.InvariantCulture));

        var idle = await ScrapeAsync(hosts);
        Assert.Equal(0, Value(idle, "migrate_migrations_in_progress", "role=\"target\""));
        Assert.Equal(1, Value(idle, "migrate_build_info", "criu=\"4.2.1\""));
        Assert.Null(TryValue(idle, "migrate_migrations_started_total", "role=\"target\""));

        // One live migration that moves the workload, one dry run that the target discards.
        await using var workload = await Workload.StartAsync(hosts, mib: 32, writeRate: 5);
        var (dry, dryJson) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, workload.SinglePid(), "--dry-run");
        Assert.True(dry.ExitCode == 0, dry.ToString());
        var (moved, movedJson) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, workload.SinglePid());
        Assert.True(moved.ExitCode == 0, moved.ToString());
        Assert.Equal("ok", (await workload.StatusAsync(hosts.Target))["verify"]);

        // The lazy fill after the resume counts its pages when it ends.
        var text = await ScrapeAsync(hosts);
        for (int i = 0; i < 60 && TryValue(text, "migrate_lazy_pages_filled_total") is null; i++)
        {
            await Task.Delay(500);
            text = await ScrapeAsync(hosts);
        }

        output.WriteLine(string.Join('\n', text.Split('\n').Where(l => l.StartsWith("migrate_", StringComparison.Ordinal))));
        var scraped = Path.Combine(hosts.Root, "metrics.txt");
        await File.WriteAllTextAsync(scraped, text);
        var lint = await Run.CommandAsync("sh", ["-c", "promtool check metrics < \"$0\"", scraped], TimeSpan.FromSeconds(30), "promtool");
        Assert.True(lint.ExitCode == 0, $"promtool check metrics: {lint}");

        Assert.Equal(2, Value(text, "migrate_migrations_started_total", "role=\"target\"", "mode=\"precopy\""));
        Assert.Equal(1, Value(text, "migrate_migrations_finished_total", "role=\"target\"", "outcome=\"succeeded\"", "phase=\"restored\""));
        Assert.Equal(1, Value(text, "migrate_migrations_finished_total", "role=\"target\"", "outcome=\"aborted\""));
        Assert.Equal(0, Value(text, "migrate_migrations_in_progress", "role=\"target\""));
        Assert.Equal(0, Value(text, "migrate_in_doubt_copies", "role=\"target\""));
        Assert.Equal(2, Value(text, "migrate_migration_duration_seconds_count", "role=\"target\""));
        Assert.True(Value(text, "migrate_restore_duration_seconds_count") >= 1);

        // What the page streams carried, as the source counted it, is what the target counts as received.
        double pages = dryJson.GetProperty("pages").GetDouble() + movedJson.GetProperty("pages").GetDouble();
        double wire = dryJson.GetProperty("pageWireBytes").GetDouble() + movedJson.GetProperty("pageWireBytes").GetDouble();
        Assert.Equal(pages, Value(text, "migrate_pages_total", "role=\"target\""));
        Assert.Equal(pages * 4096, Value(text, "migrate_page_bytes_total", "role=\"target\""));
        // The target counts every frame it read; the source's total leaves out the stream's opening frames (HELLO, OPEN).
        double received = Value(text, "migrate_wire_bytes_total", "role=\"target\"", "channel=\"pages\"");
        Assert.InRange(received, wire, wire + 2 * 1024);
        Assert.True(Value(text, "migrate_wire_bytes_total", "role=\"target\"", "channel=\"images\"") > 0);
        Assert.True(Value(text, "migrate_lazy_pages_filled_total") > 0, "the lazy fill's pages are counted");
    }

    [RequiresRootFact]
    public async Task MetricsListenRefusesAHostName()
    {
        var result = await Run.CommandAsync(Binaries.Agent, ["--listen", "127.0.0.1:7999", "--token-file", "/nonexistent", "--metrics-listen", "localhost:9464"],
            TimeSpan.FromSeconds(30), "migrate-agent");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--metrics-listen 'localhost': give an IP address", result.Stderr, StringComparison.Ordinal);
    }

    private static async Task<string> ScrapeAsync(TestHosts hosts)
    {
        var r = await Run.CommandAsync("nsenter", [.. TestHosts.On(hosts.Target), "curl", "-sf", $"http://127.0.0.1:{MetricsPort}/metrics"],
            TimeSpan.FromSeconds(30), "scrape /metrics");
        Assert.True(r.ExitCode == 0, r.ToString());
        return r.Stdout;
    }

    private static double Value(string text, string name, params string[] labels) =>
        TryValue(text, name, labels) ?? throw new Xunit.Sdk.XunitException($"no sample {name} with {string.Join(",", labels)} in:\n{text}");

    /// <summary>The sum of the samples of <paramref name="name"/> that carry every one of <paramref name="labels"/>.</summary>
    private static double? TryValue(string text, string name, params string[] labels)
    {
        double? sum = null;
        foreach (Match m in Sample().Matches(text))
        {
            if (m.Groups["name"].Value != name || labels.Any(l => !m.Groups["labels"].Value.Contains(l, StringComparison.Ordinal)))
            {
                continue;
            }

            sum = (sum ?? 0) + double.Parse(m.Groups["value"].Value, CultureInfo.InvariantCulture);
        }

        return sum;
    }

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)", RegexOptions.Multiline)]
    private static partial Regex Sample();
}

using System.Globalization;
using System.Text.Json;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// The agent's web dashboard in a real browser: Debian's headless Chromium, driven by chromedriver
/// (tests/Integration.Tests/Dashboard/dashboard_probe.py), logs in through the page's own form with the token and
/// reads what the page's script rendered, while a live migration runs into the agent and after it. The DOM and a
/// screenshot of each moment stay under tests/TestResults/dashboard/.
/// </summary>
public sealed class DashboardTests(ITestOutputHelper output)
{
    private const int DashboardPort = 8090;
    private const string Python = "/usr/bin/python3";

    [RequiresRootFact]
    public async Task DashboardShowsAMigrationLiveAndWhenDone()
    {
        Assert.True(File.Exists("/usr/bin/chromium") && File.Exists("/usr/bin/chromedriver"), "chromium and chromium-driver are required (scripts/setup.sh installs them)");
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token, "--dashboard-listen", DashboardPort.ToString(CultureInfo.InvariantCulture));
        // A link of 200 Mbit/s and a writing workload: pre-copy takes seconds, long enough to be seen running.
        await hosts.LimitSourceLinkAsync("200mbit");
        await using var workload = await Workload.StartAsync(hosts, mib: 256, writeRate: 5);
        var artifacts = Path.Combine(Binaries.RepoRoot, "tests", "TestResults", "dashboard");
        Directory.CreateDirectory(artifacts);
        string url = $"http://127.0.0.1:{DashboardPort}/";

        var probe = ProbeAsync(hosts.Target, url, token, artifacts, "running");
        await Task.Delay(2000); // the browser is up and logged in
        var migration = MigrateCommand.RunAsync(hosts, agent.Endpoint, token, workload.SinglePid());
        var running = await probe;
        var (result, json) = await migration;
        output.WriteLine(result.ToString());
        Assert.True(result.ExitCode == 0, result.ToString());
        string id = json.GetProperty("migrationId").GetString()!;

        output.WriteLine($"running: {running}");
        Assert.True(running.GetProperty("ok").GetBoolean(), $"the page never showed the migration running: {running}");
        Assert.Contains(running.GetProperty("rows").EnumerateArray(), r => r.GetProperty("id").GetString() == id);

        var done = await ProbeAsync(hosts.Target, url, token, artifacts, "finished");
        output.WriteLine($"finished: {done}");
        Assert.True(done.GetProperty("ok").GetBoolean(), $"the page never showed the migration finished: {done}");
        var row = done.GetProperty("rows").EnumerateArray().Single(r => r.GetProperty("id").GetString() == id);
        Assert.Equal("committed", row.GetProperty("state").GetString());
        var phases = done.GetProperty("phases").EnumerateArray().Select(p => p.GetString()).ToArray();
        Assert.Equal(["receiving", "restoring", "restored"], phases.Take(3));
        Assert.True(done.GetProperty("iterationBars").GetInt32() >= 2, $"pre-copy rounds drawn: {done}");
        Assert.Equal("filled", done.GetProperty("lazy").GetString());
        Assert.Equal(JsonValueKind.Null, done.GetProperty("failure").ValueKind);
        Assert.True(new FileInfo(Path.Combine(artifacts, "finished.png")).Length > 10_000, "the screenshot is there");
        Assert.Contains(id, await File.ReadAllTextAsync(Path.Combine(artifacts, "finished.html")), StringComparison.Ordinal);
    }

    /// <summary>
    /// The source host's agent runs the migration (migrate --via-agent): its dashboard shows it as outgoing, with the
    /// source role's phases, pre-copy iterations and downtime, and its /metrics count it as the source.
    /// </summary>
    [RequiresRootFact]
    public async Task SourceAgentsDashboardAndMetricsShowTheMigrationItRan()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var target = await Agent.StartAsync(hosts, token);
        await using var source = await Agent.StartOnSourceAsync(hosts, token,
            "--dashboard-listen", DashboardPort.ToString(CultureInfo.InvariantCulture), "--metrics-listen", "9464");
        await using var workload = await Workload.StartAsync(hosts, mib: 64, writeRate: 5);
        var (result, _) = await MigrateCommand.RunAsync(hosts, target.Endpoint, token, workload.SinglePid(), "--via-agent", source.Endpoint);
        output.WriteLine(result.ToString());
        Assert.True(result.ExitCode == 0, result.ToString());

        var artifacts = Path.Combine(Binaries.RepoRoot, "tests", "TestResults", "dashboard-source");
        var done = await ProbeAsync(hosts.Source, $"http://127.0.0.1:{DashboardPort}/", token, artifacts, "finished");
        output.WriteLine($"finished: {done}");
        Assert.True(done.GetProperty("ok").GetBoolean(), $"the page never showed the migration finished: {done}");
        Assert.Equal("succeeded", done.GetProperty("rows").EnumerateArray().Single().GetProperty("state").GetString());
        Assert.Equal(["preflight", "begin", "precopy", "dump", "finalround", "transfer", "restore", "commit"],
            done.GetProperty("phases").EnumerateArray().Select(p => p.GetString()));
        Assert.True(done.GetProperty("iterationBars").GetInt32() >= 1, done.ToString());
        Assert.EndsWith(" ms", done.GetProperty("downtime").GetString(), StringComparison.Ordinal);

        var metrics = (await Run.CommandAsync("nsenter", [.. TestHosts.On(hosts.Source), "curl", "-sf", "http://127.0.0.1:9464/metrics"], TimeSpan.FromSeconds(20), "scrape")).Stdout;
        Assert.Contains("migrate_migrations_started_total{mode=\"precopy\",role=\"source\"} 1", metrics, StringComparison.Ordinal);
        Assert.Contains("migrate_migrations_finished_total{mode=\"precopy\",outcome=\"succeeded\",phase=\"done\",role=\"source\"} 1", metrics, StringComparison.Ordinal);
        Assert.Contains("migrate_downtime_seconds_count{mode=\"precopy\"} 1", metrics, StringComparison.Ordinal);
        var pages = System.Text.RegularExpressions.Regex.Match(metrics, @"^migrate_pages_total\{role=""source""\} (\d+)$", System.Text.RegularExpressions.RegexOptions.Multiline);
        Assert.True(pages.Success && long.Parse(pages.Groups[1].Value, CultureInfo.InvariantCulture) > 1000, "the source counted the pages it sent");
    }

    /// <summary>The probe in a host's network (where the dashboard listens on loopback); its JSON line.</summary>
    private static async Task<JsonElement> ProbeAsync(string netns, string url, string token, string artifacts, string what)
    {
        var r = await Run.CommandAsync("nsenter", [.. TestHosts.On(netns), Python, Path.Combine(Binaries.RepoRoot, "tests/Integration.Tests/Dashboard/dashboard_probe.py"),
            url, token, artifacts, what, "90"], TimeSpan.FromSeconds(150), "dashboard probe");
        var line = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault(l => l.StartsWith('{'));
        Assert.True(line is not null, $"the probe printed no result: {r}");
        return JsonDocument.Parse(line).RootElement.Clone();
    }
}

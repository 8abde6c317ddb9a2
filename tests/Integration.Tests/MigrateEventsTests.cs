using System.Text.Json;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// <c>migrate --events jsonl</c>: one JSON object per event on stdout, the form WatchMigration streams; run locally, and
/// with <c>--via-agent</c>, where the source host's agent runs the migration and migrate renders its stream.
/// </summary>
public sealed class MigrateEventsTests(ITestOutputHelper output)
{
    [RequiresRootTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EventsAsJsonLines_EveryPhaseInOrder_ThenTheResult(bool viaAgent)
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var target = await Agent.StartAsync(hosts, token);
        await using var source = viaAgent ? await Agent.StartOnSourceAsync(hosts, token) : null;
        await using var workload = await Workload.StartAsync(hosts, mib: 64, writeRate: 10);
        string[] via = source is null ? [] : ["--via-agent", source.Endpoint];

        var (result, json) = await MigrateCommand.RunAsync(hosts, target.Endpoint, token, workload.SinglePid(), [.. via, "--events", "jsonl"]);
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("migrated", json.GetProperty("status").GetString());
        var lines = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        var events = lines.Where(l => l.TryGetProperty("kind", out _)).ToArray();
        // protobuf's JSON form: camelCase names, defaults left out.
        Assert.Equal(Enumerable.Range(0, events.Length).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            events.Select(e => e.TryGetProperty("seq", out var s) ? s.GetString() : "0"));
        Assert.Equal(
        [
            "phase-started preflight", "phase-ended preflight", "phase-started begin", "phase-ended begin",
            "phase-started precopy", "phase-ended precopy", "phase-started dump", "phase-ended dump",
            "phase-started final-round", "phase-ended final-round", "phase-started transfer", "phase-ended transfer",
            "phase-started restore", "phase-ended restore", "phase-started commit", "phase-ended commit", "outcome commit",
        ], events.Select(e => $"{e.GetProperty("kind").GetString()} {e.GetProperty("phase").GetString()}").Where(k => !k.StartsWith("note", StringComparison.Ordinal) && !k.StartsWith("iteration", StringComparison.Ordinal)));
        Assert.Contains(events, e => e.GetProperty("kind").GetString() == "iteration" && e.GetProperty("iteration").TryGetProperty("pagesSent", out _));
        var outcome = events[^1].GetProperty("outcome");
        Assert.Equal("running-on-target", outcome.GetProperty("workload").GetString());
        Assert.Equal(json.GetProperty("targetPid").GetInt32(), outcome.GetProperty("targetPid").GetInt32());
        // The --json result is still the last line.
        Assert.Equal(json.ToString(), lines[^1].ToString());

        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(workload.SinglePid()));
        Assert.Equal("ok", (await workload.StatusAsync(hosts.Target))["verify"]);
    }
}

using System.Globalization;
using System.Text.Json;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests.Interop;

/// <summary>
/// The source role hosted by an agent: a migration started with StartMigration on the source host's agent, moved by
/// it to the target host's agent, watched and cancelled by a standard gRPC client (python3-grpcio), real CRIU and a
/// real workload.
/// </summary>
public sealed class MigrationApiInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan s_migration = TimeSpan.FromMinutes(4);

    /// <summary>Every phase in order, each started then ended, and the outcome last (a default live migration).</summary>
    private static readonly string[] s_phases =
    [
        "phase-started preflight", "phase-ended preflight", "phase-started begin", "phase-ended begin",
        "phase-started precopy", "phase-ended precopy", "phase-started dump", "phase-ended dump",
        "phase-started final-round", "phase-ended final-round", "phase-started transfer", "phase-ended transfer",
        "phase-started restore", "phase-ended restore", "phase-started commit", "phase-ended commit", "outcome commit",
    ];

    [RequiresRootFact]
    public async Task StartedOnTheSourceAgent_WatchedFromTheStartAndFromMidWay_EveryPhaseInOrderAndTheOutcome()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var target = await Agent.StartAsync(hosts, token);
        await using var source = await Agent.StartOnSourceAsync(hosts, token);
        // Pre-copy long enough for a second watcher to join while it runs: 192 MiB on a 200 Mbit/s link.
        await hosts.LimitSourceLinkAsync("200mbit");
        await using var workload = await Workload.StartAsync(hosts, mib: 192, writeRate: 10);
        int pid = workload.SinglePid();
        var client = await PythonMigrationClient.CreateAsync(hosts, hosts.Source, source, token);

        var started = await client.CallAsync("start", pid.ToString(CultureInfo.InvariantCulture), target.Endpoint, """{"compress": "always"}""");
        output.WriteLine(started.ToString());
        string id = started.GetProperty("migration_id").GetString()!;
        await using var first = client.Watch(id);
        await first.WaitForOutputAsync("\"phase-started\", \"phase\": \"precopy\"", TimeSpan.FromSeconds(60), "first watcher: pre-copy");
        Assert.Equal("running", (await client.CallAsync("get", id)).GetProperty("state").GetString());
        await using var second = client.Watch(id);
        Assert.True(await first.WaitForExitAsync(s_migration), "the first watcher's stream did not end");
        Assert.True(await second.WaitForExitAsync(TimeSpan.FromSeconds(30)), "the second watcher's stream did not end");
        output.WriteLine(first.Output);

        var early = PythonMigrationClient.EventsOf(first);
        var late = PythonMigrationClient.EventsOf(second);
        // Both read the same history: every event, numbered from 0 without a gap, in the order it happened.
        Assert.Equal(Enumerable.Range(0, early.Count).Select(i => (long)i), early.Select(e => PythonMigrationClient.Number(e.Event, "seq")));
        Assert.Equal(early.Select(e => e.Event.ToString()), late.Select(e => e.Event.ToString()));
        // The second joined mid-way: after the first had events, before the outcome.
        Assert.True(late[0].Received > early[0].Received && late[0].Received < early[^1].Received,
            $"second watcher's first event at {late[0].Received}, first watcher's at {early[0].Received} .. {early[^1].Received}");

        var events = early.Select(e => e.Event).ToArray();
        Assert.Equal(s_phases, events.Where(e => Kind(e) is not ("note" or "iteration")).Select(e => $"{Kind(e)} {e.GetProperty("phase").GetString()}"));
        var at = events.Select(e => PythonMigrationClient.Number(e, "at_unix_micros")).ToArray();
        Assert.Equal(at.Order(), at);
        int precopyStart = Array.FindIndex(events, e => Kind(e) == "phase-started" && e.GetProperty("phase").GetString() == "precopy");
        int precopyEnd = Array.FindIndex(events, e => Kind(e) == "phase-ended" && e.GetProperty("phase").GetString() == "precopy");
        var iterations = events.Where(e => Kind(e) == "iteration").ToArray();
        Assert.NotEmpty(iterations);
        Assert.All(iterations, it => Assert.InRange(Array.IndexOf(events, it), precopyStart + 1, precopyEnd - 1));
        Assert.Equal(Enumerable.Range(0, iterations.Length).Select(i => (long)i), iterations.Select(it => PythonMigrationClient.Number(it.GetProperty("iteration"), "index")));
        Assert.True(PythonMigrationClient.Number(iterations[0].GetProperty("iteration"), "pages_sent") > 10_000, iterations[0].ToString());
        Assert.NotEmpty(iterations[^1].GetProperty("iteration").GetProperty("stop_reason").GetString()!);
        Assert.NotEmpty(events.Single(e => Kind(e) == "phase-ended" && e.GetProperty("phase").GetString() == "begin").GetProperty("target_migration_id").GetString()!);

        var outcome = events[^1].GetProperty("outcome");
        Assert.True(outcome.GetProperty("succeeded").GetBoolean(), outcome.ToString());
        Assert.Equal("running-on-target", outcome.GetProperty("workload").GetString());
        Assert.Equal(0, outcome.GetProperty("exit_code").GetInt32());
        int targetPid = outcome.GetProperty("target_pid").GetInt32();
        Assert.True(targetPid > 0);

        // Where the outcome says: the one live copy on the target, its memory intact.
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(workload.SinglePid()));
        Assert.Equal("ok", (await workload.StatusAsync(hosts.Target))["verify"]);

        // Too late to cancel a committed migration; the source agent lists it as it ended.
        var tooLate = await client.CallAsync("cancel", id);
        Assert.Equal("FAILED_PRECONDITION", tooLate.GetProperty("code").GetString());
        Assert.Contains("too late", tooLate.GetProperty("details").GetString(), StringComparison.Ordinal);
        var listed = (await client.CallAsync("list")).GetProperty("migrations").EnumerateArray().Single(m => m.GetProperty("migration_id").GetString() == id);
        Assert.Equal(("outgoing", "succeeded", pid), (listed.GetProperty("direction").GetString(), listed.GetProperty("state").GetString(), listed.GetProperty("pid").GetInt32()));
    }

    [RequiresRootFact]
    public async Task CancelledMidPrecopy_TheWorkloadRunsOnTheSourceIntact_AndTheTargetHoldsNothing()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var target = await Agent.StartAsync(hosts, token);
        await using var source = await Agent.StartOnSourceAsync(hosts, token);
        await hosts.LimitSourceLinkAsync("100mbit");
        await using var workload = await Workload.StartAsync(hosts, mib: 192, writeRate: 10);
        int pid = workload.SinglePid();
        var before = await workload.StatusAsync(hosts.Source);
        var client = await PythonMigrationClient.CreateAsync(hosts, hosts.Source, source, token);

        string id = (await client.CallAsync("start", pid.ToString(CultureInfo.InvariantCulture), target.Endpoint, """{"compress": "never"}"""))
            .GetProperty("migration_id").GetString()!;
        await using var watcher = client.Watch(id);
        await watcher.WaitForOutputAsync("\"phase-started\", \"phase\": \"precopy\"", TimeSpan.FromSeconds(60), "watcher: pre-copy");
        await Task.Delay(1000); // pages flowing: 192 MiB take ~15 s at 100 Mbit/s

        var cancelled = await client.CallAsync("cancel", id);
        output.WriteLine(cancelled.ToString());
        var outcome = cancelled.GetProperty("outcome");
        Assert.False(outcome.GetProperty("succeeded").GetBoolean());
        Assert.True(outcome.GetProperty("cancelled").GetBoolean(), outcome.ToString());
        Assert.Equal("precopy", outcome.GetProperty("failed_phase").GetString());
        Assert.Equal("untouched", outcome.GetProperty("workload").GetString());
        Assert.Equal(1, outcome.GetProperty("exit_code").GetInt32());
        Assert.Contains("cancelled", outcome.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.True(await watcher.WaitForExitAsync(TimeSpan.FromSeconds(30)), "the watch stream did not end after the cancel");
        var events = PythonMigrationClient.EventsOf(watcher).Select(e => e.Event).ToArray();
        Assert.Equal("outcome", Kind(events[^1]));
        Assert.DoesNotContain(events, e => e.GetProperty("phase").GetString() == "dump");
        Assert.Equal("cancelled", (await client.CallAsync("get", id)).GetProperty("state").GetString());

        // The one live copy is the original, on the source, its memory intact and still writing.
        Assert.Equal(pid, workload.SinglePid());
        Assert.Equal(hosts.SourceNetns, NetNs.OfProcess(pid));
        var after = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", after["verify"]);
        Assert.Equal("ok", after["file"]);
        Assert.True(long.Parse(after["writes"], CultureInfo.InvariantCulture) > long.Parse(before["writes"], CultureInfo.InvariantCulture));
        Assert.StartsWith("PONG", await NetNs.QueryAsync(hosts.Source, workload.Port, "PING", TimeSpan.FromSeconds(5)), StringComparison.Ordinal);

        // The target was told: its migration aborted, nothing of it left but CRIU's logs.
        var onTarget = await PythonMigrationClient.CreateAsync(hosts, hosts.Target, target, token);
        var incoming = (await onTarget.CallAsync("list")).GetProperty("migrations").EnumerateArray().ToArray();
        Assert.Single(incoming);
        Assert.Equal(("incoming", "aborted"), (incoming[0].GetProperty("direction").GetString(), incoming[0].GetProperty("state").GetString()));
        foreach (var dir in Directory.EnumerateDirectories(target.WorkDir))
        {
            Assert.DoesNotContain(Directory.EnumerateDirectories(dir).Select(Path.GetFileName), d => d is "images" or "pages" or "parent-images");
        }
    }

    /// <summary>
    /// A cancel while the tree is frozen: the target agent is stopped (SIGSTOP) as the dump begins, so that the cutover
    /// waits on it, the cancel comes, then the agent continues. The cutover refuses post-dump at its next step: CRIU
    /// resumes the source copy and the target discards its own.
    /// </summary>
    [RequiresRootFact]
    public async Task CancelledWhileFrozen_TheWorkloadResumesOnTheSource_AndTheTargetHoldsNothing()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var target = await Agent.StartAsync(hosts, token);
        await using var source = await Agent.StartOnSourceAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 128, writeRate: 10);
        int pid = workload.SinglePid();
        var client = await PythonMigrationClient.CreateAsync(hosts, hosts.Source, source, token);

        string id = (await client.CallAsync("start", pid.ToString(CultureInfo.InvariantCulture), target.Endpoint)).GetProperty("migration_id").GetString()!;
        await using var watcher = client.Watch(id);
        await watcher.WaitForOutputAsync("\"phase-started\", \"phase\": \"dump\"", TimeSpan.FromSeconds(120), "watcher: the freeze");
        await Signal("STOP", target.Pid);
        JsonElement cancelled;
        try
        {
            var cancelling = client.CallAsync("cancel", id);
            await Task.Delay(2000);
            Assert.False(cancelling.IsCompleted, "the cancel answered while the target was stopped: the migration cannot have rolled back yet");
            await Signal("CONT", target.Pid);
            cancelled = await cancelling.WaitAsync(TimeSpan.FromSeconds(120));
        }
        finally
        {
            await Signal("CONT", target.Pid);
        }

        output.WriteLine(cancelled.ToString());
        var outcome = cancelled.GetProperty("outcome");
        Assert.True(outcome.GetProperty("cancelled").GetBoolean(), outcome.ToString());
        Assert.Equal("running-on-source", outcome.GetProperty("workload").GetString());
        Assert.Contains(outcome.GetProperty("failed_phase").GetString(), new[] { "transfer", "restore" });
        Assert.True(await watcher.WaitForExitAsync(TimeSpan.FromSeconds(30)), "the watch stream did not end after the cancel");
        Assert.DoesNotContain(PythonMigrationClient.EventsOf(watcher), e => e.Event.GetProperty("phase").GetString() == "commit");

        Assert.Equal(pid, workload.SinglePid());
        var after = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", after["verify"]);
        Assert.Equal("ok", after["file"]);
        var onTarget = await PythonMigrationClient.CreateAsync(hosts, hosts.Target, target, token);
        var incoming = (await onTarget.CallAsync("list")).GetProperty("migrations").EnumerateArray().ToArray();
        Assert.Equal("aborted", Assert.Single(incoming).GetProperty("state").GetString());
        foreach (var dir in Directory.EnumerateDirectories(target.WorkDir))
        {
            Assert.DoesNotContain(Directory.EnumerateDirectories(dir).Select(Path.GetFileName), d => d is "images" or "pages" or "parent-images");
        }

        static async Task Signal(string signal, int pid)
        {
            using var kill = System.Diagnostics.Process.Start("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)]);
            await kill.WaitForExitAsync();
        }
    }

    private static string Kind(JsonElement e) => e.GetProperty("kind").GetString()!;
}

using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// Each failure before the commit leaves the workload running on the source (exactly one live copy) and
/// makes migrate exit non-zero with the reason.
/// </summary>
public sealed class FailurePathTests(ITestOutputHelper output)
{
    [RequiresRootFact]
    public async Task WrongTokenIsRefusedBeforeAnythingIsFrozen()
    {
        await using var hosts = await TestHosts.CreateAsync();
        await using var agent = await Agent.StartAsync(hosts, hosts.NewToken("agent-token"));
        await using var workload = await Workload.StartAsync(hosts, mib: 16);
        int pid = workload.SinglePid();
        await NetNs.QueryAsync(hosts.Source, workload.Port, "RESETGAP", TimeSpan.FromSeconds(5));

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, hosts.NewToken("other-token"), pid);
        output.WriteLine(result.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("failed", json.GetProperty("status").GetString());
        Assert.Equal("preflight", json.GetProperty("phase").GetString());
        Assert.Equal("untouched", json.GetProperty("workload").GetString());
        Assert.Contains("token", json.GetProperty("error").GetString(), StringComparison.OrdinalIgnoreCase);
        await AssertStillRunsOnSourceAsync(hosts, workload, pid, maxGapMs: 100);
        // The agent saw no migration: nothing was begun there.
        Assert.False(Directory.Exists(agent.WorkDir) && Directory.EnumerateDirectories(agent.WorkDir).Any(d => !Path.GetFileName(d).StartsWith('.')),
            "no migration directory may exist on the agent");
    }

    [RequiresRootFact]
    public async Task FailedPreflightSaysWhyAndChangesNothing()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        // The agent may not use the disk it has: a reserve larger than any disk.
        await using var agent = await Agent.StartAsync(hosts, token, "--reserve-mib", "1000000000");
        await using var workload = await Workload.StartAsync(hosts, mib: 16);
        int pid = workload.SinglePid();
        await NetNs.QueryAsync(hosts.Source, workload.Port, "RESETGAP", TimeSpan.FromSeconds(5));

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(result.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("preflight", json.GetProperty("phase").GetString());
        Assert.Equal("untouched", json.GetProperty("workload").GetString());
        Assert.Contains("disk:", json.GetProperty("error").GetString(), StringComparison.Ordinal);
        await AssertStillRunsOnSourceAsync(hosts, workload, pid, maxGapMs: 100);
        // Nothing left on the agent: no migration directory, no preflight scratch.
        Assert.Equal(new[] { "agent-cert.pem" }, Directory.EnumerateFileSystemEntries(agent.WorkDir).Select(p => Path.GetFileName(p)).ToArray());
    }

    [RequiresRootFact]
    public async Task UnknownPidFailsClearly()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        int unused = FindUnusedPid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, unused);

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("untouched", json.GetProperty("workload").GetString());
        Assert.Contains($"process {unused} does not exist", json.GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [RequiresRootFact]
    public async Task TargetAgentDownLeavesWorkloadRunning()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var workload = await Workload.StartAsync(hosts, mib: 16);
        int pid = workload.SinglePid();
        await NetNs.QueryAsync(hosts.Source, workload.Port, "RESETGAP", TimeSpan.FromSeconds(5));

        // No agent listens on the target.
        var (result, json) = await MigrateCommand.RunAsync(hosts, $"{hosts.TargetAddress}:{Agent.Port}", token, pid);
        output.WriteLine(result.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("preflight", json.GetProperty("phase").GetString());
        Assert.Contains("cannot connect", json.GetProperty("error").GetString(), StringComparison.Ordinal);
        await AssertStillRunsOnSourceAsync(hosts, workload, pid, maxGapMs: 100);
    }

    [RequiresRootFact]
    public async Task RestoreFailingOnTargetResumesSource()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token, "--inject-fault", "restore");
        await using var workload = await Workload.StartAsync(hosts, mib: 32);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(result.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("running-on-source", json.GetProperty("workload").GetString());
        var error = json.GetProperty("error").GetString()!;
        Assert.Contains("restore", error, StringComparison.OrdinalIgnoreCase);
        // CRIU's own words travel back to the user, not just "failed".
        Assert.Contains("criu:", error, StringComparison.Ordinal);
        await AssertStillRunsOnSourceAsync(hosts, workload, pid, maxGapMs: null);
    }

    [RequiresRootFact]
    public async Task TransferCutMidwayResumesSource()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token, "--inject-fault", "cut-transfer");
        await using var workload = await Workload.StartAsync(hosts, mib: 32);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(result.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("transfer", json.GetProperty("phase").GetString());
        Assert.Equal("running-on-source", json.GetProperty("workload").GetString());
        await AssertStillRunsOnSourceAsync(hosts, workload, pid, maxGapMs: null);
        Assert.Contains("aborted", agent.Output, StringComparison.Ordinal);
    }

    /// <summary>
    /// Connections the dump could not carry are refused in the preflight, with the reason and the remedy, before anything is
    /// frozen: a connection without --tcp-established, and with it a loopback connection to a process outside the tree.
    /// </summary>
    [RequiresRootFact]
    public async Task ConnectionsTheDumpCannotCarryAreRefusedBeforeTheFreeze()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        // A peer outside the tree, and a tree that holds a connection to it and one to itself.
        const string Peer = """
            import socket, time
            l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("127.0.0.1", 47311)); l.listen(1)
            print("listening", flush=True)
            c, _ = l.accept()
            time.sleep(600)
            """;
        const string Tree = """
            import os, socket, time
            l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
            a = socket.create_connection(l.getsockname()); b, _ = l.accept()
            o = socket.create_connection(("127.0.0.1", 47311))
            print("pid", os.getpid(), flush=True)
            n = 0
            while True:
                n += 1; time.sleep(0.01)
            """;
        await using var peer = new BackgroundProcess("nsenter", [.. TestHosts.On(hosts.Source), "python3", "-c", Peer]);
        await peer.WaitForOutputAsync("listening", TimeSpan.FromSeconds(20), "outside peer");
        await using var tree = new BackgroundProcess("nsenter", [.. TestHosts.On(hosts.Source), "python3", "-c", Tree]);
        await tree.WaitForOutputAsync("pid ", TimeSpan.FromSeconds(20), "tree");
        int pid = tree.Pid;

        var (without, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(without.ToString());
        Assert.Equal(1, without.ExitCode);
        Assert.Equal("preflight", json.GetProperty("phase").GetString());
        Assert.Equal("untouched", json.GetProperty("workload").GetString());
        Assert.Contains("3 TCP connection(s)", json.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Contains("--tcp-established", json.GetProperty("error").GetString(), StringComparison.Ordinal);

        var (with, json2) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--tcp-established");
        output.WriteLine(with.ToString());
        Assert.Equal(1, with.ExitCode);
        Assert.Equal("preflight", json2.GetProperty("phase").GetString());
        Assert.Equal("untouched", json2.GetProperty("workload").GetString());
        Assert.Contains("1 loopback connection(s) to a process outside it", json2.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Contains(":47311", json2.GetProperty("error").GetString(), StringComparison.Ordinal);

        // Never frozen, never dumped: the tree runs on here, and the agent saw no migration.
        Assert.False(tree.HasExited);
        Assert.DoesNotContain("State:\tT", await File.ReadAllTextAsync($"/proc/{pid}/status"), StringComparison.Ordinal);
        Assert.Equal(hosts.SourceNetns, NetNs.OfProcess(pid));
        Assert.Equal(new[] { "agent-cert.pem" }, Directory.EnumerateFileSystemEntries(agent.WorkDir).Select(p => Path.GetFileName(p)).ToArray());
    }

    /// <summary>
    /// migrate is killed (SIGKILL) during pre-copy: the workload runs on, intact, and the target, whose page stream
    /// broke, drops the migration's pages at once rather than holding them for a source that will never call again.
    /// </summary>
    [RequiresRootFact]
    public async Task MigrateKilledDuringPrecopyLeavesTheWorkloadAndNoPagesOnTheTarget()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 256, writeRate: 20);
        int pid = workload.SinglePid();
        var args = new List<string>(TestHosts.On(hosts.Source))
        {
            Binaries.Migrate, "--to", agent.Endpoint, "--token-file", token, "--work-dir", Path.Combine(hosts.Root, "source-work"),
            "--log-dir", Path.Combine(hosts.Root, "source-logs"), pid.ToString(CultureInfo.InvariantCulture),
        };
        await using (var migrate = new BackgroundProcess("nsenter", args))
        {
            await migrate.WaitForOutputAsync("[precopy] iteration", TimeSpan.FromSeconds(60), "pre-copy");
            var dirs = Directory.EnumerateDirectories(agent.WorkDir).Where(d => !Path.GetFileName(d).StartsWith('.')).ToArray();
            Assert.True(Directory.Exists(Path.Combine(Assert.Single(dirs), "pages")), "the target holds the pre-copied pages");
            Engine.Processes.ProcessTree.SignalAll([migrate.Pid], 9);
            Assert.True(await migrate.WaitForExitAsync(TimeSpan.FromSeconds(20)));
            output.WriteLine(migrate.Output);

            for (var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20); Directory.Exists(Path.Combine(dirs[0], "pages")); await Task.Delay(100))
            {
                Assert.True(DateTime.UtcNow < deadline, $"the target still holds the pages of a migration whose source died: {agent.Output}");
            }
        }

        Assert.Contains("page stream broke", agent.Output, StringComparison.Ordinal);
        await AssertStillRunsOnSourceAsync(hosts, workload, pid, maxGapMs: null);
    }

    /// <summary>The original process is the one live copy, on the source, intact and making progress.</summary>
    private static async Task AssertStillRunsOnSourceAsync(TestHosts hosts, Workload workload, int pid, double? maxGapMs)
    {
        Assert.Equal(pid, workload.SinglePid());
        Assert.Equal(hosts.SourceNetns, NetNs.OfProcess(pid));
        var s1 = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", s1["verify"]);
        Assert.Equal("ok", s1["file"]);
        // Its heartbeat goes on (a loaded machine may give it little time: up to 5 s to see a beat; a tree left stopped never beats).
        var s2 = s1;
        for (int i = 0; i < 25 && long.Parse(s2["beats"], CultureInfo.InvariantCulture) <= long.Parse(s1["beats"], CultureInfo.InvariantCulture); i++)
        {
            await Task.Delay(200);
            s2 = await workload.StatusAsync(hosts.Source);
        }

        Assert.True(long.Parse(s2["beats"], CultureInfo.InvariantCulture) > long.Parse(s1["beats"], CultureInfo.InvariantCulture), "the workload must keep running");
        if (maxGapMs is { } max)
        {
            // Never frozen: its heartbeat never paused for long.
            Assert.True(long.Parse(s2["maxgap_us"], CultureInfo.InvariantCulture) / 1000.0 < max, $"workload paused for {s2["maxgap_us"]} us");
        }
    }

    private static int FindUnusedPid()
    {
        int max = int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), CultureInfo.InvariantCulture);
        for (int pid = max - 1; pid > 1000; pid--)
        {
            if (!Directory.Exists($"/proc/{pid}"))
            {
                return pid;
            }
        }

        throw new InvalidOperationException("no unused pid");
    }
}

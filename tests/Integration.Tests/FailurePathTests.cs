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

    /// <summary>The original process is the one live copy, on the source, intact and making progress.</summary>
    private static async Task AssertStillRunsOnSourceAsync(TestHosts hosts, Workload workload, int pid, double? maxGapMs)
    {
        Assert.Equal(pid, workload.SinglePid());
        Assert.Equal(hosts.SourceNetns, NetNs.OfProcess(pid));
        var s1 = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", s1["verify"]);
        Assert.Equal("ok", s1["file"]);
        await Task.Delay(200);
        var s2 = await workload.StatusAsync(hosts.Source);
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

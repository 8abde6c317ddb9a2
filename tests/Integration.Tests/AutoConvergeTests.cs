using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// Auto-converge: a workload that writes faster than a 200 Mbit/s link moves its pages (memwork's unpaced writer) is
/// throttled during pre-copy instead of being frozen with its whole hot set, and the throttle is gone afterwards,
/// on success (the target copy runs freely) and on failure (the source copy does).
/// </summary>
public sealed class AutoConvergeTests(ITestOutputHelper output)
{
    [RequiresRootFact]
    public async Task AnUnpacedWriterIsThrottledMigratesIntactAndRunsFreelyAfterwards()
    {
        await using var hosts = await TestHosts.CreateAsync();
        // Slow enough that the writer outpaces it however loaded this machine is (it dirties ~40 MiB per iteration).
        await hosts.LimitSourceLinkAsync("200mbit");
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 64, unpaced: true);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--max-iterations", "3");
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        int throttle = json.GetProperty("throttlePercent").GetInt32();
        Assert.True(throttle >= 20, $"an unpaced writer over 200 Mbit/s was not throttled (throttlePercent {throttle})");
        var levels = json.GetProperty("iterationDetails").EnumerateArray().Select(i => i.GetProperty("throttlePercent").GetInt32()).ToArray();
        Assert.Equal(0, levels[0]);
        Assert.True(levels.Length > 3, $"auto-converge iterated past --max-iterations: {string.Join(",", levels)}");
        Assert.Equal(levels.OrderBy(l => l), levels); // the level only rises

        int targetPid = workload.SinglePid();
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(targetPid));
        var after = await workload.StatusAsync(hosts.Target);
        Assert.Equal("ok", after["verify"]);
        await AssertRunsFreelyAsync(hosts.Target, workload, targetPid);
    }

    [RequiresRootFact]
    public async Task AFailedMigrationLeavesTheSourceUnthrottled()
    {
        await using var hosts = await TestHosts.CreateAsync();
        await hosts.LimitSourceLinkAsync("1gbit");
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token, "--inject-fault", "restore");
        await using var workload = await Workload.StartAsync(hosts, mib: 64, unpaced: true);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--max-iterations", "3");
        output.WriteLine(result.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("running-on-source", json.GetProperty("workload").GetString());
        Assert.Equal(pid, workload.SinglePid());
        var status = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", status["verify"]);
        await AssertRunsFreelyAsync(hosts.Source, workload, pid);
    }

    /// <summary>Not stopped, no throttle guard left, and the writer writes at full speed: no stop over a second of samples.</summary>
    private static async Task AssertRunsFreelyAsync(string netns, Workload workload, int pid)
    {
        for (int i = 0; i < 20; i++)
        {
            var state = File.ReadAllText($"/proc/{pid}/stat").Split(')')[1].Trim()[0];
            Assert.NotEqual('T', state);
            await Task.Delay(50);
        }

        Assert.DoesNotContain(Directory.EnumerateDirectories("/proc").Select(d => Path.Combine(d, "cmdline")),
            f => File.Exists(f) && SafeRead(f).Contains("migrate-throttle-guard", StringComparison.Ordinal));
        var a = await workload.StatusAsync(netns);
        await Task.Delay(300);
        var b = await workload.StatusAsync(netns);
        Assert.True(long.Parse(b["writes"], CultureInfo.InvariantCulture) > long.Parse(a["writes"], CultureInfo.InvariantCulture));
    }

    private static string SafeRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return "";
        }
        catch (UnauthorizedAccessException)
        {
            return "";
        }
    }
}

using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// The lazy fill of a live migration (pre-copy, then <c>criu restore --lazy-pages</c> fed by the agent's store): big
/// mappings, and a daemon that dies before the commit.
/// </summary>
public sealed class LazyFillTests(ITestOutputHelper output)
{
    /// <summary>
    /// One anonymous mapping of 2.25 GiB, every page resident (zeros, cheap on the stream and in the store) with the
    /// pattern on every 64th page, so CRIU dumps it as a single lazy pagemap run past 2 GiB. CRIU 4.2.1's lazy-pages
    /// daemon kept that run's length in an int and died on it (scripts/criu-patches/0001-...): the migration must
    /// complete, the fill end, and every page read back as written, including those beyond the 2 GiB offset.
    /// </summary>
    [RequiresRootFact]
    public async Task MappingPast2GiBMigratesWithLazyRestoreAndKeepsItsPattern()
    {
        const int mib = 2304;
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: mib, mix: false, zeroPresent: true, sparse: 64);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("lazy", json.GetProperty("restorePages").GetString());
        int targetPid = workload.SinglePid();
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(targetPid));

        // The whole mapping went lazy: the daemon must finish filling it, not die on it.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(180);
        while (!agent.Output.Contains("every lazy page filled", StringComparison.Ordinal) && !agent.Output.Contains("lazy-pages failed", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the lazy fill did not end within 180 s of the commit: {agent.Output}");
            await Task.Delay(200);
        }

        output.WriteLine(agent.Output);
        Assert.DoesNotContain("lazy-pages failed", agent.Output, StringComparison.Ordinal);
        Assert.Contains("every lazy page filled", agent.Output, StringComparison.Ordinal);

        // memwork checks every page of the mapping against its pattern (zeros between the pattern pages).
        var status = await workload.StatusAsync(hosts.Target);
        Assert.Equal(mib.ToString(CultureInfo.InvariantCulture), status["mib"]);
        Assert.Equal("ok", status["verify"]);
        Assert.Equal("ok", status["file"]);
        Assert.Equal(targetPid, workload.SinglePid());
    }

    /// <summary>
    /// The lazy-pages daemon dies after the restore, before the commit (fault point kill-lazy-pages): the restored copy
    /// cannot get its memory, so the target must fail the restore and the workload resume on the source, whole.
    /// </summary>
    [RequiresRootFact]
    public async Task LazyPagesDaemonDyingBeforeTheCommitResumesTheSource()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token, "--inject-fault", "kill-lazy-pages");
        await using var workload = await Workload.StartAsync(hosts, mib: 32, writeRate: 10);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(result.ToString());
        output.WriteLine(agent.Output);

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("failed", json.GetProperty("status").GetString());
        Assert.Equal("running-on-source", json.GetProperty("workload").GetString());
        Assert.Contains("lazy-pages", json.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Contains("failed before the commit", agent.Output, StringComparison.Ordinal);

        // Exactly one copy, the original, on the source, intact and running.
        Assert.Equal(pid, workload.SinglePid());
        Assert.Equal(hosts.SourceNetns, NetNs.OfProcess(pid));
        var s1 = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", s1["verify"]);
        Assert.Equal("ok", s1["file"]);
        await Task.Delay(300);
        var s2 = await workload.StatusAsync(hosts.Source);
        Assert.True(long.Parse(s2["writes"], CultureInfo.InvariantCulture) > long.Parse(s1["writes"], CultureInfo.InvariantCulture), "the workload must keep writing");
    }
}

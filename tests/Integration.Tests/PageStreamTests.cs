using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>Cold migration with pages on the page stream: CRIU -> our page server -> stream -> page store -> criu restore.</summary>
public sealed class PageStreamTests(ITestOutputHelper output)
{
    [RequiresRootFact]
    public async Task SeveralHundredMiBOfMixedContentArriveIntact()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        // 384 MiB: a third zero pages (resident), a third text-like, a third random.
        await using var workload = await Workload.StartAsync(hosts, mib: 384, zeroPresent: true);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        ulong pages = json.GetProperty("pages").GetUInt64();
        ulong zero = json.GetProperty("zeroPages").GetUInt64();
        Assert.True(pages >= 384UL * 256, $"{pages} pages moved");
        // A third of the buffer is zero pages: elided, not sent.
        Assert.InRange(zero, 384UL * 256 / 3 - 256, 384UL * 256 / 3 + 4096);
        // Zero pages elided and text compressed: well under two thirds of the raw bytes cross.
        Assert.True(json.GetProperty("compressionRatio").GetDouble() > 1.8, $"ratio {json.GetProperty("compressionRatio")}");

        int targetPid = workload.SinglePid();
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(targetPid));
        var status = await workload.StatusAsync(hosts.Target);
        Assert.Equal("ok", status["verify"]);
        Assert.Equal("ok", status["file"]);
    }

    [RequiresRootFact]
    public async Task UncompressedStreamArrivesIntact()
    {
        // --compress never: the source encodes each run in CRIU's session (no encoder stage), pages go raw.
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 128, zeroPresent: true);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--compress", "never");
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        ulong pages = json.GetProperty("pages").GetUInt64();
        ulong zero = json.GetProperty("zeroPages").GetUInt64();
        Assert.True(pages >= 128UL * 256, $"{pages} pages moved");
        Assert.InRange(zero, 128UL * 256 / 3 - 256, 128UL * 256 / 3 + 4096);

        // Only the zero pages are left out: the rest crosses as it is (ratio = all pages / non-zero pages, about 1.5).
        Assert.InRange(json.GetProperty("compressionRatio").GetDouble(), 1.3, 1.7);

        int targetPid = workload.SinglePid();
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(targetPid));
        var status = await workload.StatusAsync(hosts.Target);
        Assert.Equal("ok", status["verify"]);
        Assert.Equal("ok", status["file"]);
    }

    [RequiresRootFact]
    public async Task BrokenPageStreamDuringTheDumpResumesSource()
    {
        var (hosts, agent, workload, result, json) = await MigrateIntoBrokenStoreAsync("cold");
        await using (hosts)
        await using (agent)
        await using (workload)
        {
            Assert.Single(workload.Pids());
            Assert.Equal(1, result.ExitCode);
            Assert.Equal("running-on-source", json.GetProperty("workload").GetString());
            Assert.Contains("page store failed", json.GetProperty("error").GetString(), StringComparison.Ordinal);
            Assert.Equal("ok", (await workload.StatusAsync(hosts.Source))["verify"]);
        }
    }

    [RequiresRootFact]
    public async Task BrokenPageStreamDuringPrecopyNeverFreezes()
    {
        var (hosts, agent, workload, result, json) = await MigrateIntoBrokenStoreAsync("precopy");
        await using (hosts)
        await using (agent)
        await using (workload)
        {
            Assert.Single(workload.Pids());
            Assert.Equal(1, result.ExitCode);
            Assert.Equal("precopy", json.GetProperty("phase").GetString());
            Assert.Equal("untouched", json.GetProperty("workload").GetString());
            Assert.Contains("page store failed", json.GetProperty("error").GetString(), StringComparison.Ordinal);
            Assert.Equal("ok", (await workload.StatusAsync(hosts.Source))["verify"]);
        }
    }

    /// <summary>A migration into an agent whose page store fails after its first batches.</summary>
    private async Task<(TestHosts, Agent, Workload, CommandResult, System.Text.Json.JsonElement)> MigrateIntoBrokenStoreAsync(string mode)
    {
        var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        var agent = await Agent.StartAsync(hosts, token, "--inject-fault", "cut-pages");
        var workload = await Workload.StartAsync(hosts, mib: 64);
        int pid = workload.SinglePid();
        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--mode", mode);
        output.WriteLine(result.ToString());
        return (hosts, agent, workload, result, json);
    }

    [RequiresRootFact]
    public async Task DryRunMovesEverythingAndChangesNothing()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 64);
        int pid = workload.SinglePid();

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--dry-run");
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("dry-run", json.GetProperty("status").GetString());
        Assert.True(json.GetProperty("pages").GetUInt64() > 64UL * 256 / 2);
        // Still exactly one copy, the original, running on the source.
        Assert.Equal(pid, workload.SinglePid());
        var s1 = await workload.StatusAsync(hosts.Source);
        await Task.Delay(200);
        var s2 = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", s2["verify"]);
        Assert.True(long.Parse(s2["beats"], CultureInfo.InvariantCulture) > long.Parse(s1["beats"], CultureInfo.InvariantCulture));
        // Nothing left on the target.
        Assert.Empty(Directory.EnumerateFiles(agent.WorkDir, "*.img", SearchOption.AllDirectories));
        Assert.Empty(Directory.EnumerateFiles(agent.WorkDir, "*.data", SearchOption.AllDirectories));
    }
}

using System.Globalization;
using Migration.Engine.Processes;
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
    /// The lazy-pages daemon dies before the commit (fault point kill-lazy-pages, just before the restore): a restored
    /// copy could not get its memory, so the target must fail the restore and the workload resume on the source, whole.
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

    /// <summary>
    /// The target agent is killed (SIGKILL) during the lazy fill of a 1 GiB live migration whose writer never pauses:
    /// the fill runs in a process of its own session, so it goes on, and the workload's memory verifies whole once it has
    /// ended (before, 96,616 of 262,144 pages read as zeros). An agent restarted during the fill leaves its data alone,
    /// and once the fill has exited leaves nothing behind. Exactly one copy runs throughout.
    /// </summary>
    [RequiresRootFact]
    public async Task AgentKilledDuringTheLazyFillLeavesTheWorkloadWhole()
    {
        const int mib = 1024;
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        var agent = await Agent.StartAsync(hosts, token);
        Agent? restarted = null;
        try
        {
            await using var workload = await Workload.StartAsync(hosts, mib: mib, unpaced: true);
            int pid = workload.SinglePid();
            await NetNs.QueryAsync(hosts.Source, workload.Port, "RESETGAP", TimeSpan.FromSeconds(5));

            var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
            output.WriteLine(result.ToString());
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Equal("lazy", json.GetProperty("restorePages").GetString());

            // The fill is under way: its state file names its process, which is not the agent's child by session.
            var migrationDir = Assert.Single(Directory.EnumerateDirectories(agent.WorkDir), d => !Path.GetFileName(d).StartsWith('.'));
            var before = ReadFillState(migrationDir);
            Assert.True(before is not null, "no lazy fill state file in the migration directory");
            Assert.Equal("serving", before.Value.GetProperty("phase").GetString());
            int fillPid = before.Value.GetProperty("serverPid").GetInt32();
            Assert.NotEqual(SessionOf(agent.Pid), SessionOf(fillPid));

            ProcessTree.SignalAll([agent.Pid], 9);
            Assert.True(await agent.WaitForExitAsync(TimeSpan.FromSeconds(10)), "the agent did not die of SIGKILL");
            long killedAt = Environment.TickCount64;
            Assert.True(ProcessTree.IsAlive(fillPid), "the lazy fill ended before the agent was killed: the test proves nothing");

            // A new agent while the fill runs: it must not sweep the fill's images.
            restarted = await Agent.StartAsync(hosts, token);
            bool stillFilling = ProcessTree.IsAlive(fillPid);
            output.WriteLine($"agent restarted {Environment.TickCount64 - killedAt} ms after the kill; fill still running: {stillFilling}");
            if (stillFilling)
            {
                Assert.Contains("outlived the agent", restarted.Output, StringComparison.Ordinal);
                Assert.True(Directory.Exists(Path.Combine(migrationDir, "images")) || !ProcessTree.IsAlive(fillPid), "the restarted agent swept the images of a running fill");
            }

            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (ProcessTree.IsAlive(fillPid))
            {
                Assert.True(DateTime.UtcNow < deadline, $"the lazy fill did not end within 60 s: {ReadFillState(migrationDir)}");
                await Task.Delay(100);
            }

            output.WriteLine($"fill ended {Environment.TickCount64 - killedAt} ms after the agent was killed");
            output.WriteLine(File.ReadAllText(Path.Combine(migrationDir, "lazy-fill.log")));

            // Exactly one copy, on the target, its memory whole.
            int targetPid = workload.SinglePid();
            Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(targetPid));
            var status = await workload.StatusAsync(hosts.Target);
            output.WriteLine(string.Join(" ", status.Select(kv => $"{kv.Key}={kv.Value}")));
            Assert.Equal("ok", status["verify"]);
            Assert.Equal("ok", status["file"]);
            Assert.Contains("every lazy page filled", File.ReadAllText(Path.Combine(migrationDir, "lazy-fill.log")), StringComparison.Ordinal);
            await Task.Delay(300);
            var later = await workload.StatusAsync(hosts.Target);
            Assert.True(long.Parse(later["writes"], CultureInfo.InvariantCulture) > long.Parse(status["writes"], CultureInfo.InvariantCulture), "the workload must keep writing");
            Assert.Equal(targetPid, workload.SinglePid());

            // Nothing left of the migration but its logs, once the fill has ended.
            string[] data = ["images", "parent-images", "pages", "lazy-fill.json"];
            deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (data.Any(d => Path.Exists(Path.Combine(migrationDir, d))))
            {
                Assert.True(DateTime.UtcNow < deadline,
                    $"left behind after the fill: {string.Join(", ", data.Where(d => Path.Exists(Path.Combine(migrationDir, d))))}");
                await Task.Delay(100);
            }

            Assert.False(restarted.HasExited, restarted.Output);
        }
        finally
        {
            if (restarted is not null)
            {
                await restarted.DisposeAsync();
            }

            await agent.DisposeAsync();
        }
    }

    private static System.Text.Json.JsonElement? ReadFillState(string migrationDir)
    {
        var path = Path.Combine(migrationDir, "lazy-fill.json");
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
            return doc.RootElement.Clone();
        }
        catch (FileNotFoundException)
        {
            return null;
        }
    }

    /// <summary>The session id of <paramref name="pid"/> (field 6 of /proc/PID/stat).</summary>
    private static int SessionOf(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(fields[3], CultureInfo.InvariantCulture);
    }
}

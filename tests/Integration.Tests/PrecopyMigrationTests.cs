using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>Live migration: pre-copy with userfaultfd write-protect tracking while the workload keeps writing.</summary>
public sealed class PrecopyMigrationTests(ITestOutputHelper output)
{
    /// <summary>
    /// Default (lazy final dump, lazy restore: CRIU dumps metadata only, the target resumes before criu lazy-pages filled
    /// the memory) and the fallback (CRIU reads every page into our page server, the restore reads every page).
    /// </summary>
    [RequiresRootTheory]
    [InlineData("lazy", "lazy")]
    [InlineData("full", "eager")]
    public async Task WritingWorkloadKeepsItsPatternThroughLiveMigration(string finalDump, string restorePages)
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        // 128 MiB, 10% of its pages rewritten per second while it is copied.
        await using var workload = await Workload.StartAsync(hosts, mib: 128, writeRate: 10);
        int pid = workload.SinglePid();
        var before = await workload.StatusAsync(hosts.Source);

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--mode", "precopy",
            "--final-dump", finalDump, "--restore-pages", restorePages);
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("precopy", json.GetProperty("mode").GetString());
        Assert.True(json.GetProperty("iterations").GetInt32() >= 1, "pre-copy ran no iteration");
        if (finalDump == "lazy")
        {
            // CRIU sent no page: the last round was ours, mostly PARENT runs for pages the target already held.
            Assert.Equal("lazy", json.GetProperty("restorePages").GetString());
            long kept = json.GetProperty("finalPagesKept").GetInt64();
            long fromMemory = json.GetProperty("finalPagesFromMemory").GetInt64();
            // The writer dirties ~3300 pages/s; most of the 128 MiB (~21k resident non-zero pages here) was current.
            Assert.True(fromMemory > 0 && kept > 3 * fromMemory, $"{kept} pages kept from pre-copy, {fromMemory} read while frozen");
        }
        else
        {
            Assert.False(json.TryGetProperty("finalDump", out _));
        }

        ulong frozenBytes = json.GetProperty("bytesFrozen").GetUInt64();
        ulong allBytes = json.GetProperty("bytesSent").GetUInt64();
        // Most of the memory moved before the freeze: what crossed while frozen is a small part.
        Assert.True(frozenBytes < allBytes / 4, $"{frozenBytes} of {allBytes} bytes moved while frozen");

        int targetPid = workload.SinglePid();
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(targetPid));
        var after = await workload.StatusAsync(hosts.Target);
        // Every page intact, including those rewritten during pre-copy, and the writer still writing.
        Assert.Equal("ok", after["verify"]);
        Assert.Equal("ok", after["file"]);
        await Task.Delay(300);
        var later = await workload.StatusAsync(hosts.Target);
        Assert.True(long.Parse(later["writes"], CultureInfo.InvariantCulture) > long.Parse(after["writes"], CultureInfo.InvariantCulture));
        Assert.True(long.Parse(after["writes"], CultureInfo.InvariantCulture) > long.Parse(before["writes"], CultureInfo.InvariantCulture));

        // CRIU's network lock is gone from the source, and on the target CRIU removed its own.
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Source), StringComparison.Ordinal);
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Target), StringComparison.Ordinal);

        // The tracker left nothing in the restored process.
        var fds = Directory.EnumerateFileSystemEntries($"/proc/{targetPid}/fd").Select(f => new FileInfo(f).LinkTarget ?? "");
        Assert.DoesNotContain(fds, l => l.Contains("userfaultfd", StringComparison.Ordinal));
        Assert.DoesNotContain(" uw", File.ReadAllText($"/proc/{targetPid}/smaps").Split('\n').Where(l => l.StartsWith("VmFlags", StringComparison.Ordinal)).Select(l => l + " ").Aggregate("", string.Concat), StringComparison.Ordinal);
    }

    /// <summary>
    /// After a lazy restore the tree's memory is filled by the lazy fill process, in a session of its own: a SIGTERM
    /// stops the agent promptly and leaves the fill running, and the fill completes the workload's memory without it
    /// (unfilled pages would read as zeros) and removes the migration's data.
    /// </summary>
    [RequiresRootFact]
    public async Task StoppingTheAgentDuringTheLazyFillLeavesTheFillRunning()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 192, writeRate: 10, zeroPresent: true);

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, workload.SinglePid());
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("lazy", json.GetProperty("restorePages").GetString());

        // SIGTERM, as a service manager stops it.
        using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", agent.Pid.ToString(CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
            Assert.Equal(0, kill.ExitCode);
        }

        // Waiting on the exit itself, not polling HasExited: the agent's last lines arrive after it has exited.
        bool exited = await agent.WaitForExitAsync(TimeSpan.FromSeconds(30));
        output.WriteLine(agent.Output);
        Assert.True(exited, "the agent did not stop within 30 s of SIGTERM");
        Assert.True(agent.Output.Contains("goes on without it", StringComparison.Ordinal) || agent.Output.Contains("every lazy page filled", StringComparison.Ordinal),
            "the agent neither left a running fill nor saw it end");
        Assert.DoesNotContain("lazy-pages failed", agent.Output, StringComparison.Ordinal);

        // The fill ends on its own, and the migration's data goes with it.
        var dir = Assert.Single(Directory.EnumerateDirectories(agent.WorkDir), d => !Path.GetFileName(d).StartsWith('.'));
        var log = Path.Combine(dir, "lazy-fill.log");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        while (!(File.Exists(log) && File.ReadAllText(log).Contains("every lazy page filled", StringComparison.Ordinal)) || Directory.Exists(Path.Combine(dir, "images")))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the lazy fill did not end within 120 s: {(File.Exists(log) ? File.ReadAllText(log) : "no log")}");
            await Task.Delay(100);
        }

        output.WriteLine(File.ReadAllText(log));
        Assert.False(Directory.Exists(Path.Combine(dir, "pages")), "the page data outlived the fill");

        // The workload outlives the agent, whole.
        var status = await workload.StatusAsync(hosts.Target);
        Assert.Equal("ok", status["verify"]);
    }

    [RequiresRootFact]
    public async Task ColdModeStillAvailable()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 32, writeRate: 10);

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, workload.SinglePid(), "--mode", "cold");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(0, json.GetProperty("iterations").GetInt32());
        Assert.Equal("ok", (await workload.StatusAsync(hosts.Target))["verify"]);

        // The target made room for the workload's pages before the freeze, and the dump's pages went into it.
        Assert.True(json.GetProperty("provisionedBytes").GetUInt64() >= json.GetProperty("pageBytes").GetUInt64() / 2, json.ToString());
        Assert.DoesNotContain("went unused", agent.Output, StringComparison.Ordinal);
    }
}

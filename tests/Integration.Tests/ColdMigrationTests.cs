using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>Cold migration of a real process tree between two test hosts with real CRIU.</summary>
public sealed class ColdMigrationTests(ITestOutputHelper output)
{
    [RequiresRootFact]
    public async Task WorkloadMovesWithMemoryFileAndListeningSocket()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 128);
        int sourcePid = workload.SinglePid();
        Assert.Equal(hosts.SourceNetns, NetNs.OfProcess(sourcePid));
        var before = await workload.StatusAsync(hosts.Source);
        Assert.Equal("ok", before["verify"]);

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, sourcePid);
        output.WriteLine(result.ToString());
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("migrated", json.GetProperty("status").GetString());
        Assert.True(json.GetProperty("frozenMs").GetDouble() > 0);
        Assert.True(json.GetProperty("totalMs").GetDouble() >= json.GetProperty("frozenMs").GetDouble());
        // 128 MiB with a third untouched: about 85 MiB of pages crossed on the page stream, compressed
        // (a third of the buffer is text-like), and no page image was staged on the source.
        ulong pageBytes = json.GetProperty("pageBytes").GetUInt64();
        ulong pageWire = json.GetProperty("pageWireBytes").GetUInt64();
        Assert.True(pageBytes > 80UL << 20, $"pageBytes {pageBytes}");
        Assert.True(pageWire < pageBytes * 3 / 4, $"page stream not compressed: {pageWire} of {pageBytes}");
        Assert.True(json.GetProperty("bytesSent").GetUInt64() >= pageWire);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(hosts.Root, "source-work"), "pages-*", SearchOption.AllDirectories));

        // Exactly one copy, and it lives on the target.
        int targetPid = workload.SinglePid();
        Assert.NotEqual(sourcePid, targetPid);
        Assert.False(Engine.Processes.ProcessTree.IsAlive(sourcePid), "the source copy must be gone");
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(targetPid));
        Assert.Equal(targetPid, json.GetProperty("targetPid").GetInt32());
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Source), StringComparison.Ordinal);

        // Its memory pattern, open file and listening socket came along, and it keeps running.
        var after = await workload.StatusAsync(hosts.Target);
        Assert.Equal("ok", after["verify"]);
        Assert.Equal("ok", after["file"]);
        long beats1 = long.Parse(after["beats"], CultureInfo.InvariantCulture);
        Assert.True(beats1 > long.Parse(before["beats"], CultureInfo.InvariantCulture));
        await Task.Delay(300);
        var later = await workload.StatusAsync(hosts.Target);
        Assert.True(long.Parse(later["beats"], CultureInfo.InvariantCulture) > beats1, "the restored workload must keep running");

        // The pause the workload saw is about the frozen time we reported (the workload's own heartbeat gap).
        double gapMs = long.Parse(after["maxgap_us"], CultureInfo.InvariantCulture) / 1000.0;
        output.WriteLine($"workload heartbeat gap {gapMs:0} ms, reported frozen {json.GetProperty("frozenMs").GetDouble():0} ms");
        Assert.True(gapMs <= json.GetProperty("frozenMs").GetDouble() + 250, $"heartbeat gap {gapMs} ms exceeds reported frozen time");

        // The token never appears in a log, in migrate's output, or in any process's arguments.
        var secret = File.ReadAllText(token).Trim();
        Assert.DoesNotContain(secret, result.Stdout + result.Stderr + agent.Output, StringComparison.Ordinal);
        foreach (var log in Directory.EnumerateFiles(hosts.Root, "*.log", SearchOption.AllDirectories))
        {
            Assert.DoesNotContain(secret, File.ReadAllText(log), StringComparison.Ordinal);
        }

        foreach (var cmdline in Directory.EnumerateDirectories("/proc").Select(d => Path.Combine(d, "cmdline")))
        {
            try
            {
                Assert.DoesNotContain(secret, File.ReadAllText(cmdline).Replace('\0', ' '), StringComparison.Ordinal);
            }
            catch (IOException)
            {
                // The process exited while we looked.
            }
        }

        // The source side left no staged images behind; the target removed its images after the commit.
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(hosts.Root, "source-work"), "*.img", SearchOption.AllDirectories));
        Assert.Empty(Directory.EnumerateFiles(agent.WorkDir, "pages-*.img", SearchOption.AllDirectories));
    }
}

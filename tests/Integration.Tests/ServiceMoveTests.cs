using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// A server's clients see a pause, never a reset: three hosts on one switch (client, source, target), a server that
/// answers on a service address, and a client on the third host sending one sequence number per millisecond over ONE
/// connection and checking every reply (native/workload/tcpseq.c). The server migrates with --tcp-established and
/// --move-address; the client sees no error and no lost or repeated reply, and reports its longest stall. Afterwards
/// the address answers from the target, new connections too, and the source holds no server, no address and no
/// CRIU lock table.
/// </summary>
public sealed class ServiceMoveTests(ITestOutputHelper output)
{
    private const int Port = 7100;

    [RequiresRootTheory]
    [InlineData("precopy", false)]
    [InlineData("cold", false)]
    [InlineData("precopy", true)]
    public async Task ClientsOfAMovedServiceSeeAPauseNotAReset(string mode, bool ipv6)
    {
        await using var hosts = await TestHosts.CreateAsync(withClient: true);
        var token = hosts.NewToken();
        string service = ipv6 ? hosts.ServiceAddress6! : hosts.ServiceAddress!;
        string address = service.Split('/')[0];
        await Run.CheckedAsync("ip", ["-n", hosts.Source, "addr", "add", service, "dev", hosts.SourceInterface, .. ipv6 ? new[] { "nodad" } : []]);
        await using var agent = await Agent.StartAsync(hosts, token, "--service-interface", hosts.TargetInterface);
        var marker = Path.Combine(hosts.Root, $"server-{Guid.NewGuid():N}");
        File.Copy(Binaries.Tcpseq, marker);
        File.SetUnixFileMode(marker, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        await using var server = await ServerTree.StartAsync(hosts.Source, marker, [marker, "server", ipv6 ? "::" : "0.0.0.0", Port.ToString(CultureInfo.InvariantCulture)],
            () => Task.FromResult(NetNs.OfProcess(0) is null), TimeSpan.FromSeconds(20));
        var status = Path.Combine(hosts.Root, "client.status");
        await using var client = new BackgroundProcess("nsenter",
            [.. TestHosts.On(hosts.Client!), Binaries.Tcpseq, "client", address, Port.ToString(CultureInfo.InvariantCulture), "1000", "--status", status]);
        await client.WaitForOutputAsync("CONNECTED", TimeSpan.FromSeconds(20), "tcpseq client");
        long before = await RequestsAsync(status, atLeast: 200);

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, server.SingleRoot(),
            "--mode", mode, "--tcp-established", "--move-address", service);
        output.WriteLine(result.ToString());
        Assert.True(result.ExitCode == 0, result.ToString());

        // The one connection goes on: requests keep being answered, every one checked by the client.
        long after = await RequestsAsync(status, atLeast: before + 500, client);
        Assert.False(client.HasExited, client.Output);
        Engine.Processes.ProcessTree.SignalAll([client.Pid], 15);
        Assert.True(await client.WaitForExitAsync(TimeSpan.FromSeconds(10)));
        output.WriteLine(client.Output);
        var final = client.Output.Split('\n').Single(l => l.StartsWith("OK ", StringComparison.Ordinal) || l.StartsWith("ERROR ", StringComparison.Ordinal));
        Assert.StartsWith("OK ", final, StringComparison.Ordinal);
        long stallUs = long.Parse(final.Split(' ').Single(f => f.StartsWith("max_stall_us=", StringComparison.Ordinal))[13..], CultureInfo.InvariantCulture);
        output.WriteLine($"client's longest stall: {stallUs / 1000.0:0.0} ms; migrate reported frozen {json.GetProperty("frozenMs").GetDouble():0} ms; {after - before}+ requests across");

        // The server and its address are on the target; a new connection reaches it there.
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(server.SingleRoot()));
        Assert.Contains(address, await Run.CheckedAsync("ip", "-n", hosts.Target, "addr", "show", "dev", hosts.TargetInterface), StringComparison.Ordinal);
        Assert.DoesNotContain(address + "/", await Run.CheckedAsync("ip", "-n", hosts.Source, "addr", "show"), StringComparison.Ordinal);
        var fresh = await Run.CommandAsync("nsenter", [.. TestHosts.On(hosts.Client!), "timeout", "-s", "TERM", "1", Binaries.Tcpseq, "client", address, Port.ToString(CultureInfo.InvariantCulture)],
            TimeSpan.FromSeconds(20), "new client");
        Assert.Contains("OK requests=", fresh.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Source), StringComparison.Ordinal);
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Target), StringComparison.Ordinal);
    }

    /// <summary>The restore fails on the target: the address is back on the source and the connection survives there.</summary>
    [RequiresRootFact]
    public async Task AFailedRestorePutsTheAddressBackAndTheConnectionSurvives()
    {
        await using var hosts = await TestHosts.CreateAsync(withClient: true);
        var token = hosts.NewToken();
        string service = hosts.ServiceAddress!;
        string address = service.Split('/')[0];
        await Run.CheckedAsync("ip", "-n", hosts.Source, "addr", "add", service, "dev", hosts.SourceInterface);
        await using var agent = await Agent.StartAsync(hosts, token, "--service-interface", hosts.TargetInterface, "--inject-fault", "restore");
        var marker = Path.Combine(hosts.Root, $"server-{Guid.NewGuid():N}");
        File.Copy(Binaries.Tcpseq, marker);
        File.SetUnixFileMode(marker, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        await using var server = await ServerTree.StartAsync(hosts.Source, marker, [marker, "server", "0.0.0.0", Port.ToString(CultureInfo.InvariantCulture)],
            () => Task.FromResult(true), TimeSpan.FromSeconds(20));
        int pid = server.SingleRoot();
        var status = Path.Combine(hosts.Root, "client.status");
        await using var client = new BackgroundProcess("nsenter",
            [.. TestHosts.On(hosts.Client!), Binaries.Tcpseq, "client", address, Port.ToString(CultureInfo.InvariantCulture), "1000", "--status", status]);
        await client.WaitForOutputAsync("CONNECTED", TimeSpan.FromSeconds(20), "tcpseq client");
        long before = await RequestsAsync(status, atLeast: 200);

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--tcp-established", "--move-address", service);
        output.WriteLine(result.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("running-on-source", json.GetProperty("workload").GetString());
        Assert.Equal(pid, server.SingleRoot());
        Assert.Contains(address + "/", await Run.CheckedAsync("ip", "-n", hosts.Source, "addr", "show", "dev", hosts.SourceInterface), StringComparison.Ordinal);
        Assert.DoesNotContain(address + "/", await Run.CheckedAsync("ip", "-n", hosts.Target, "addr", "show"), StringComparison.Ordinal);
        await RequestsAsync(status, atLeast: before + 500, client);
        Assert.False(client.HasExited, client.Output);
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Source), StringComparison.Ordinal);
    }

    /// <summary>Waits until the client's status file shows at least <paramref name="atLeast"/> answered requests; fails on its error.</summary>
    private static async Task<long> RequestsAsync(string statusFile, long atLeast, BackgroundProcess? client = null)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            string line = File.Exists(statusFile) ? await File.ReadAllTextAsync(statusFile) : "";
            Assert.False(line.StartsWith("ERROR", StringComparison.Ordinal), $"the client failed: {client?.Output ?? line}");
            var field = line.Split(' ').FirstOrDefault(f => f.StartsWith("requests=", StringComparison.Ordinal));
            if (field is not null && long.Parse(field[9..], CultureInfo.InvariantCulture) is var n && n >= atLeast)
            {
                return n;
            }

            Assert.True(DateTime.UtcNow < deadline, $"the client answered fewer than {atLeast} requests: '{line.Trim()}'");
            await Task.Delay(100);
        }
    }
}

using System.Net;
using System.Net.Sockets;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// The agent under hostile load: a third host opens connections to both of the agent's ports and sends nothing (as a
/// port scanner, a stuck client or a slowloris would). A live migration from the source still goes through, the
/// agent closes the idle connections by itself (handshake timeouts), refuses what is past its bounds at once, and
/// says so in its log a bounded number of times.
/// </summary>
public sealed class HostileLoadTests(ITestOutputHelper output)
{
    /// <summary>Page port: more than the agent lets one address hold in its handshake (8), so some are refused at once.</summary>
    private const int IdlePageConnections = 40;

    /// <summary>Control port: many, under Kestrel's bound of 128 connections.</summary>
    private const int IdleControlConnections = 100;

    [RequiresRootFact]
    public async Task IdleStrangersOnBothPortsNeitherBlockAMigrationNorStay()
    {
        await using var hosts = await TestHosts.CreateAsync(withClient: true);
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        await using var workload = await Workload.StartAsync(hosts, mib: 32, writeRate: 5);

        var idle = new List<Socket>();
        try
        {
            for (int i = 0; i < IdlePageConnections; i++)
            {
                idle.Add(await ConnectAsync(hosts.Client!, hosts.TargetAddress, Agent.Port + 1));
            }

            for (int i = 0; i < IdleControlConnections; i++)
            {
                idle.Add(await ConnectAsync(hosts.Client!, hosts.TargetAddress, Agent.Port));
            }

            // Refused at once: the page port's connections past 8 from this address are closed without a handshake.
            await Task.Delay(500);
            int refusedAtOnce = idle.Take(IdlePageConnections).Count(Closed);
            Assert.True(refusedAtOnce >= IdlePageConnections - 8, $"{refusedAtOnce} of {IdlePageConnections} idle page-port connections closed at once");

            var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, workload.SinglePid());
            output.WriteLine(result.ToString());
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Equal("migrated", json.GetProperty("status").GetString());
            Assert.Equal("ok", (await workload.StatusAsync(hosts.Target))["verify"]);

            // Nobody of them proved the token: within the handshake timeouts (page port 15 s, control port 10 s) the
            // agent has closed every one.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(25);
            while (idle.Any(s => !Closed(s)) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(500);
            }

            int open = idle.Count(s => !Closed(s));
            Assert.True(open == 0, $"{open} of {idle.Count} idle connections still open 25 s on");
        }
        finally
        {
            foreach (var s in idle)
            {
                s.Dispose();
            }
        }

        // The page port said why it closed them, in a bounded number of lines.
        var refusals = agent.Output.Split('\n').Where(l => l.Contains("page stream connection from", StringComparison.Ordinal)).ToArray();
        output.WriteLine(string.Join('\n', refusals.Take(5)));
        Assert.Contains(refusals, l => l.Contains("already in their handshake", StringComparison.Ordinal));
        Assert.True(refusals.Length <= 8 + 3, $"{refusals.Length} refusal lines for {IdlePageConnections} connections");
    }

    private static async Task<Socket> ConnectAsync(string netns, string address, int port)
    {
        var socket = NetNs.CreateTcpSocket(netns);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(address), port));
        return socket;
    }

    /// <summary>The agent closed it: a read returns end of stream (or a reset) at once.</summary>
    private static bool Closed(Socket socket)
    {
        try
        {
            return socket.Poll(0, SelectMode.SelectRead) && socket.Receive(new byte[1], SocketFlags.Peek) == 0;
        }
        catch (SocketException)
        {
            return true;
        }
    }
}

using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// The user's CRIU options reach the restore on the target as well as the dump, cold and live: a tree that holds an
/// established TCP connection (both ends its own, with bytes queued unread) is migrated with --tcp-established and
/// the connection works on the target. Before the options travelled it was frozen, dumped, and then refused by the
/// restore. (--file-locks and --shell-job cannot be shown on one machine: the restore of a lock waits for the frozen
/// source copy that holds it on the one filesystem, and CRIU refuses a shell job that is the init of a pid
/// namespace, as the tests' trees must be. Their arguments are unit-tested.)
/// </summary>
public sealed class CriuFlagsMigrationTests(ITestOutputHelper output)
{
    /// <summary>
    /// One python3 process: a TCP connection between two of its sockets, 22 bytes sent on it before the migration
    /// and left unread, and a control port. "QUEUE" sends 22 bytes
    /// on it that nobody reads until "DRAIN" answers them; "PING x" sends x across the connection both ways and answers what came back.
    /// </summary>
    private const string Tree = """
        import socket
        l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
        a = socket.create_connection(l.getsockname()); b, _ = l.accept(); l.close()
        ctl = socket.socket(); ctl.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ctl.bind(("0.0.0.0", 9100)); ctl.listen(4)
        while True:
            c, _ = ctl.accept()
            cmd = c.recv(256).decode().strip()
            if cmd == "QUEUE":
                a.sendall(b"queued before the move"); out = b"queued"
            elif cmd == "DRAIN":
                b.settimeout(5); out = b.recv(256)
            elif cmd.startswith("PING "):
                word = cmd[5:].encode(); a.sendall(word); got = b.recv(256); b.sendall(got[::-1]); out = a.recv(256)
            else:
                out = b"?"
            c.sendall(out + b"\n"); c.close()
        """;

    [RequiresRootTheory]
    [InlineData("cold")]
    [InlineData("precopy")]
    public async Task AnEstablishedConnectionMovesWithTcpEstablished(string mode)
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        var script = Path.Combine(hosts.Root, $"tree-{Guid.NewGuid():N}.py");
        await File.WriteAllTextAsync(script, Tree);
        await using var tree = await ServerTree.StartAsync(hosts.Source, script, ["python3", script],
            async () => await NetNs.QueryAsync(hosts.Source, 9100, "PING hello", TimeSpan.FromSeconds(5)) == "olleh", TimeSpan.FromSeconds(30));
        int pid = tree.SingleRoot();
        Assert.Equal("queued", await NetNs.QueryAsync(hosts.Source, 9100, "QUEUE", TimeSpan.FromSeconds(5)));

        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid, "--mode", mode, "--tcp-established");
        output.WriteLine(result.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("migrated", json.GetProperty("status").GetString());
        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(tree.SingleRoot()));
        // The connection came along with its queue, and carries bytes both ways.
        Assert.Equal("queued before the move", await NetNs.QueryAsync(hosts.Target, 9100, "DRAIN", TimeSpan.FromSeconds(20)));
        Assert.Equal("dlrow", await NetNs.QueryAsync(hosts.Target, 9100, "PING world", TimeSpan.FromSeconds(20)));
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Source), StringComparison.Ordinal);
        Assert.DoesNotContain("CRIU-", await NetNs.NftTablesAsync(hosts.Target), StringComparison.Ordinal);
    }
}

using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Target.Incoming;
using Xunit;

namespace Migration.Target.Tests.Incoming;

/// <summary>What an earlier run of the agent left in its work directory is removed at start; logs stay.</summary>
public sealed class TargetAgentSweepTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("sweep-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void DataOfDeadMigrationsGoes_LogsStay()
    {
        var dead = Path.Combine(_root, "20261207120000-0badc0de");
        foreach (var d in new[] { "images", "parent-images", "pages" })
        {
            Directory.CreateDirectory(Path.Combine(dead, d));
            File.WriteAllBytes(Path.Combine(dead, d, "data"), new byte[1 << 20]);
        }

        File.WriteAllText(Path.Combine(dead, "restore.log"), "criu said");
        var logsOnly = Path.Combine(_root, "20261207110000-00000001");
        Directory.CreateDirectory(logsOnly);
        File.WriteAllText(Path.Combine(logsOnly, "restore.log"), "done");
        var scratch = Directory.CreateDirectory(Path.Combine(_root, ".preflight-abc")).FullName;
        File.WriteAllText(Path.Combine(_root, "agent-cert.pem"), "cert");

        using var agent = new TargetAgent(new CriuClient(new CriuOptions(), NullLogger<CriuClient>.Instance),
            new TargetOptions { WorkRoot = _root }, NullLoggerFactory.Instance);

        Assert.Equal(1, agent.SweepLeftovers());
        Assert.Equal(new[] { "restore.log" }, Directory.EnumerateFileSystemEntries(dead).Select(p => Path.GetFileName(p)).ToArray());
        Assert.True(File.Exists(Path.Combine(logsOnly, "restore.log")));
        Assert.False(Directory.Exists(scratch));
        Assert.True(File.Exists(Path.Combine(_root, "agent-cert.pem")));
        Assert.Equal(0, agent.SweepLeftovers());
    }

    [Fact]
    public void NoWorkDirectoryYet_NothingToSweep()
    {
        using var agent = new TargetAgent(new CriuClient(new CriuOptions(), NullLogger<CriuClient>.Instance),
            new TargetOptions { WorkRoot = Path.Combine(_root, "not-yet") }, NullLoggerFactory.Instance);
        Assert.Equal(0, agent.SweepLeftovers());
    }
}

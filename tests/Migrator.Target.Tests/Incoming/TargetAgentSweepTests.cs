using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Target.Incoming;
using Migration.Target.LazyFill;
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

/// <summary>A lazy fill that outlived its agent is adopted, not swept; what it leaves goes once it has exited.</summary>
public sealed class TargetAgentAdoptedFillTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("adopt-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task RunningFillIsNotSwept_ThenSweptOnceItExits()
    {
        using var fill = Sleeper();
        var dir = MigrationDir("20261207120000-0000f111");
        new FillState { Phase = FillPhase.Serving, ServerPid = fill.Id, ServerStart = ProcessIdentity.StartTime(fill.Id) }.Write(dir);
        using var agent = NewAgent();

        Assert.Equal(0, agent.SweepLeftovers());
        Assert.True(Directory.Exists(Path.Combine(dir, "images")), "the images of a running fill were swept");
        var watch = Assert.Single(agent.AdoptedFills);

        fill.Kill();
        await watch.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(Directory.Exists(Path.Combine(dir, "images")));
        Assert.False(File.Exists(Path.Combine(dir, FillState.FileName)));
        Assert.True(File.Exists(Path.Combine(dir, "restore.log")));
    }

    [Fact]
    public void FillThatDiedBeforeItsVerdict_GetsItsTreeKilled()
    {
        using var tree = Sleeper();
        var dir = MigrationDir("20261207120000-0000dead");
        // A fill process that is gone (pid 1 with a start time that is not init's), a tree still running.
        new FillState
        {
            Phase = FillPhase.Serving,
            ServerPid = 1,
            ServerStart = ulong.MaxValue,
            TreePid = tree.Id,
            TreeStart = ProcessIdentity.StartTime(tree.Id),
        }.Write(dir);
        using var agent = NewAgent();

        Assert.Equal(1, agent.SweepLeftovers());
        Assert.True(tree.WaitForExit(TimeSpan.FromSeconds(10)), "the unfilled tree was left running");
        Assert.Empty(agent.AdoptedFills);
        Assert.False(File.Exists(Path.Combine(dir, FillState.FileName)));
    }

    [Fact]
    public void EndedFill_TreeIsLeftAlone()
    {
        using var tree = Sleeper();
        var dir = MigrationDir("20261207120000-0000d0e0");
        new FillState
        {
            Phase = FillPhase.Done,
            ServerPid = 1,
            ServerStart = ulong.MaxValue,
            TreePid = tree.Id,
            TreeStart = ProcessIdentity.StartTime(tree.Id),
        }.Write(dir);
        using var agent = NewAgent();

        Assert.Equal(1, agent.SweepLeftovers());
        Assert.False(tree.HasExited);
        tree.Kill();
    }

    private string MigrationDir(string name)
    {
        var dir = Path.Combine(_root, name);
        foreach (var d in new[] { "images", "parent-images", "pages" })
        {
            Directory.CreateDirectory(Path.Combine(dir, d));
            File.WriteAllBytes(Path.Combine(dir, d, "data"), new byte[4096]);
        }

        File.WriteAllText(Path.Combine(dir, "restore.log"), "criu said");
        return dir;
    }

    private TargetAgent NewAgent() => new(new CriuClient(new CriuOptions(), NullLogger<CriuClient>.Instance),
        new TargetOptions { WorkRoot = _root }, NullLoggerFactory.Instance);

    private static System.Diagnostics.Process Sleeper() => System.Diagnostics.Process.Start("sleep", "60");
}

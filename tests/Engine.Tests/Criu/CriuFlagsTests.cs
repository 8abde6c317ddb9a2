using Migration.Engine.Criu;
using Xunit;

namespace Migration.Engine.Tests.Criu;

/// <summary>The one contract of the user's CRIU options: by name on the wire, the same fields set for dump and restore.</summary>
public sealed class CriuFlagsTests
{
    [Fact]
    public void EveryOptionSetsItsOwnField_AndNothingElse()
    {
        foreach (var flag in CriuFlags.All)
        {
            var opts = new Migration.Engine.Criu.Rpc.CriuOpts();
            CriuFlags.FromNames([flag.Name]).ApplyTo(opts);
            var set = new[] { opts.TcpEstablished, opts.ShellJob, opts.FileLocks, opts.ExtUnixSk }.Count(b => b);
            Assert.Equal(1, set);
        }

        var all = new Migration.Engine.Criu.Rpc.CriuOpts();
        CriuFlags.FromNames(CriuFlags.All.Select(f => f.Name)).ApplyTo(all);
        Assert.True(all.TcpEstablished && all.ShellJob && all.FileLocks && all.ExtUnixSk);
        var none = new Migration.Engine.Criu.Rpc.CriuOpts();
        CriuFlags.None.ApplyTo(none);
        Assert.False(none.HasTcpEstablished || none.HasShellJob || none.HasFileLocks || none.HasExtUnixSk);
    }

    [Fact]
    public void NamesRoundTrip_InTheTablesOrder_Deduplicated()
    {
        var flags = CriuFlags.FromNames(["file-locks", "tcp-established", "file-locks"]);
        Assert.Equal(["tcp-established", "file-locks"], flags.Names);
        Assert.Equal(flags, CriuFlags.FromNames(flags.Names));
        Assert.True(flags.TcpEstablished);
        Assert.False(flags.ExtUnixSk);
        Assert.Equal("--tcp-established --file-locks", flags.ToString());
        Assert.Equal("none", CriuFlags.None.ToString());
    }

    [Fact]
    public void UnknownNamesAreRefused_AndTheKnownOnesListed()
    {
        var ex = Assert.Throws<ArgumentException>(() => CriuFlags.FromNames(["tcp-established", "leave-running", new string('x', 500)]));
        Assert.Contains("'leave-running'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("known: tcp-established, shell-job, file-locks, ext-unix-sk", ex.Message, StringComparison.Ordinal);
        Assert.True(ex.Message.Length < 400, "a hostile name is clipped");
    }

    [Fact]
    public void UnknownNamesAreShownWithoutTheirControlCharacters()
    {
        var ex = Assert.Throws<ArgumentException>(() => CriuFlags.FromNames(["evil\u001b[2J\nname"]));
        Assert.Contains("'evil?[2J?name'", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\u001b', ex.Message);
    }

    [Fact]
    public void MoreNamesThanAnyoneSetsAreRefused()
    {
        Assert.Equal(["tcp-established"], CriuFlags.FromNames(Enumerable.Repeat("tcp-established", CriuFlags.MaxNames)).Names);
        var ex = Assert.Throws<ArgumentException>(() => CriuFlags.FromNames(Enumerable.Repeat("tcp-established", 1_000_000)));
        Assert.Contains("more than 64", ex.Message, StringComparison.Ordinal);
    }
}

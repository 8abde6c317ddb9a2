using Xunit;

namespace Migration.Source.Tests;

public class CommitGateTests
{
    [Fact]
    public void ACancelBeforeTheCommitWins_AndTheCutoverMayNotPass()
    {
        var gate = new CommitGate();
        using var cts = new CancellationTokenSource();
        Assert.True(gate.TryCancel(cts));
        Assert.True(cts.IsCancellationRequested);
        Assert.False(gate.TryPassCommit());
        Assert.True(gate.Cancelled);
        Assert.False(gate.Committing);
    }

    [Fact]
    public void ACancelAfterTheCutoverPassedIsRefused_AndCancelsNothing()
    {
        var gate = new CommitGate();
        using var cts = new CancellationTokenSource();
        Assert.True(gate.TryPassCommit());
        Assert.False(gate.TryCancel(cts));
        Assert.False(cts.IsCancellationRequested);
        Assert.True(gate.Committing);
    }

    [Fact]
    public void ACancelWhileFrozenLeavesTheTokenAlone_AndStopsTheCommit()
    {
        var gate = new CommitGate();
        using var cts = new CancellationTokenSource();
        Assert.True(gate.TryEnterFreeze());
        Assert.True(gate.TryCancel(cts));
        Assert.False(cts.IsCancellationRequested); // CRIU's dump is not cut: the cutover refuses post-dump at its next check
        Assert.True(gate.Cancelled);
        Assert.False(gate.TryPassCommit());
    }

    [Fact]
    public void ACancelBeforeTheFreezeKeepsTheTreeFromBeingFrozen()
    {
        var gate = new CommitGate();
        using var cts = new CancellationTokenSource();
        Assert.True(gate.TryCancel(cts));
        Assert.False(gate.TryEnterFreeze());
    }

    [Fact]
    public void RacingCancelsAndCommitsNeverBothWin()
    {
        for (int i = 0; i < 2000; i++)
        {
            var gate = new CommitGate();
            using var cts = new CancellationTokenSource();
            bool cancelled = false, committed = false;
            Parallel.Invoke(() => cancelled = gate.TryCancel(cts), () => committed = gate.TryPassCommit());
            Assert.True(cancelled ^ committed, $"round {i}: cancelled={cancelled}, committed={committed}");
        }
    }
}

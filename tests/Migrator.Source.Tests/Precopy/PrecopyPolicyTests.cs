using Migration.Source.Precopy;
using Xunit;

namespace Migration.Source.Tests.Precopy;

public class PrecopyPolicyTests
{
    private const double MiBps = 1 << 20;
    private readonly PrecopyPolicy _policy = new();

    [Fact]
    public void Defaults_AreThoseTheCliDocuments()
    {
        Assert.Equal(8, _policy.MaxIterations);
        Assert.Equal(TimeSpan.FromMilliseconds(100), _policy.MaxDowntime);
        Assert.Equal(64, _policy.SmallDirtyPages);
        Assert.True(_policy.AutoConverge);
    }

    [Fact]
    public void Throttle_StartsAt20_RisesBy10_EndsAt99_ThenNoHigher()
    {
        var levels = new List<int>();
        for (int? l = _policy.NextThrottle(0); l is int level; l = _policy.NextThrottle(level))
        {
            levels.Add(level);
        }

        Assert.Equal([20, 30, 40, 50, 60, 70, 80, 90, 99], levels);
        Assert.Equal(5, new PrecopyPolicy { ThrottleInitial = 5, ThrottleIncrement = 0 }.NextThrottle(0));
        Assert.Equal(6, new PrecopyPolicy { ThrottleInitial = 5, ThrottleIncrement = 0 }.NextThrottle(5)); // never stuck
    }

    [Fact]
    public void Fits_IsWhatTheBudgetRuleSays()
    {
        Assert.True(_policy.Fits(64, 0));
        Assert.False(_policy.Fits(65, 0)); // no rate measured: never fits
        Assert.True(_policy.Fits(2560, 100 * MiBps));
        Assert.False(_policy.Fits(2561, 100 * MiBps));
    }

    [Fact]
    public void SmallDirtySet_Stops()
    {
        Assert.Contains("64 pages (<= 64)", _policy.StopReason(0, 64, 0, 0), StringComparison.Ordinal);
    }

    [Fact]
    public void DirtySetThatFitsTheBudget_Stops_AndOneThatDoesNot_GoesOn()
    {
        // 100 MiB/s: 2560 pages (10 MiB) take 100 ms, 2561 take longer.
        Assert.Contains("budget 100 ms", _policy.StopReason(1, 2560, 5000, 100 * MiBps), StringComparison.Ordinal);
        Assert.Null(_policy.StopReason(1, 2561, 5000, 100 * MiBps));
    }

    [Fact]
    public void NoMeasuredRate_NeverFitsTheBudget()
    {
        Assert.Null(_policy.StopReason(1, 1000, 2000, 0));
    }

    [Fact]
    public void GrowingDirtySet_Stops()
    {
        // 10% growth is tolerated, more is not.
        Assert.Null(_policy.StopReason(2, 11000, 10000, 1 * MiBps));
        Assert.Contains("grew from 10000 to 11001", _policy.StopReason(2, 11001, 10000, 1 * MiBps), StringComparison.Ordinal);
    }

    [Fact]
    public void IterationLimit_Stops()
    {
        var policy = new PrecopyPolicy { MaxIterations = 3 };
        Assert.Null(policy.StopReason(1, 100000, 200000, 1 * MiBps));
        Assert.Contains("iteration limit (3)", policy.StopReason(2, 100000, 200000, 1 * MiBps), StringComparison.Ordinal);
    }
}

using Migration.Fuzz.Harness;
using Migration.Fuzz.Targets;
using Xunit;

namespace Migration.Fuzz;

/// <summary>
/// The short run of the fuzzer in the test suite: 10^4 inputs per decoder (MIGRATE_FUZZ_ITERATIONS asks for more), a few
/// seconds in all. Fails on any crash (an exception other than the decoder's rejection), hang (an input over 1 s) or
/// input that allocated beyond its budget. scripts/fuzz.sh runs the long one.
/// </summary>
public class FuzzTests
{
    private static readonly long Iterations =
        long.TryParse(Environment.GetEnvironmentVariable("MIGRATE_FUZZ_ITERATIONS"), out long n) && n > 0 ? n : 10_000;

    public static TheoryData<string> Targets() => [.. FuzzTargets.Names];

    [Theory]
    [MemberData(nameof(Targets))]
    public async Task MalformedInputs_AreRefused_WithoutCrashHangOrUnboundedAllocation(string name)
    {
        using var target = FuzzTargets.Create(name);

        var report = await FuzzRunner.RunAsync(target, Iterations, seed: 1);

        Assert.True(report.Clean, $"{report.Crashes} crashes, {report.Hangs} hangs, {report.OverBudget} over budget:\n" + string.Join("\n", report.Failures));
        // The mutations get past the first checks (some inputs are still valid) and are refused (most are not).
        Assert.True(report.Accepted > Iterations / 200, $"{report.Accepted} of {Iterations} accepted");
        Assert.True(report.Rejected > Iterations / 2, $"{report.Rejected} of {Iterations} rejected");
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public async Task EverySeed_IsAccepted(string name)
    {
        using var target = FuzzTargets.Create(name);

        foreach (var seed in target.Seeds)
        {
            Assert.Equal(FuzzOutcome.Accepted, await target.RunAsync((byte[])seed.Bytes.Clone()));
        }
    }

    [Fact]
    public void SameSeed_SameInputs()
    {
        using var target = FuzzTargets.Create("page-frame");

        for (long i = 0; i < 100; i++)
        {
            Assert.Equal(FuzzRunner.Input(target, 7, i), FuzzRunner.Input(target, 7, i));
        }

        Assert.NotEqual(FuzzRunner.Input(target, 7, 1), FuzzRunner.Input(target, 8, 1));
    }
}

using Migration.Engine.Criu;
using Migration.Engine.Network;
using Migration.Source.Agent;
using Migration.Source.Events;
using Migration.Source.Precopy;
using Xunit;
using Wire = Migration.Control.V1;

namespace Migration.Source.Tests.Agent;

public class MigrationWireTests
{
    private static readonly SourceMigrationOptions s_local = new() { WorkRoot = "/agent/outgoing", AddressHook = "/agent/hook" };

    [Fact]
    public void EmptyOptionsAreMigratesDefaults_AndTheLocalSettingsStay()
    {
        var (options, compress) = MigrationWire.FromWire(new Wire.MigrationOptions(), s_local);
        Assert.Equal(s_local, options with { MoveAddresses = s_local.MoveAddresses }); // a list compares by reference
        Assert.Empty(options.MoveAddresses);
        Assert.Equal("auto", compress);
    }

    [Fact]
    public void OptionsSurviveTheWireBothWays()
    {
        var sent = s_local with
        {
            Mode = "cold",
            FinalDump = "full",
            LazyRestore = false,
            Criu = CriuFlags.FromNames(["tcp-established", "file-locks"]),
            MoveAddresses = [ServiceAddress.Parse("10.0.0.100/24")],
            CutoverTimeout = TimeSpan.FromSeconds(30),
            DryRun = true,
            KeepImages = true,
            Precopy = new PrecopyPolicy { MaxIterations = 3, MaxDowntime = TimeSpan.FromMilliseconds(250), AutoConverge = false },
        };
        var (got, compress) = MigrationWire.FromWire(MigrationWire.ToWire(sent, "never"), s_local);
        Assert.Equal("never", compress);
        Assert.Equal(sent with { MoveAddresses = got.MoveAddresses }, got);
        Assert.Equal(["10.0.0.100/24"], got.MoveAddresses.Select(a => a.ToString()));
    }

    [Theory]
    [InlineData("mode", "warm")]
    [InlineData("final_dump", "lazy\n")]
    [InlineData("compress", "sometimes")]
    [InlineData("max_iterations", "1001")]
    [InlineData("max_downtime_ms", "600001")]
    [InlineData("timeout_seconds", "86401")]
    [InlineData("criu_flags", "leave-running")]
    [InlineData("move_addresses", "not-an-address")]
    public void UnknownOrOutOfBoundsValuesAreRefusedByName(string field, string value)
    {
        var w = new Wire.MigrationOptions();
        switch (field)
        {
            case "mode": w.Mode = value; break;
            case "final_dump": w.FinalDump = value; break;
            case "compress": w.Compress = value; break;
            case "max_iterations": w.MaxIterations = uint.Parse(value, System.Globalization.CultureInfo.InvariantCulture); break;
            case "max_downtime_ms": w.MaxDowntimeMs = uint.Parse(value, System.Globalization.CultureInfo.InvariantCulture); break;
            case "timeout_seconds": w.TimeoutSeconds = uint.Parse(value, System.Globalization.CultureInfo.InvariantCulture); break;
            case "criu_flags": w.CriuFlags.Add(value); break;
            default: w.MoveAddresses.Add(value); break;
        }

        var ex = Assert.Throws<ArgumentException>(() => MigrationWire.FromWire(w, s_local));
        Assert.Contains(field == "criu_flags" ? "leave-running" : field, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\n", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TooManyAddressesAreRefused()
    {
        var w = new Wire.MigrationOptions();
        w.MoveAddresses.AddRange(Enumerable.Range(1, MigrationWire.MaxAddresses + 1).Select(i => $"10.0.0.{i}/24"));
        Assert.Throws<ArgumentException>(() => MigrationWire.FromWire(w, s_local));
    }

    [Fact]
    public void AnIterationEventCarriesItsNumbersAndTheEstimate()
    {
        var at = new DateTimeOffset(2026, 12, 7, 23, 0, 0, TimeSpan.Zero).AddTicks(15);
        var e = new MigrationEvent(MigrationEventKind.Iteration, MigrationPhase.Precopy, at, "iteration 2")
        {
            Iteration = new PrecopyIteration(2, 1000, 5000, 256, TimeSpan.FromMilliseconds(40), 1 << 20, ThrottlePercent: 30),
            EstimatedRemaining = TimeSpan.FromMilliseconds(1000),
            StopReason = null,
        };
        var w = MigrationWire.ToWire(e, 7);
        Assert.Equal((7UL, "iteration", "precopy"), (w.Seq, w.Kind, w.Phase));
        Assert.Equal((at - DateTimeOffset.UnixEpoch).Ticks / 10, w.AtUnixMicros);
        Assert.Equal((2U, 1000UL, 5000UL, 256UL, 40UL, 1000UL, 30U, ""),
            (w.Iteration.Index, w.Iteration.PagesSent, w.Iteration.WireBytes, w.Iteration.DirtyPages, w.Iteration.Ms, w.Iteration.EstimatedRemainingMs, w.Iteration.ThrottlePercent, w.Iteration.StopReason));
        Assert.Null(w.Outcome);
        Assert.Equal("final-round", MigrationWire.PhaseName(MigrationPhase.FinalRound));
    }

    [Fact]
    public void AFailureOutcomeSaysWhereTheWorkloadIsAndTheExitCode()
    {
        var failure = new MigrationException(MigrationPhase.Commit, WorkloadOutcome.Lost, "lost");
        var w = MigrationWire.ToWire(MigrationOutcome.Of(failure));
        Assert.Equal((false, "lost", 4, "commit", "lost", false), (w.Succeeded, w.Workload, w.ExitCode, w.FailedPhase, w.Error, w.Cancelled));
        Assert.Equal(1, MigrationOutcome.Of(new MigrationException(MigrationPhase.Dump, WorkloadOutcome.ResumedOnSource, "x")).ExitCode);
        Assert.Equal(3, MigrationOutcome.ExitCodeOf(WorkloadOutcome.OnTargetUnconfirmed));
    }
}

using Migration.Source.Events;
using Migration.Source.Precopy;
using Xunit;

namespace Migration.Source.Tests.Events;

public class MigrationEventsTests
{
    /// <summary>A clock the test moves by hand.</summary>
    private sealed class ManualClock : TimeProvider
    {
        private long _ticks;

        public DateTimeOffset Start { get; } = new(2026, 12, 7, 23, 0, 0, TimeSpan.Zero);

        public void Advance(TimeSpan by) => _ticks += by.Ticks;

        public override DateTimeOffset GetUtcNow() => Start.AddTicks(_ticks);

        public override long GetTimestamp() => _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    }

    private sealed class Recorder : IProgress<MigrationEvent>
    {
        public List<MigrationEvent> Events { get; } = [];

        public void Report(MigrationEvent value) => Events.Add(value);
    }

    [Fact]
    public void PhasesAreStampedAndTimed_AndTheOutcomeNamesTheFailedPhase()
    {
        var clock = new ManualClock();
        var sink = new Recorder();
        var events = new MigrationEvents(sink, clock);

        events.Started(MigrationPhase.Preflight, "checking");
        clock.Advance(TimeSpan.FromMilliseconds(250));
        events.Ended(MigrationPhase.Preflight);
        events.Started(MigrationPhase.Begin);
        clock.Advance(TimeSpan.FromMilliseconds(40));
        events.Ended(MigrationPhase.Begin, "begun", targetMigrationId: "t-1");
        events.Started(MigrationPhase.Precopy);
        events.Outcome(MigrationOutcome.Of(new MigrationException(MigrationPhase.Precopy, WorkloadOutcome.Untouched, "no")));

        Assert.Equal(MigrationPhase.Precopy, events.Current);
        Assert.True(events.HasStarted(MigrationPhase.Begin));
        Assert.False(events.HasStarted(MigrationPhase.Dump));
        Assert.Equal(TimeSpan.FromMilliseconds(250), sink.Events[1].Elapsed);
        Assert.Equal(clock.Start.AddMilliseconds(250), sink.Events[1].At);
        Assert.Equal(TimeSpan.FromMilliseconds(40), sink.Events[3].Elapsed);
        Assert.Equal("t-1", sink.Events[3].TargetMigrationId);
        var outcome = sink.Events[^1];
        Assert.Equal((MigrationEventKind.Outcome, MigrationPhase.Precopy), (outcome.Kind, outcome.Phase));
        Assert.Equal(("untouched", 1), (outcome.Outcome!.Workload, outcome.Outcome.ExitCode));
    }

    [Fact]
    public void AnIterationEstimatesWhatAFreezeNowWouldMove()
    {
        var sink = new Recorder();
        var events = new MigrationEvents(sink, new ManualClock());
        // 256 dirty pages (1 MiB) at 4 MiB/s: a quarter of a second.
        events.Iteration(new PrecopyIteration(3, 1000, 4096, 256, TimeSpan.FromMilliseconds(100), 4 << 20), "dirty set fits");

        var e = Assert.Single(sink.Events);
        Assert.Equal(TimeSpan.FromMilliseconds(250), e.EstimatedRemaining);
        Assert.Equal("dirty set fits", e.StopReason);
        Assert.StartsWith("iteration 3: sent 1000 pages", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AReporterThatThrowsDoesNotStopTheMigration()
    {
        var events = new MigrationEvents(new Progress(), TimeProvider.System);
        events.Started(MigrationPhase.Preflight);
        events.Note(MigrationPhase.Preflight, "still here");
        Assert.Equal(MigrationPhase.Preflight, events.Current);
    }

    private sealed class Progress : IProgress<MigrationEvent>
    {
        public void Report(MigrationEvent value) => throw new IOException("stderr closed");
    }
}

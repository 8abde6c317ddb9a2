using Migration.Source.Events;
using Migration.Source.Precopy;
using Xunit;

namespace Migration.Source.Tests.Events;

public class MigrationEventLogTests
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(10);
    private static readonly DateTimeOffset s_at = new(2026, 12, 7, 23, 0, 0, TimeSpan.Zero);

    private static MigrationEvent Started(MigrationPhase p) => new(MigrationEventKind.PhaseStarted, p, s_at, "");

    private static MigrationEvent Ended(MigrationPhase p) => new(MigrationEventKind.PhaseEnded, p, s_at, "");

    private static MigrationEvent Note(string text) => new(MigrationEventKind.Note, MigrationPhase.Precopy, s_at, text);

    private static MigrationEvent Iteration(int i) => new(MigrationEventKind.Iteration, MigrationPhase.Precopy, s_at, $"iteration {i}")
    {
        Iteration = new PrecopyIteration(i, 10, 100, 5, TimeSpan.FromMilliseconds(1), 4096),
    };

    private static MigrationEvent Outcome() => new(MigrationEventKind.Outcome, MigrationPhase.Commit, s_at, "done")
    {
        Outcome = new MigrationOutcome { Succeeded = true, Workload = "running-on-target", ExitCode = 0 },
    };

    private static async Task<List<(long Seq, MigrationEvent Event)>> ReadAllAsync(MigrationEventLog log)
    {
        var got = new List<(long, MigrationEvent)>();
        using var cts = new CancellationTokenSource(s_timeout);
        await foreach (var e in log.ReadAllAsync(cts.Token))
        {
            got.Add(e);
        }

        return got;
    }

    [Fact]
    public async Task ALateReaderGetsTheWholeHistoryThenTheLiveEvents_AndItsStreamEndsAfterTheOutcome()
    {
        var log = new MigrationEventLog();
        log.Report(Started(MigrationPhase.Preflight));
        log.Report(Ended(MigrationPhase.Preflight));

        var early = ReadAllAsync(log); // reading live from here
        log.Report(Started(MigrationPhase.Precopy));
        var late = ReadAllAsync(log); // joins mid-way
        log.Report(Iteration(0));
        log.Report(Ended(MigrationPhase.Precopy));
        log.Report(Outcome());
        var afterwards = ReadAllAsync(log); // after the end: the history, then the end

        foreach (var reader in new[] { early, late, afterwards })
        {
            var got = await reader.WaitAsync(s_timeout);
            Assert.Equal([0L, 1, 2, 3, 4, 5], got.Select(e => e.Seq));
            Assert.Equal(
                [MigrationEventKind.PhaseStarted, MigrationEventKind.PhaseEnded, MigrationEventKind.PhaseStarted, MigrationEventKind.Iteration, MigrationEventKind.PhaseEnded, MigrationEventKind.Outcome],
                got.Select(e => e.Event.Kind));
        }
    }

    [Fact]
    public async Task EventsAfterTheOutcomeAreIgnored()
    {
        var log = new MigrationEventLog();
        log.Report(Outcome());
        log.Report(Note("too late"));
        Assert.Equal(1, log.Count);
        Assert.True(log.Outcome!.Succeeded);
        Assert.Single(await ReadAllAsync(log));
    }

    [Fact]
    public async Task AFullLogDropsNotesAndIterationsButKeepsEveryPhaseAndTheOutcome()
    {
        var log = new MigrationEventLog(maxEvents: 3);
        log.Report(Started(MigrationPhase.Precopy));
        for (int i = 0; i < 10; i++)
        {
            log.Report(Iteration(i));
        }

        log.Report(Ended(MigrationPhase.Precopy));
        log.Report(Started(MigrationPhase.Dump));
        log.Report(Outcome());

        Assert.Equal(8, log.Dropped);
        var got = await ReadAllAsync(log);
        Assert.Equal(
            [MigrationEventKind.PhaseStarted, MigrationEventKind.Iteration, MigrationEventKind.Iteration, MigrationEventKind.PhaseEnded, MigrationEventKind.PhaseStarted, MigrationEventKind.Outcome],
            got.Select(e => e.Event.Kind));
        Assert.Equal(MigrationPhase.Dump, log.Phase);
    }

    [Fact]
    public async Task CancellingAReaderEndsThatReaderOnly()
    {
        var log = new MigrationEventLog();
        log.Report(Started(MigrationPhase.Preflight));
        using var cts = new CancellationTokenSource();
        var seen = new List<long>();
        var reading = Task.Run(async () =>
        {
            await foreach (var (seq, _) in log.ReadAllAsync(cts.Token))
            {
                seen.Add(seq);
                cts.Cancel();
            }
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reading.WaitAsync(s_timeout));
        Assert.Equal([0L], seen);

        log.Report(Outcome());
        Assert.Equal(2, (await ReadAllAsync(log)).Count);
    }

    [Fact]
    public async Task ManyConcurrentReadersSeeEveryEventOnceAndInOrder()
    {
        var log = new MigrationEventLog();
        var readers = Enumerable.Range(0, 8).Select(_ => Task.Run(() => ReadAllAsync(log))).ToArray();
        var writer = Task.Run(() =>
        {
            for (int i = 0; i < 500; i++)
            {
                log.Report(Note($"note {i}"));
            }

            log.Report(Outcome());
        });
        await writer.WaitAsync(s_timeout);
        foreach (var r in readers)
        {
            var got = await r.WaitAsync(s_timeout);
            Assert.Equal(Enumerable.Range(0, 501).Select(i => (long)i), got.Select(e => e.Seq));
        }
    }
}

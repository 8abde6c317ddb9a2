using Migration.Source.Precopy;

namespace Migration.Source.Events;

/// <summary>
/// How the source role reports its events: stamps each with the injected clock, times each phase from its start to
/// its end, and remembers the phase under way (a failure or a cancellation names it). One per migration.
/// </summary>
internal sealed class MigrationEvents(IProgress<MigrationEvent>? sink, TimeProvider time)
{
    private const int PageSize = 4096;

    private readonly Dictionary<MigrationPhase, long> _started = [];

    /// <summary>The phase most recently started (Preflight before any).</summary>
    public MigrationPhase Current { get; private set; } = MigrationPhase.Preflight;

    public bool HasStarted(MigrationPhase phase) => _started.ContainsKey(phase);

    public void Started(MigrationPhase phase, string message = "")
    {
        Current = phase;
        _started[phase] = time.GetTimestamp();
        Report(new MigrationEvent(MigrationEventKind.PhaseStarted, phase, time.GetUtcNow(), message));
    }

    public void Ended(MigrationPhase phase, string message = "", string? targetMigrationId = null) =>
        Report(new MigrationEvent(MigrationEventKind.PhaseEnded, phase, time.GetUtcNow(), message)
        {
            Elapsed = _started.TryGetValue(phase, out long at) ? time.GetElapsedTime(at) : null,
            TargetMigrationId = targetMigrationId,
        });

    public void Note(MigrationPhase phase, string message) =>
        Report(new MigrationEvent(MigrationEventKind.Note, phase, time.GetUtcNow(), message));

    /// <summary>A pre-copy iteration: its line as the CLI shows it, and the estimate of what a freeze now would move.</summary>
    public void Iteration(PrecopyIteration it, string? stop) =>
        Report(new MigrationEvent(MigrationEventKind.Iteration, MigrationPhase.Precopy, time.GetUtcNow(),
            $"iteration {it.Index}: sent {it.PagesSent} pages ({it.PagesSent * PageSize / 1048576.0:0.0} MiB, {it.BytesOnWire / 1048576.0:0.0} MiB on the wire) in {it.Elapsed.TotalMilliseconds:0} ms, " +
            $"{it.BytesPerSecond / 1048576:0} MiB/s of non-zero pages; {it.DirtyPagesFound} pages dirty" +
            (it.ThrottlePercent > 0 ? $"; throttled {it.ThrottlePercent}%" : "") + (stop is null ? "" : $"; stopping: {stop}"))
        {
            Iteration = it,
            EstimatedRemaining = TimeSpan.FromSeconds(it.DirtyPagesFound * (double)PageSize / Math.Max(it.BytesPerSecond, 1)),
            StopReason = stop,
        });

    public void Outcome(MigrationOutcome outcome) =>
        Report(new MigrationEvent(MigrationEventKind.Outcome, outcome.FailedPhase ?? Current, time.GetUtcNow(),
            outcome.Succeeded ? $"workload {outcome.Workload}" : $"failed in {(outcome.FailedPhase ?? Current).ToString().ToLowerInvariant()}: {outcome.Error}")
        {
            Outcome = outcome,
        });

    private void Report(MigrationEvent e)
    {
        try
        {
            sink?.Report(e);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A reporter's failure (a closed stderr, a bug in a watcher) must not decide the migration: the workload's
            // one live copy depends on the cutover finishing its own way. The event is lost to that reporter only.
        }
    }
}

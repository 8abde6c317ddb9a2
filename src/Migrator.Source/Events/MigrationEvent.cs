using Migration.Source.Precopy;

namespace Migration.Source.Events;

/// <summary>What a <see cref="MigrationEvent"/> says.</summary>
public enum MigrationEventKind
{
    /// <summary>A phase began (<see cref="MigrationEvent.Phase"/>).</summary>
    PhaseStarted,

    /// <summary>A phase completed; <see cref="MigrationEvent.Elapsed"/> is its duration. A phase that fails has no end: the outcome names it.</summary>
    PhaseEnded,

    /// <summary>One pre-copy iteration, acknowledged by the target (<see cref="MigrationEvent.Iteration"/>).</summary>
    Iteration,

    /// <summary>A line of progress inside a phase (a warning, a fallback, what is being done).</summary>
    Note,

    /// <summary>The last event of a migration: where the workload runs (<see cref="MigrationEvent.Outcome"/>).</summary>
    Outcome,
}

/// <summary>
/// One event of a migration as the source role sees it, in the order they happen: each phase's start and end, every
/// pre-copy iteration, notes, and the outcome last. The source role reports them through
/// <see cref="IProgress{T}"/> (synchronously, on the migration's own flow: a reporter must not block);
/// <see cref="MigrationEventLog"/> keeps them for watchers, the CLI prints them.
/// </summary>
public sealed record MigrationEvent(MigrationEventKind Kind, MigrationPhase Phase, DateTimeOffset At, string Message)
{
    /// <summary><see cref="MigrationEventKind.PhaseEnded"/>: how long the phase took.</summary>
    public TimeSpan? Elapsed { get; init; }

    /// <summary><see cref="MigrationEventKind.Iteration"/>: what the iteration moved and found dirty.</summary>
    public PrecopyIteration? Iteration { get; init; }

    /// <summary><see cref="MigrationEventKind.Iteration"/>: the dirty set left, at the iteration's rate (what a freeze now would take to move).</summary>
    public TimeSpan? EstimatedRemaining { get; init; }

    /// <summary><see cref="MigrationEventKind.Iteration"/>: why pre-copy stops after this iteration (null: it goes on).</summary>
    public string? StopReason { get; init; }

    /// <summary><see cref="MigrationEventKind.PhaseEnded"/> of <see cref="MigrationPhase.Begin"/>: the migration's id on the target.</summary>
    public string? TargetMigrationId { get; init; }

    /// <summary><see cref="MigrationEventKind.Outcome"/>: how it ended.</summary>
    public MigrationOutcome? Outcome { get; init; }

    /// <summary>Phase and outcome events: a bounded history keeps them whatever else it drops.</summary>
    public bool IsMilestone => Kind is MigrationEventKind.PhaseStarted or MigrationEventKind.PhaseEnded or MigrationEventKind.Outcome;
}

namespace Migration.Source;

/// <summary>The phases of a migration, in order; a failure names the one it happened in.</summary>
public enum MigrationPhase
{
    Preflight,
    Begin,
    Precopy,
    Dump,

    /// <summary>
    /// The tree frozen and dumped, the page stream's last round (pre-copy's rest, read from the frozen tree) until the
    /// target acknowledges it. An event phase: a failure in it is reported as <see cref="Transfer"/>, as before it had a name.
    /// </summary>
    FinalRound,
    Transfer,
    Restore,
    Commit,
}

/// <summary>What happened to the workload when a migration failed.</summary>
public enum WorkloadOutcome
{
    /// <summary>Nothing was frozen: the workload never stopped.</summary>
    Untouched,

    /// <summary>The workload was frozen and has resumed on the source.</summary>
    ResumedOnSource,

    /// <summary>The source copy is gone and the target holds the only copy, which could not be confirmed running.</summary>
    OnTargetUnconfirmed,

    /// <summary>
    /// The source copy is gone and the target refused to resume its copy, which it killed: it could not get its memory
    /// (the lazy-pages daemon failed between the restore and the commit). No copy runs.
    /// </summary>
    Lost,
}

/// <summary>A migration that did not complete; says in which phase, why, and where the workload is.</summary>
public sealed class MigrationException(MigrationPhase phase, WorkloadOutcome outcome, string message, Exception? inner = null)
    : Exception(message, inner)
{
    public MigrationPhase Phase { get; } = phase;

    public WorkloadOutcome Outcome { get; } = outcome;
}

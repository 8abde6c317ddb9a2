namespace Migration.Source.Events;

/// <summary>
/// How a migration ended, as the last event says it: where the workload runs, the exit code <c>migrate</c> gives for it,
/// and for a failure its phase and reason. One mapping for the CLI and the agent's API alike.
/// </summary>
public sealed record MigrationOutcome
{
    public required bool Succeeded { get; init; }

    /// <summary>Where the workload is: running-on-target, running-on-source, untouched, on-target-unconfirmed, lost (see <see cref="WorkloadName"/>).</summary>
    public required string Workload { get; init; }

    /// <summary><c>migrate</c>'s exit code for this outcome: 0 migrated (or dry run), 1 failed and the workload runs on the source, 3 unconfirmed, 4 lost.</summary>
    public required int ExitCode { get; init; }

    /// <summary>The phase a failure happened in (null on success).</summary>
    public MigrationPhase? FailedPhase { get; init; }

    public string? Error { get; init; }

    /// <summary>The migration was cancelled by its caller (it then rolled back, or never froze the tree).</summary>
    public bool Cancelled { get; init; }

    /// <summary>What a successful migration did (null on failure).</summary>
    public MigrationResult? Result { get; init; }

    public static MigrationOutcome Of(MigrationResult result) => new()
    {
        Succeeded = true,
        Workload = result.DryRun ? "running-on-source" : "running-on-target",
        ExitCode = 0,
        Result = result,
    };

    public static MigrationOutcome Of(MigrationException failure, bool cancelled = false) => new()
    {
        Succeeded = false,
        Workload = WorkloadName(failure.Outcome),
        ExitCode = ExitCodeOf(failure.Outcome),
        FailedPhase = failure.Phase,
        Error = failure.Message,
        Cancelled = cancelled,
    };

    /// <summary><c>migrate</c>'s exit code for a failure that left the workload so.</summary>
    public static int ExitCodeOf(WorkloadOutcome outcome) => outcome switch
    {
        WorkloadOutcome.OnTargetUnconfirmed => 3,
        WorkloadOutcome.Lost => 4,
        _ => 1,
    };

    /// <summary>The workload's place as <c>migrate --json</c> and the API name it.</summary>
    public static string WorkloadName(WorkloadOutcome outcome) => outcome switch
    {
        WorkloadOutcome.Untouched => "untouched",
        WorkloadOutcome.ResumedOnSource => "running-on-source",
        WorkloadOutcome.Lost => "lost",
        _ => "on-target-unconfirmed",
    };
}

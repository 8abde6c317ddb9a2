using Migration.Engine.Telemetry;

namespace Migration.Source;

/// <summary>What a source migration records in <see cref="MigrationMetrics"/> when it ends.</summary>
internal static class SourceMetrics
{
    public static void Succeeded(MigrationResult result)
    {
        string role = MigrationMetrics.RoleSource;
        MigrationMetrics.RecordFinished(role, result.Mode, result.DryRun ? "dry_run" : "succeeded", "done", result.Total);
        if (!result.DryRun)
        {
            MigrationMetrics.RecordDowntime(result.Mode, result.Frozen);
        }

        MigrationMetrics.RecordIterations(result.Mode, result.Iterations.Count);
        ulong pageWire = 0;
        if (result.Pages is { } pages)
        {
            MigrationMetrics.RecordPages(role, pages.Pages, pages.ZeroPages, pages.WireBytes);
            pageWire = pages.WireBytes;
        }

        MigrationMetrics.RecordImageBytes(role, result.BytesSent > pageWire ? result.BytesSent - pageWire : 0);
    }

    /// <summary>A failed migration; a cancelled one that rolled back (or never froze) counts as <c>cancelled</c>.</summary>
    public static void Failed(string mode, MigrationException ex, bool cancelled, TimeSpan took) =>
        MigrationMetrics.RecordFinished(MigrationMetrics.RoleSource, mode,
            cancelled && ex.Outcome is WorkloadOutcome.Untouched or WorkloadOutcome.ResumedOnSource ? "cancelled" : Outcome(ex.Outcome), Phase(ex.Phase), took);

    /// <summary>The outcome label of a failure: where the workload is.</summary>
    public static string Outcome(WorkloadOutcome outcome) => outcome switch
    {
        WorkloadOutcome.Untouched => "failed",
        WorkloadOutcome.ResumedOnSource => "rolled_back",
        WorkloadOutcome.OnTargetUnconfirmed => "unconfirmed",
        WorkloadOutcome.Lost => "lost",
        _ => "failed",
    };

    public static string Phase(MigrationPhase phase) => phase.ToString().ToLowerInvariant();
}

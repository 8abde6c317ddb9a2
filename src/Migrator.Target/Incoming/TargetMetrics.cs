using System.Diagnostics;
using Migration.Engine.Telemetry;
using Migration.PageServer.Store;

namespace Migration.Target.Incoming;

/// <summary>What the target role records in <see cref="MigrationMetrics"/>: each received migration's state changes.</summary>
internal static class TargetMetrics
{
    private const string Role = MigrationMetrics.RoleTarget;

    /// <summary>The agent's gauges: migrations in progress here and restored copies waiting for their commit decision.</summary>
    public static void Observe(TargetAgent agent) =>
        MigrationMetrics.ObserveState(Role,
            () => agent.Migrations.Count(m => m.State is IncomingState.Receiving or IncomingState.Restoring or IncomingState.Restored),
            () => agent.Migrations.Count(m => m.State == IncomingState.Restored));

    /// <summary>Counts <paramref name="m"/> as begun and records how it ends.</summary>
    public static void Track(IncomingMigration m)
    {
        string mode = m.Mode;
        long started = Stopwatch.GetTimestamp();
        MigrationMetrics.RecordStarted(Role, mode);
        m.StateChanged += (was, now) =>
        {
            string? outcome = now switch
            {
                IncomingState.Committed => "succeeded",
                IncomingState.Aborted => "aborted",
                IncomingState.Failed when was != IncomingState.Committed => "failed",
                IncomingState.Failed => "lost",
                _ => null,
            };
            if (outcome is null)
            {
                return;
            }

            string phase = was == IncomingState.Committed ? "lazy_fill" : was.ToString().ToLowerInvariant();
            MigrationMetrics.RecordFinished(Role, mode, outcome, phase, Stopwatch.GetElapsedTime(started));
            if (was != IncomingState.Committed && m.Pages is PageStoreAttachment { Claimed: true } pages)
            {
                var p = pages.Progress.Snapshot();
                MigrationMetrics.RecordPages(Role, p.Pages, p.ZeroPages, p.WireBytes);
            }

            if (was != IncomingState.Committed)
            {
                MigrationMetrics.RecordImageBytes(Role, m.BytesReceived);
            }
        };
    }

    /// <summary>The lazy fill after <paramref name="m"/>'s resume ended (filled or failed): the pages it put in.</summary>
    public static void LazyFillEnded(IncomingMigration m) => MigrationMetrics.RecordLazyPages(m.LazyFill?.PagesFilled ?? 0);

    public static void Restored(IncomingMigration m, long startedTimestamp) =>
        MigrationMetrics.RecordRestore(m.Mode, Stopwatch.GetElapsedTime(startedTimestamp));
}

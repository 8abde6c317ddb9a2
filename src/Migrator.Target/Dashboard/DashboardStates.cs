using Migration.PageServer.Store;
using Migration.Source.Events;
using Migration.Target.Incoming;
using Migration.Target.Outgoing;

namespace Migration.Target.Dashboard;

/// <summary>The host's migrations as the dashboard shows them, read from the agent's own state at each call.</summary>
internal static class DashboardStates
{
    /// <summary>Migrations kept on the dashboard, newest first.</summary>
    public const int MaxShown = 50;

    public static DashboardState Of(TargetAgent agent, OutgoingMigrations? outgoing, bool canCancel)
    {
        var all = (outgoing?.List() ?? []).Select(Outgoing).Concat(agent.Migrations.Select(Incoming))
            .OrderByDescending(m => m.StartedAt).Take(MaxShown).ToArray();
        return new DashboardState(Environment.MachineName, TargetAgent.Version, DateTimeOffset.UtcNow, canCancel, all);
    }

    /// <summary>Notes shown per migration (the last ones).</summary>
    private const int NotesShown = 8;

    /// <summary>A migration this agent runs as its source: from its event log (phases, iterations, notes, outcome).</summary>
    public static DashboardMigration Outgoing(OutgoingMigration m)
    {
        var events = m.Events.Snapshot();
        var phases = new List<DashboardPhase>();
        var open = new Dictionary<Source.MigrationPhase, int>();
        var iterations = new List<DashboardIteration>();
        var notes = new List<string>();
        foreach (var e in events)
        {
            switch (e.Kind)
            {
                case MigrationEventKind.PhaseStarted:
                    open[e.Phase] = phases.Count;
                    phases.Add(new DashboardPhase(Name(e.Phase), e.At, null));
                    break;
                case MigrationEventKind.PhaseEnded when open.Remove(e.Phase, out int k):
                    phases[k] = phases[k] with { End = e.At };
                    break;
                case MigrationEventKind.Iteration when e.Iteration is { } it:
                    iterations.Add(new DashboardIteration(it.Index, (ulong)Math.Max(0, it.PagesSent), (ulong)Math.Max(0, it.DirtyPagesFound),
                        it.Elapsed.TotalMilliseconds, it.BytesPerSecond / (1 << 20), it.ThrottlePercent));
                    break;
                case MigrationEventKind.Note:
                    notes.Add(e.Message);
                    break;
            }
        }

        var outcome = m.Events.Outcome;
        if (outcome is not null)
        {
            // A phase the migration failed in has no end: it ends with the outcome.
            var at = events.Count > 0 ? events[^1].At : m.StartedAt;
            for (int i = 0; i < phases.Count; i++)
            {
                phases[i] = phases[i].End is null ? phases[i] with { End = at } : phases[i];
            }
        }

        var result = outcome?.Result;
        return new DashboardMigration
        {
            Id = m.Id,
            Direction = "outgoing",
            Peer = m.Target.ToString(),
            Pid = m.Pid,
            Mode = result?.Mode ?? "",
            State = m.State,
            Finished = outcome is not null,
            StartedAt = m.StartedAt,
            Phases = phases,
            Iterations = iterations,
            DowntimeMs = result?.Frozen.TotalMilliseconds,
            BytesSent = result?.BytesSent,
            PagesMoved = result?.Pages?.Pages,
            Workload = outcome?.Workload,
            Error = outcome?.Error,
            FailedPhase = outcome?.FailedPhase is { } fp ? Name(fp) : null,
            Notes = notes.TakeLast(NotesShown).ToArray(),
        };
    }

    private static string Name(Source.MigrationPhase phase) => phase.ToString().ToLowerInvariant();

    /// <summary>A migration this agent receives: its states as phases, its page stream's rounds, its lazy fill.</summary>
    public static DashboardMigration Incoming(IncomingMigration m)
    {
        var history = m.History;
        var phases = new List<DashboardPhase>();
        var start = m.BegunAt;
        string name = "receiving";
        foreach (var (state, at) in history)
        {
            phases.Add(new DashboardPhase(name, start, at));
            name = state.ToString().ToLowerInvariant();
            start = at;
        }

        var lazy = m.LazyPagesDone;
        bool finished = m.State is IncomingState.Aborted or IncomingState.Failed
            || (m.State == IncomingState.Committed && (lazy is null || lazy.IsCompleted));
        if (m.State is IncomingState.Receiving or IncomingState.Restoring or IncomingState.Restored)
        {
            phases.Add(new DashboardPhase(name, start, null));
        }
        else if (m.State == IncomingState.Committed && lazy is { IsCompleted: false })
        {
            phases.Add(new DashboardPhase("lazy fill", start, null));
        }

        var progress = m.Pages is PageStoreAttachment { Claimed: true } pages ? pages.Progress.Snapshot() : null;
        int n = 0;
        var rounds = progress?.Rounds.Select(r => new DashboardIteration(n++, r.Pages, 0, r.Ms,
            r.Ms == 0 ? 0 : r.Pages * 4096.0 / (1 << 20) / (r.Ms / 1000.0), 0)).ToArray() ?? [];
        return new DashboardMigration
        {
            Id = m.Id,
            Direction = "incoming",
            Peer = m.SourceHost,
            Pid = m.RestoredPid,
            Mode = m.Mode,
            State = m.State.ToString().ToLowerInvariant(),
            Finished = finished,
            StartedAt = m.BegunAt,
            Phases = phases,
            Iterations = rounds,
            BytesSent = m.BytesReceived + (progress?.WireBytes ?? 0),
            PagesMoved = progress?.Pages,
            LazyFill = lazy is null ? null : new DashboardLazyFill(
                !lazy.IsCompleted ? "filling" : lazy.IsCompletedSuccessfully && lazy.Result ? "filled" : "failed",
                (ulong)Math.Max(0, m.LazyFill?.PagesFilled ?? 0), (ulong)Math.Max(0, m.LazyFill?.LazyPages ?? 0)),
            Workload = m.State switch
            {
                IncomingState.Committed => lazy is { IsCompleted: true } && !(lazy.IsCompletedSuccessfully && lazy.Result) ? "lost" : "running here",
                IncomingState.Aborted or IncomingState.Failed => "not here",
                _ => null,
            },
            Error = m.Error,
        };
    }
}

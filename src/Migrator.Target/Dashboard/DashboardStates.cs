using Migration.PageServer.Store;
using Migration.Target.Incoming;

namespace Migration.Target.Dashboard;

/// <summary>The host's migrations as the dashboard shows them, read from the agent's own state at each call.</summary>
internal static class DashboardStates
{
    /// <summary>Migrations kept on the dashboard, newest first.</summary>
    public const int MaxShown = 50;

    public static DashboardState Of(TargetAgent agent, bool canCancel, Func<IEnumerable<DashboardMigration>>? outgoing = null)
    {
        var all = (outgoing?.Invoke() ?? []).Concat(agent.Migrations.Select(Incoming))
            .OrderByDescending(m => m.StartedAt).Take(MaxShown).ToArray();
        return new DashboardState(Environment.MachineName, TargetAgent.Version, DateTimeOffset.UtcNow, canCancel, all);
    }

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
                !lazy.IsCompleted ? "filling" : lazy.IsCompletedSuccessfully && lazy.Result ? "filled" : "failed", 0, 0),
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

using Migration.Source;
using Migration.Source.Events;
using Endpoint = Migration.Engine.Network.Endpoint;

namespace Migration.Target.Outgoing;

/// <summary>
/// One migration this agent runs as its source: what it was asked, its event history (<see cref="MigrationEventLog"/>),
/// the gate a cancel shares with its cutover, and the task that runs it (owned by <see cref="OutgoingMigrations"/>).
/// </summary>
public sealed class OutgoingMigration : IProgress<MigrationEvent>
{
    /// <summary>Watchers of one migration at once: each holds an HTTP/2 stream; a few operators and scripts, not a crowd.</summary>
    public const int MaxWatchers = 16;

    private int _watchers;
    private string? _targetMigrationId;

    internal OutgoingMigration(string id, int pid, Endpoint target, DateTimeOffset startedAt, int maxEvents)
    {
        Id = id;
        Pid = pid;
        Target = target;
        StartedAt = startedAt;
        Events = new MigrationEventLog(maxEvents);
    }

    public string Id { get; }

    public int Pid { get; }

    public Endpoint Target { get; }

    public DateTimeOffset StartedAt { get; }

    public MigrationEventLog Events { get; }

    public CommitGate Gate { get; } = new();

    /// <summary>
    /// Cancelled by <see cref="CommitGate.TryCancel"/> only. Never disposed: a cancel may come at any time, and a source
    /// without a timer holds nothing to release.
    /// </summary>
    internal CancellationTokenSource Cancellation { get; } = new();

    /// <summary>The run, complete once the outcome is in the log. Set once, when it starts.</summary>
    internal Task Completion { get; set; } = Task.CompletedTask;

    /// <summary>The migration's id on the target, once Begin answered.</summary>
    public string? TargetMigrationId => Volatile.Read(ref _targetMigrationId);

    public bool CancelRequested => Gate.Cancelled;

    /// <summary>running, succeeded, failed or cancelled.</summary>
    public string State => Events.Outcome switch
    {
        null => "running",
        { Succeeded: true } => "succeeded",
        { Cancelled: true } => "cancelled",
        _ => "failed",
    };

    /// <summary>The source role's events: kept in the log; the target's id noted as it comes.</summary>
    public void Report(MigrationEvent value)
    {
        if (value.TargetMigrationId is { } id)
        {
            Volatile.Write(ref _targetMigrationId, id);
        }

        Events.Report(value);
    }

    /// <summary>A watcher's place, released on dispose; null when <see cref="MaxWatchers"/> already watch.</summary>
    internal IDisposable? TryWatch()
    {
        if (Interlocked.Increment(ref _watchers) > MaxWatchers)
        {
            Interlocked.Decrement(ref _watchers);
            return null;
        }

        return new Lease(this);
    }

    private sealed class Lease(OutgoingMigration owner) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                Interlocked.Decrement(ref owner._watchers);
            }
        }
    }
}

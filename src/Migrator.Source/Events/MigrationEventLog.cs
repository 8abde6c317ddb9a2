using System.Runtime.CompilerServices;

namespace Migration.Source.Events;

/// <summary>
/// The events of one migration, kept for its watchers: a watcher that comes late reads the whole history first, then the
/// live events, and its stream ends after the outcome. One append-only list and a cursor per reader: the history and
/// the live part are read the same way, so nothing is missed or repeated between them, and a slow reader holds no
/// buffer of its own.
///
/// Bounded: at most <see cref="MaxEvents"/> events are kept. Past that, notes and iterations are dropped (counted in
/// <see cref="Dropped"/>) while phase and outcome events are always kept; there are at most two per phase and one
/// outcome, so the bound holds. Events after the outcome are ignored.
/// </summary>
public sealed class MigrationEventLog : IProgress<MigrationEvent>
{
    /// <summary>Default bound: a pre-copy of hundreds of iterations fits with its notes; a migration is a few dozen events.</summary>
    public const int DefaultMaxEvents = 1000;

    private readonly Lock _lock = new();
    private readonly List<MigrationEvent> _events = [];
    private TaskCompletionSource _changed = NewSignal();
    private int _dropped;

    public MigrationEventLog(int maxEvents = DefaultMaxEvents)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxEvents, 1);
        MaxEvents = maxEvents;
    }

    public int MaxEvents { get; }

    /// <summary>Events not kept because the log was full (never a phase or the outcome).</summary>
    public int Dropped
    {
        get
        {
            lock (_lock)
            {
                return _dropped;
            }
        }
    }

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _events.Count;
            }
        }
    }

    /// <summary>The outcome, once it is in (then nothing more is).</summary>
    public MigrationOutcome? Outcome { get; private set; }

    /// <summary>The phase most recently started.</summary>
    public MigrationPhase? Phase { get; private set; }

    /// <summary>Appends an event and wakes every reader; the event's sequence number is its index in the log.</summary>
    public void Report(MigrationEvent value)
    {
        ArgumentNullException.ThrowIfNull(value);
        TaskCompletionSource changed;
        lock (_lock)
        {
            if (Outcome is not null)
            {
                return;
            }

            if (_events.Count >= MaxEvents && !value.IsMilestone)
            {
                _dropped++;
                return;
            }

            _events.Add(value);
            if (value.Kind == MigrationEventKind.PhaseStarted)
            {
                Phase = value.Phase;
            }

            if (value.Kind == MigrationEventKind.Outcome)
            {
                Outcome = value.Outcome ?? throw new ArgumentException("an outcome event carries its outcome", nameof(value));
            }

            changed = _changed;
            _changed = NewSignal();
        }

        changed.TrySetResult(); // outside the lock: continuations run asynchronously anyway
    }

    /// <summary>Every event kept so far, oldest first.</summary>
    public IReadOnlyList<MigrationEvent> Snapshot()
    {
        lock (_lock)
        {
            return _events.ToArray();
        }
    }

    /// <summary>
    /// The history from the first event, then each live event as it comes; ends after the outcome. Cancelling
    /// <paramref name="ct"/> ends the reading (OperationCanceledException), not the migration.
    /// </summary>
    public async IAsyncEnumerable<(long Seq, MigrationEvent Event)> ReadAllAsync([EnumeratorCancellation] CancellationToken ct)
    {
        int next = 0;
        while (true)
        {
            MigrationEvent[] batch;
            Task wait;
            bool done;
            lock (_lock)
            {
                batch = next < _events.Count ? _events.GetRange(next, _events.Count - next).ToArray() : [];
                done = Outcome is not null;
                wait = _changed.Task;
            }

            foreach (var e in batch)
            {
                yield return (next++, e);
            }

            if (done)
            {
                yield break; // the outcome was in the batch just read: nothing follows it
            }

            if (batch.Length == 0)
            {
                await wait.WaitAsync(ct).ConfigureAwait(false);
            }
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}

namespace Migration.Source;

/// <summary>
/// The migration's point of no return, shared by the cutover and whoever may cancel it. The cutover passes it just
/// before it stops the source copy for good (SIGKILL to the frozen tree, CRIU's post-dump acknowledged); a cancel
/// before that wins and the cutover rolls back to the source instead; a cancel after it is refused. Both are decided
/// under one lock, so a cancel never races a commit into "cancelled" and "migrated" at once.
/// </summary>
public sealed class CommitGate
{
    private readonly Lock _lock = new();
    private State _state;

    private enum State
    {
        Open,
        Committing,
        Cancelled,
    }

    /// <summary>The cutover passed the gate: the source copy is being stopped, the target's resumed.</summary>
    public bool Committing
    {
        get
        {
            lock (_lock)
            {
                return _state == State.Committing;
            }
        }
    }

    public bool Cancelled
    {
        get
        {
            lock (_lock)
            {
                return _state == State.Cancelled;
            }
        }
    }

    /// <summary>The cutover's side: true to go on and commit, false when a cancel came first (then it must roll back).</summary>
    public bool TryPassCommit()
    {
        lock (_lock)
        {
            if (_state == State.Cancelled)
            {
                return false;
            }

            _state = State.Committing;
            return true;
        }
    }

    /// <summary>The canceller's side: true when the migration will not commit (cancel <paramref name="cts"/>, it rolls back); false when it is too late.</summary>
    public bool TryCancel(CancellationTokenSource cts)
    {
        ArgumentNullException.ThrowIfNull(cts);
        lock (_lock)
        {
            if (_state == State.Committing)
            {
                return false;
            }

            _state = State.Cancelled;
        }

        cts.Cancel();
        return true;
    }
}

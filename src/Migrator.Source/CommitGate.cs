namespace Migration.Source;

/// <summary>
/// The migration's point of no return, shared by the cutover and whoever may cancel it. The cutover passes it just
/// before it stops the source copy for good (SIGKILL to the frozen tree, CRIU's post-dump acknowledged); a cancel
/// before that wins and the cutover rolls back to the source instead; a cancel after it is refused. Both are decided
/// under one lock, so a cancel never races a commit into "cancelled" and "migrated" at once.
///
/// Before the freeze a cancel cancels the migration's token (pre-copy stops where it is). From the freeze on it does
/// not: a token cancelled inside CRIU's dump would cut the swrk connection while CRIU holds the tree. The cutover checks
/// the gate instead at its own steps (post-dump, before the restore, at the commit) and refuses post-dump, which is
/// the rollback CRIU is built for: it resumes the source.
/// </summary>
public sealed class CommitGate
{
    private readonly Lock _lock = new();
    private State _state;

    private enum State
    {
        Open,
        Frozen,
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

    /// <summary>The cutover's side, before CRIU's dump: true to freeze, false when a cancel came first (then it must not freeze).</summary>
    public bool TryEnterFreeze()
    {
        lock (_lock)
        {
            if (_state == State.Cancelled)
            {
                return false;
            }

            _state = State.Frozen;
            return true;
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

    /// <summary>
    /// The canceller's side: true when the migration will not commit (it rolls back; <paramref name="cts"/> is cancelled
    /// if the tree is not frozen yet); false when it is too late.
    /// </summary>
    public bool TryCancel(CancellationTokenSource cts)
    {
        ArgumentNullException.ThrowIfNull(cts);
        bool frozen;
        lock (_lock)
        {
            if (_state == State.Committing)
            {
                return false;
            }

            frozen = _state == State.Frozen;
            _state = State.Cancelled;
        }

        if (!frozen)
        {
            cts.Cancel();
        }

        return true;
    }
}

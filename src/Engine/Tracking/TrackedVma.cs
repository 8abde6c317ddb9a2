namespace Migration.Engine.Tracking;

/// <summary>What the tracker did with one VMA of the tracked process (as of the last attach or refresh).</summary>
public enum VmaState
{
    /// <summary>Registered and write-protected: its writes are harvested.</summary>
    Tracked = 0,

    /// <summary>[vdso], [vvar], [vsyscall] and the like.</summary>
    SkippedSpecial = 1,

    /// <summary>A shared mapping.</summary>
    SkippedShared = 2,

    /// <summary>Not writable now (seen again by a refresh if that changes).</summary>
    SkippedReadOnly = 3,

    /// <summary>Private and writable, but the kernel refused to register it: its writes are not seen.</summary>
    Refused = 4,
}

/// <param name="Error">For <see cref="VmaState.Refused"/>: the errno the kernel answered.</param>
public sealed record TrackedVma(ulong Start, ulong End, string Permissions, VmaState State, int Error);

/// <summary>Facts about an attached tracker.</summary>
/// <param name="StopTime">How long the process's injected thread was held stopped (an upper bound).</param>
/// <param name="RegisterTime">UFFDIO_API, REGISTER and write-protect of every VMA, done while the task runs.</param>
/// <param name="InjectedThread">The thread userfaultfd() and close() ran in (the leader unless it had exited).</param>
/// <param name="UserModeOnly">The task needed UFFD_USER_MODE_ONLY (unprivileged, vm.unprivileged_userfaultfd=0).</param>
/// <param name="RedeliveredSignals">Signals that arrived during the injection and were sent again.</param>
public sealed record TrackerStatistics(
    TimeSpan AttachTime,
    TimeSpan StopTime,
    TimeSpan RegisterTime,
    int TrackedVmas,
    int RefusedVmas,
    ulong TrackedBytes,
    int InjectedThread,
    bool UserModeOnly,
    int RedeliveredSignals,
    ulong UffdFeatures);

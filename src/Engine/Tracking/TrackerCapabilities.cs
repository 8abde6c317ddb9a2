namespace Migration.Engine.Tracking;

/// <summary>What this kernel offers for dirty tracking, as measured by <see cref="DirtyTracker.Probe"/>.</summary>
/// <param name="UserfaultfdError">0, or the errno of userfaultfd()/UFFDIO_API in this process.</param>
/// <param name="PagemapScanError">0, or the errno of a PAGEMAP_SCAN of this process's pagemap.</param>
public sealed record TrackerCapabilities(
    bool Userfaultfd,
    bool WriteProtectAsync,
    bool WriteProtectUnpopulated,
    bool UserModeOnlyNeeded,
    bool PagemapScan,
    bool SoftDirty,
    bool Injection,
    ulong UffdFeatures,
    int UserfaultfdError,
    int PagemapScanError)
{
    /// <summary>Everything write-protect tracking (<see cref="DirtyTracker"/>) needs.</summary>
    public bool WriteProtectTracking => WriteProtectAsync && WriteProtectUnpopulated && PagemapScan && Injection;

    /// <summary>Why write-protect tracking cannot work here, or null when it can.</summary>
    public string? Missing => this switch
    {
        { Injection: false } => "syscall injection is implemented for x86_64 only",
        { Userfaultfd: false } => $"userfaultfd() fails (errno {UserfaultfdError})",
        { WriteProtectAsync: false } => "the kernel lacks UFFD_FEATURE_WP_ASYNC (Linux 6.7+)",
        { WriteProtectUnpopulated: false } => "the kernel lacks UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4+)",
        { PagemapScan: false } => $"the kernel lacks the PAGEMAP_SCAN ioctl (Linux 6.7+, errno {PagemapScanError})",
        _ => null,
    };
}

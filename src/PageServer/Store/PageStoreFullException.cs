using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>Which <see cref="PageStoreOptions"/> limit a run would have exceeded.</summary>
public enum PageStoreLimit
{
    /// <summary><see cref="PageStoreOptions.MaxBytes"/>.</summary>
    Bytes,

    /// <summary><see cref="PageStoreOptions.MaxTargets"/>.</summary>
    Targets,

    /// <summary><see cref="PageStoreOptions.MaxPagesPerTarget"/>.</summary>
    PagesPerTarget,

    /// <summary><see cref="PageStoreOptions.MaxIndexBytes"/>.</summary>
    IndexBytes,
}

/// <summary>
/// A run would have exceeded a limit of the page store. Nothing of that run was written or indexed; what the store
/// held before the call is intact, so the caller can end the migration cleanly (or free space and resend).
/// </summary>
public sealed class PageStoreFullException : Exception
{
    public PageStoreFullException(PageStoreLimit limit, PageTarget target, long requested, long maximum)
        : base(Describe(limit, target, requested, maximum))
    {
        Limit = limit;
        Target = target;
        Requested = requested;
        Maximum = maximum;
    }

    public PageStoreLimit Limit { get; }

    /// <summary>The target the refused run was for.</summary>
    public PageTarget Target { get; }

    /// <summary>What the store would have held with the run (bytes, targets or pages, after <see cref="Limit"/>).</summary>
    public long Requested { get; }

    public long Maximum { get; }

    private static string Describe(PageStoreLimit limit, PageTarget target, long requested, long maximum) => limit switch
    {
        PageStoreLimit.Bytes =>
            $"page store full: pages for {target} would bring the store to {requested} bytes, over its limit of {maximum} bytes " +
            "(PageStoreOptions.MaxBytes, the target's free disk space minus its reserve); free disk space on the target or migrate a smaller workload",
        PageStoreLimit.Targets =>
            $"page store full: {target} would be target number {requested}, over the limit of {maximum} " +
            "(PageStoreOptions.MaxTargets); migrate a smaller process tree or raise the limit",
        PageStoreLimit.PagesPerTarget =>
            $"page store full: {target} would hold {requested} pages, over the limit of {maximum} " +
            "(PageStoreOptions.MaxPagesPerTarget); migrate a smaller process or raise the limit",
        _ =>
            $"page store full: pages for {target} would bring the page indexes to {requested} bytes of memory, over the limit of {maximum} " +
            "(PageStoreOptions.MaxIndexBytes; sparse pages cost most); migrate a smaller workload or raise the limit",
    };
}

using Migration.PageServer.Transport;

using Migration.Source.Precopy;

namespace Migration.Source;

/// <summary>A completed migration.</summary>
public sealed record MigrationResult
{
    public required string MigrationId { get; init; }
    public required int SourcePid { get; init; }
    public required int TargetPid { get; init; }
    public required string Mode { get; init; }

    /// <summary>A dry run: everything was moved and discarded on the target; the tree kept running on the source.</summary>
    public bool DryRun { get; init; }
    public required int ImageFiles { get; init; }
    /// <summary>Everything that crossed the link: metadata images plus page stream frames.</summary>
    public required ulong BytesSent { get; init; }

    /// <summary>Pre-copy iterations (empty for a cold migration).</summary>
    public IReadOnlyList<PrecopyIteration> Iterations { get; init; } = [];

    /// <summary>Why pre-copy stopped, or why it did not run (fallback to cold).</summary>
    public string? PrecopyNote { get; init; }

    /// <summary>The highest level auto-converge throttled the tree to during pre-copy, in percent stopped (0: never).</summary>
    public int ThrottlePercent { get; init; }

    /// <summary>The last round of a lazy final dump (null otherwise).</summary>
    public FinalRound? FinalRound { get; init; }

    /// <summary>Bytes that crossed the link while the tree was frozen (final pages and metadata images).</summary>
    public ulong BytesFrozen { get; init; }

    /// <summary>The page stream's totals; null when pages travelled inside the images (no page transport).</summary>
    public PageTransferStats? Pages { get; init; }

    /// <summary>From the freeze to the restored tree's resume on the target: what the workload sees as a pause.</summary>
    public required TimeSpan Frozen { get; init; }
    public required TimeSpan Total { get; init; }
    public required TimeSpan Dump { get; init; }
    public required TimeSpan Transfer { get; init; }
    public required TimeSpan Restore { get; init; }

    /// <summary>
    /// Room the target made for the pages before the freeze (cold mode), and how long beginning the migration on the
    /// target took with it (the source waits for it before freezing anything).
    /// </summary>
    public ulong ProvisionedBytes { get; init; }

    public TimeSpan Begin { get; init; }
}

namespace Migration.Source.Precopy;

/// <summary>
/// When pre-copy stops iterating. Defaults from what earlier orchestrators found to work (P.Haul, go-criu phaul:
/// at most 8 iterations, stop at 64 dirty pages or fewer, stop when the dirty set grows more than 10%), plus a
/// downtime budget: stop once the remaining dirty set can be moved within it at the measured rate.
/// </summary>
public sealed record PrecopyPolicy
{
    /// <summary>Iterations at most (iteration 0, the full copy, included): phaul's 8.</summary>
    public int MaxIterations { get; init; } = 8;

    /// <summary>
    /// The time the final dirty set may take to move while the tree is frozen. 100 ms: the rest of the freeze (CRIU's
    /// metadata dump, a lazy restore) costs a few hundred ms anyway, and one more iteration while the tree runs is cheap.
    /// </summary>
    public TimeSpan MaxDowntime { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>A dirty set this small is moved at cutover whatever the rate (phaul's 64 pages).</summary>
    public long SmallDirtyPages { get; init; } = 64;

    /// <summary>Stop when the dirty set grew by more than this over the previous iteration (phaul's 10%).</summary>
    public double GrowthLimit { get; init; } = 1.10;

    /// <summary>Decides after an iteration that found <paramref name="dirtyPages"/> dirty; null to go on, else why to stop.</summary>
    public string? StopReason(int iteration, long dirtyPages, long previousDirtyPages, double bytesPerSecond)
    {
        if (dirtyPages <= SmallDirtyPages)
        {
            return $"dirty set is {dirtyPages} pages (<= {SmallDirtyPages})";
        }

        double seconds = bytesPerSecond > 0 ? dirtyPages * 4096.0 / bytesPerSecond : double.PositiveInfinity;
        if (seconds <= MaxDowntime.TotalSeconds)
        {
            return $"dirty set of {dirtyPages} pages moves in ~{seconds * 1000:0} ms at the measured {bytesPerSecond / 1048576:0} MiB/s (budget {MaxDowntime.TotalMilliseconds:0} ms)";
        }

        if (previousDirtyPages > 0 && dirtyPages > previousDirtyPages * GrowthLimit)
        {
            return $"dirty set grew from {previousDirtyPages} to {dirtyPages} pages: writes outpace the copy";
        }

        if (iteration + 1 >= MaxIterations)
        {
            return $"iteration limit ({MaxIterations}) reached with {dirtyPages} pages dirty";
        }

        return null;
    }
}

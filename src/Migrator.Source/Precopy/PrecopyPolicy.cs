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

    /// <summary>
    /// Auto-converge, as QEMU's: when the dirty set does not fit the budget and pre-copy would stop on growth or on the
    /// iteration limit, throttle the tree (<see cref="Engine.Processes.TreeThrottle"/>) and iterate on instead.
    /// </summary>
    public bool AutoConverge { get; init; } = true;

    /// <summary>The first throttle level, in percent of the time the tree is stopped (QEMU's cpu-throttle-initial).</summary>
    public int ThrottleInitial { get; init; } = 20;

    /// <summary>Added to the level on every iteration that still does not converge (QEMU's cpu-throttle-increment).</summary>
    public int ThrottleIncrement { get; init; } = 10;

    /// <summary>Whether <paramref name="dirtyPages"/> can move within the budget at <paramref name="bytesPerSecond"/>.</summary>
    public bool Fits(long dirtyPages, double bytesPerSecond) =>
        dirtyPages <= SmallDirtyPages || (bytesPerSecond > 0 && dirtyPages * 4096.0 / bytesPerSecond <= MaxDowntime.TotalSeconds);

    /// <summary>
    /// The throttle level for the next iteration when the one at <paramref name="level"/> did not converge, or null when
    /// it is at its highest already (pre-copy then stops with what is dirty).
    /// </summary>
    public int? NextThrottle(int level) => level >= Engine.Processes.TreeThrottle.MaxLevel ? null
        : level <= 0 ? Math.Clamp(ThrottleInitial, 1, Engine.Processes.TreeThrottle.MaxLevel)
        : Math.Min(level + Math.Max(ThrottleIncrement, 1), Engine.Processes.TreeThrottle.MaxLevel);

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

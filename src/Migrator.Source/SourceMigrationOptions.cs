using Migration.Source.Precopy;

namespace Migration.Source;

/// <summary>Source-side settings of one migration. Defaults say why they are what they are.</summary>
public sealed record SourceMigrationOptions
{
    /// <summary>Where the dump is staged (removed after the migration); /var/lib survives reboots and is not a small tmpfs.</summary>
    public string WorkRoot { get; init; } = "/var/lib/migrate/source";

    /// <summary>Keep the staging directory (images and CRIU logs) after the migration; logs are kept regardless.</summary>
    public bool KeepImages { get; init; }

    /// <summary>The user's CRIU options: applied to the dump here and, sent in Begin, to the restore on the target.</summary>
    public Engine.Criu.CriuFlags Criu { get; init; } = Engine.Criu.CriuFlags.None;

    /// <summary>Service addresses that move with the tree (<c>--move-address</c>): off this host while frozen, up on the target before the restore.</summary>
    public IReadOnlyList<Engine.Network.ServiceAddress> MoveAddresses { get; init; } = [];

    /// <summary>An operator's program that moves the addresses instead of iproute2 (<c>--address-hook</c>): run as HOOK down|up ADDR/PREFIX IFACE.</summary>
    public string? AddressHook { get; init; }

    /// <summary>"precopy" (default): iterative pre-copy with dirty tracking, then a short freeze; "cold": freeze, dump, transfer, restore.</summary>
    public string Mode { get; init; } = "precopy";

    /// <summary>
    /// How the frozen tree's memory is dumped after pre-copy. "lazy" (default): CRIU dumps metadata only (anonymous
    /// memory marked lazy) and the engine sends just the pages written since the last iteration, read from the frozen
    /// tree. "full": CRIU reads every page into our page server, which forwards only the changed ones (slower while
    /// frozen: every page is read once more; kept as the fallback).
    /// </summary>
    public string FinalDump { get; init; } = "lazy";

    /// <summary>
    /// After a lazy final dump, restore lazily on the target (default): criu restore skips the anonymous memory and
    /// criu lazy-pages fills it from the target's own images (on first touch, the rest in the background) once the tree
    /// runs. All pages are on the target before the freeze ends, so nothing depends on the source afterwards. False:
    /// the restore reads every page before the tree resumes (longer freeze).
    /// </summary>
    public bool LazyRestore { get; init; } = true;

    /// <summary>When pre-copy stops iterating.</summary>
    public PrecopyPolicy Precopy { get; init; } = new();

    /// <summary>
    /// Dry run: dump with the tree left running, move its memory and images to the target, then discard them
    /// there. Measures the transfer (what a migration would move, and how fast); changes nothing.
    /// </summary>
    public bool DryRun { get; init; }

    /// <summary>Bound on transfer plus restore while the tree is frozen; past it the source resumes.</summary>
    public TimeSpan CutoverTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Bound on each preflight and control call.</summary>
    public TimeSpan CallTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long to keep retrying the commit once the source copy is gone (its loss is not an option).</summary>
    public TimeSpan CommitRetryFor { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Estimated image size over resident memory (metadata, page alignment): 10% headroom.</summary>
    public double SpaceHeadroom { get; init; } = 1.10;
}

using Migration.Engine.Contract;
using Migration.Engine.Images;
using Migration.Engine.Processes;

namespace Migration.Source.Agent;

/// <summary>
/// A migration begun on the target: its id, the port its page stream connects to (0: none), and the bytes of room the
/// target made for the pages ahead of them (cold migrations; 0: none).
/// </summary>
public sealed record TargetMigration(string Id, int PagePort, ulong ProvisionedBytes = 0);

/// <summary>
/// The target side of a migration as the source engine sees it. The implementation carries these calls to
/// the target agent (the control API); every call may throw, and every call is bounded by the token.
/// </summary>
public interface IMigrationTarget
{
    Task<TargetPreflight> PreflightAsync(SourcePreflight request, CancellationToken ct);

    /// <summary>
    /// Creates the migration on the target. <paramref name="tasks"/> (largest first) lets a cold migration's target
    /// make room for the pages before the freeze; empty for none.
    /// </summary>
    Task<TargetMigration> BeginAsync(int sourcePid, ulong bytesExpected, string mode, IReadOnlyList<TaskMemory> tasks, Engine.Criu.CriuFlags criu,
        IReadOnlyList<Engine.Network.ServiceAddress> addresses, CancellationToken ct);

    /// <summary>Sends every file of the manifest from <paramref name="imagesDir"/>; returns bytes sent.</summary>
    Task<ulong> SendImagesAsync(string migrationId, string imagesDir, IReadOnlyList<ImageFileInfo> manifest, CancellationToken ct);

    /// <summary>Pre-copy is over: the target prepares its images of the pages held so far (the workload still runs).</summary>
    Task PrepareCutoverAsync(string migrationId, CancellationToken ct);

    /// <summary>
    /// Restores on the target, tree left stopped; returns the restored root pid there. With
    /// <paramref name="pagesStreamed"/> the target first composes the page images from its page store.
    /// </summary>
    Task<int> RestoreAsync(string migrationId, IReadOnlyList<ImageFileInfo> manifest, bool pagesStreamed, bool lazyPages, CancellationToken ct);

    /// <summary>Resumes the restored tree on the target (the source copy is gone by then).</summary>
    Task<int> CommitAsync(string migrationId, CancellationToken ct);

    /// <summary>Discards the migration on the target, killing a restored (stopped) tree.</summary>
    Task AbortAsync(string migrationId, string reason, CancellationToken ct);
}

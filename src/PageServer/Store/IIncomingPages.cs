namespace Migration.PageServer.Store;

/// <summary>
/// A migration's pages as they arrive on the page stream (the target's page store, kept in PageServer):
/// what the restore needs to know of them and the one thing it asks of them.
/// </summary>
public interface IIncomingPages : IDisposable
{
    /// <summary>Rounds acknowledged durable so far.</summary>
    int RoundsCompleted { get; }

    /// <summary>Why the page stream failed, or null.</summary>
    string? Error { get; }

    /// <summary>
    /// Before a cold migration's freeze, while nothing else uses the pages: makes room for the pages of each task of
    /// <paramref name="tasks"/>, largest first, at most <paramref name="maxBytes"/> in all and until
    /// <paramref name="deadline"/> (a <see cref="System.Diagnostics.Stopwatch"/> timestamp), so that writing them
    /// while the tree is frozen finds its memory and disk space ready. Returns the bytes made room for.
    /// </summary>
    long Provision(IReadOnlyList<Engine.Processes.TaskMemory> tasks, long maxBytes, long deadline);

    /// <summary>
    /// Writes what is held now into <paramref name="parentDir"/> as a parent image, before the freeze; the final
    /// images then reference it instead of copying those pages while the tree is frozen.
    /// </summary>
    void WriteParentImages(string parentDir, CancellationToken ct);

    /// <summary>Writes the pagemap and pages images into <paramref name="imagesDir"/>, next to the metadata images.</summary>
    void ComposeImages(string imagesDir, CancellationToken ct);

    /// <summary>
    /// Serves <c>criu lazy-pages</c> (CRIU's page-server protocol, GET direction) on <paramref name="connection"/> from
    /// the held pages until it closes the session. Returns null when it ended cleanly, else why it failed.
    /// </summary>
    Task<string?> ServeLazyPagesAsync(System.Net.Sockets.Socket connection, CancellationToken ct);
}

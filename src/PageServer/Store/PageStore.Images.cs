namespace Migration.PageServer.Store;

/// <summary>The images <c>criu restore</c> reads, composed by <see cref="ImageComposer"/> under the store's lock.</summary>
public sealed partial class PageStore
{
    /// <summary>
    /// Writes, into <paramref name="imagesDir"/> (the migration's images directory, where the metadata images
    /// already are), for every target in order (tasks by pid, then shmem segments by id, <c>pages_id</c> numbered
    /// from <paramref name="firstPagesId"/>): <c>pages-N.img</c>, the present pages back to back in ascending address
    /// order, and <c>pagemap-PID.img</c> or <c>pagemap-shmem-SHMID.img</c> (criu/image-desc.c), a head with
    /// <c>pages_id = N</c> and one entry per run of adjacent pages of one kind (flags Present, Lazy or Parent).
    /// </summary>
    /// <remarks>
    /// A data file that already is its pages image (appended in ascending order, nothing superseded) is renamed into
    /// place when <see cref="PageStoreOptions.MoveDataFiles"/> (O(1)); otherwise pages are copied in address order
    /// with reads and writes of up to <see cref="PageStoreOptions.CopyBufferBytes"/>, needing as many more bytes on
    /// the images directory's file system as <see cref="PageStoreStats.LivePages"/> pages take.
    /// Refuses (before writing anything) when any of the files exists; on any failure removes what it wrote and moves
    /// renamed data files back, so the directory is as before and the call can be retried. On success the store
    /// takes no more pages (a renamed data file is now an image); <see cref="ReadPages"/> keeps working.
    /// Lazy marks are for <c>criu restore --lazy-pages</c>: a plain restore cannot fill lazy pages.
    /// </remarks>
    public IReadOnlyList<ComposedImage> WriteImages(string imagesDir, uint firstPagesId = DefaultFirstPagesId, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(imagesDir);
        string dir = Path.GetFullPath(imagesDir);
        lock (_gate)
        {
            ThrowIfNotWritable();
            ImageComposer.ThrowIfMissing(dir);
            _writer.Flush();
            _provisioner.Drop(report: true); // room made for targets that never came: no pages, no images
            var targets = OrderedTargets();
            foreach (var t in targets)
            {
                // A data file may become a pages image: it takes no more disk than its pages.
                Preallocator.Release(t);
            }

            var composed = _composer.WriteImages(dir, targets, firstPagesId, ct);
            _sealed = true;
            return composed;
        }
    }

    /// <summary>
    /// Makes the ascending prefix of each target's data file (pre-copy's first round, in address order) a parent
    /// image in <paramref name="parentDir"/>: a pagemap of the prefix runs and a link to the data file as its pages
    /// file (CRIU reads pages at offsets the pagemap gives; the later rounds behind the prefix are never read). No
    /// page is copied, so this is instant, while the workload still runs. <see cref="WriteImages"/> then references
    /// these pages (PE_PARENT, with a <c>parent</c> link, as after CRIU's own pre-dump) where they are still current,
    /// and copies only the others while the tree is frozen.
    /// </summary>
    public void WriteParentImages(string parentDir, CancellationToken ct = default)
    {
        string dir = Path.GetFullPath(parentDir);
        Directory.CreateDirectory(dir);
        lock (_gate)
        {
            ThrowIfNotWritable();
            _writer.Flush();
            _composer.WriteParentImages(dir, OrderedTargets(), ct);
        }
    }
}

using System.Buffers;
using System.Diagnostics;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>Composing the CRIU images <c>criu restore</c> reads from what the store holds.</summary>
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
            if (!Directory.Exists(dir))
            {
                throw new DirectoryNotFoundException($"images directory {dir} does not exist; create it (with the dump's metadata images) first");
            }

            FlushBuffer();
            DropProvisioned(report: true); // room made for targets that never came: no pages, no images
            var targets = _targets.Values.OrderBy(t => t.Target.Type).ThenBy(t => t.Target.Id).ToArray();
            foreach (var t in targets)
            {
                // A data file may become a pages image: it takes no more disk than its pages.
                ReleaseReserve(t);
            }

            if (targets.Length > 0 && firstPagesId > uint.MaxValue - (uint)(targets.Length - 1))
            {
                throw new ArgumentOutOfRangeException(nameof(firstPagesId), $"pages ids from {firstPagesId} for {targets.Length} targets overflow 32 bits");
            }

            var plans = new ImagePlan[targets.Length];
            for (int i = 0; i < targets.Length; i++)
            {
                uint id = firstPagesId + (uint)i;
                plans[i] = new ImagePlan(targets[i], id, Path.Combine(dir, targets[i].Target.PagemapFileName), Path.Combine(dir, $"pages-{id}.img"));
                foreach (var path in (ReadOnlySpan<string>)[plans[i].PagemapPath, plans[i].PagesPath])
                {
                    if (File.Exists(path) || Directory.Exists(path))
                    {
                        throw new IOException($"{path} already exists; refusing to overwrite it (remove the dump's own pagemap and pages images, or write into a fresh directory)");
                    }
                }
            }

            long start = Stopwatch.GetTimestamp();
            var undo = new ImageUndo(_logger);
            var composed = new List<ComposedImage>(plans.Length);
            int copyBytes = _options.CopyBufferBytes / PageSize * PageSize;
            byte[]? copyBuffer = null;
            try
            {
                foreach (var plan in plans)
                {
                    ct.ThrowIfCancellationRequested();
                    bool move = _options.MoveDataFiles && plan.Data.IsInImageOrder && plan.Data.DataPath is not null
                        && plan.Data.File.Length == plan.Data.DataPages * PageSize && !plan.Data.HasParentImage && plan.Data.Parent is null;
                    if (!move)
                    {
                        copyBuffer ??= ArrayPool<byte>.Shared.Rent(copyBytes);
                    }

                    composed.Add(Compose(plan, move, undo, move ? default : copyBuffer.AsMemory(0, copyBytes), ct));
                }

                if (_parentImageDir is not null)
                {
                    // CRIU resolves PE_PARENT entries through this link (relative, so the pair can be moved together).
                    var link = Path.Combine(dir, "parent");
                    File.CreateSymbolicLink(link, Path.GetRelativePath(dir, _parentImageDir));
                    undo.Created(link);
                }
            }
            catch
            {
                undo.Rollback();
                throw;
            }
            finally
            {
                if (copyBuffer is not null)
                {
                    ArrayPool<byte>.Shared.Return(copyBuffer);
                }
            }

            foreach (var plan in plans)
            {
                if (undo.WasMoved(plan.PagesPath))
                {
                    plan.Data.DataPath = null;
                }
            }

            _sealed = true;
            Log.ImagesWritten(_logger, composed.Count, dir, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
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
            FlushBuffer();
            uint id = DefaultFirstPagesId;
            foreach (var t in _targets.Values.OrderBy(t => t.Target.Type).ThenBy(t => t.Target.Id))
            {
                ct.ThrowIfCancellationRequested();
                if (t.PrefixPages == 0 || t.DataPath is null)
                {
                    continue;
                }

                File.CreateSymbolicLink(Path.Combine(dir, $"pages-{id}.img"), t.DataPath);
                using (var pagemap = new FileStream(Path.Combine(dir, t.Target.PagemapFileName), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                {
                    new PagemapImage(id, t.PrefixRuns).Write(pagemap);
                }

                t.HasParentImage = true;
                id++;
            }

            _parentImageDir = dir;
        }
    }

    private ComposedImage Compose(ImagePlan plan, bool move, ImageUndo undo, Memory<byte> copyBuffer, CancellationToken ct)
    {
        long start = Stopwatch.GetTimestamp();
        var t = plan.Data;
        var runs = new List<PagemapRun>();
        long present;
        if (move)
        {
            File.Move(t.DataPath!, plan.PagesPath, overwrite: false);
            undo.Moved(plan.PagesPath, t.DataPath!);
            present = CollectRuns(t, runs, copier: null, t.HasParentImage ? t.PrefixPages : 0, ct);
        }
        else
        {
            using var pages = new FileStream(plan.PagesPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 0);
            undo.Created(plan.PagesPath);
            var copier = new PageCopier(t, pages, copyBuffer);
            present = CollectRuns(t, runs, copier, t.HasParentImage ? t.PrefixPages : 0, ct);
            copier.Finish();
        }

        InjectFault?.Invoke(t.Target, FaultPoint.PagesWritten);
        using (var pagemap = new FileStream(plan.PagemapPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
        {
            undo.Created(plan.PagemapPath);
            new PagemapImage(plan.PagesId, runs).Write(pagemap);
        }

        InjectFault?.Invoke(t.Target, FaultPoint.PagemapWritten);

        double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        Log.ImageComposed(_logger, plan.PagemapPath, plan.PagesPath, runs.Count, present, move ? "moved" : "copied", ms);
        return new ComposedImage(t.Target, plan.PagesId, plan.PagemapPath, plan.PagesPath, runs.Count, present, move);
    }

    /// <summary>
    /// Walks <paramref name="t"/>'s index in ascending address order, merging adjacent pages of one kind into runs,
    /// and hands each present page's data page to <paramref name="copier"/>. Returns the number of present pages.
    /// </summary>
    private static long CollectRuns(TargetData t, List<PagemapRun> runs, PageCopier? copier, long parentPages, CancellationToken ct)
    {
        long present = 0;
        ulong runStart = 0;
        ulong runPages = 0;
        var runKind = PageKind.None;
        foreach (var (firstPage, slots) in t.Index.OrderedChunks())
        {
            ct.ThrowIfCancellationRequested();
            for (int i = 0; i < slots.Length; i++)
            {
                var e = new PageEntry(slots[i]);
                if (e.Kind == PageKind.None)
                {
                    continue;
                }

                ulong page = firstPage + (ulong)i;
                if (e.Kind == PageKind.Present && e.DataPage < parentPages)
                {
                    // Its current copy is in the data file's prefix, which is the parent image: referenced, not copied.
                    e = PageEntry.Parent;
                }

                if (runPages > 0 && e.Kind == runKind && runStart + runPages == page)
                {
                    runPages++;
                }
                else
                {
                    if (runPages > 0)
                    {
                        runs.Add(new PagemapRun(runStart * PageSize, runPages, FlagsOf(runKind)));
                    }

                    runStart = page;
                    runPages = 1;
                    runKind = e.Kind;
                }

                if (e.Kind == PageKind.Present)
                {
                    present++;
                    copier?.Add(e.DataPage);
                }
            }
        }

        if (runPages > 0)
        {
            runs.Add(new PagemapRun(runStart * PageSize, runPages, FlagsOf(runKind)));
        }

        return present;
    }

    private static PagemapFlags FlagsOf(PageKind kind) => kind switch
    {
        PageKind.Present => PagemapFlags.Present,
        PageKind.Lazy => PagemapFlags.Lazy,
        _ => PagemapFlags.Parent,
    };

    private sealed record ImagePlan(TargetData Data, uint PagesId, string PagemapPath, string PagesPath);
}

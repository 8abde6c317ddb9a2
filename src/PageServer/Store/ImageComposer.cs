using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// Composes the CRIU images <c>criu restore</c> reads from what the store holds: per target a <c>pagemap-*.img</c>
/// and its <c>pages-N.img</c> (<see cref="WriteImages"/>), and before that, optionally, the parent images of the data
/// files' ascending prefixes (<see cref="WriteParentImages"/>). One per store; the caller holds the store's lock.
/// </summary>
internal sealed class ImageComposer(PageStoreOptions options, ILogger logger)
{
    private const int PageSize = PageFacts.PageSize;

    /// <summary>Where <see cref="WriteParentImages"/> wrote the parent image, if it did.</summary>
    private string? _parentImageDir;

    /// <summary>Named points where tests inject a failure (garnet's ExceptionInjectionHelper): the hook throws.</summary>
    internal enum FaultPoint
    {
        /// <summary>In <see cref="WriteImages"/>, after a target's pages image was copied or moved into place.</summary>
        PagesWritten,

        /// <summary>In <see cref="WriteImages"/>, after a target's pagemap image was written.</summary>
        PagemapWritten,
    }

    /// <summary>Test hook called at each <see cref="FaultPoint"/>; null in production.</summary>
    internal Action<PageTarget, FaultPoint>? InjectFault { get; set; }

    /// <summary>Throws unless <paramref name="dir"/> (a full path) is a directory, as the images directory must be.</summary>
    public static void ThrowIfMissing(string dir)
    {
        if (!Directory.Exists(dir))
        {
            throw new DirectoryNotFoundException($"images directory {dir} does not exist; create it (with the dump's metadata images) first");
        }
    }

    /// <summary>
    /// Writes the images of <paramref name="targets"/> (in that order, <c>pages_id</c> numbered from
    /// <paramref name="firstPagesId"/>) into <paramref name="dir"/>, as <see cref="PageStore.WriteImages"/> describes:
    /// refuses before writing anything when any of the files exists, and on any failure puts the directory back.
    /// </summary>
    public IReadOnlyList<ComposedImage> WriteImages(string dir, IReadOnlyList<TargetData> targets, uint firstPagesId, CancellationToken ct)
    {
        if (targets.Count > 0 && firstPagesId > uint.MaxValue - (uint)(targets.Count - 1))
        {
            throw new ArgumentOutOfRangeException(nameof(firstPagesId), $"pages ids from {firstPagesId} for {targets.Count} targets overflow 32 bits");
        }

        var plans = new ImagePlan[targets.Count];
        for (int i = 0; i < targets.Count; i++)
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
        var undo = new ImageUndo(logger);
        var composed = new List<ComposedImage>(plans.Length);
        int copyBytes = options.CopyBufferBytes / PageSize * PageSize;
        byte[]? copyBuffer = null;
        try
        {
            foreach (var plan in plans)
            {
                ct.ThrowIfCancellationRequested();
                bool move = options.MoveDataFiles && plan.Data.IsInImageOrder && plan.Data.DataPath is not null
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

        PageStoreLog.ImagesWritten(logger, composed.Count, dir, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return composed;
    }

    /// <summary>
    /// Makes the ascending prefix of each of <paramref name="targets"/>' data files a parent image in
    /// <paramref name="dir"/>, as <see cref="PageStore.WriteParentImages"/> describes: no page is copied.
    /// </summary>
    public void WriteParentImages(string dir, IReadOnlyList<TargetData> targets, CancellationToken ct)
    {
        uint id = PageStore.DefaultFirstPagesId;
        foreach (var t in targets)
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
        PageStoreLog.ImageComposed(logger, plan.PagemapPath, plan.PagesPath, runs.Count, present, move ? "moved" : "copied", ms);
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

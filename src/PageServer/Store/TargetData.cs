using Microsoft.Extensions.Logging;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// What the store holds for one target and how a run changes it: its append-only data file (every present page
/// received, in arrival order), its index, the layout before a re-open (the parent) and the ascending prefix of the
/// data file. Guarded by the store's lock.
/// </summary>
internal sealed class TargetData : IDisposable
{
    private const int PageSize = PageFacts.PageSize;

    private TargetData(PageTarget target, string dataPath, FileStream file)
    {
        Target = target;
        DataPath = dataPath;
        File = file;
    }

    public PageTarget Target { get; }

    /// <summary>The data file's path; null once it was moved into an images directory as its <c>pages-N.img</c>.</summary>
    public string? DataPath { get; set; }

    /// <summary>Unbuffered (bufferSize 0): written and read with <see cref="RandomAccess"/> on its handle, flushed with Flush(true).</summary>
    public FileStream File { get; }

    public PageIndex Index { get; private set; } = new();

    /// <summary>
    /// The layout before the target was opened again (CRIU's parent image): PARENT runs of the current layout take
    /// their pages from here. Null until a second OPEN.
    /// </summary>
    public PageIndex? Parent { get; private set; }

    /// <summary>
    /// The ascending prefix of the data file: the runs (in address order) of the first <see cref="PrefixPages"/> data
    /// pages, appended while every run came after the previous one (pre-copy's first round does that). This prefix is
    /// already a valid CRIU pages file for these runs, so <see cref="PageStore.WriteParentImages"/> needs no copy.
    /// </summary>
    public List<PagemapRun> PrefixRuns { get; } = [];

    public long PrefixPages { get; private set; }

    /// <summary>Set by <see cref="PageStore.WriteParentImages"/>: data pages below <see cref="PrefixPages"/> are in the parent image.</summary>
    public bool HasParentImage { get; set; }

    /// <summary>Pages appended to the data file (the ones still in the store's write buffer included).</summary>
    public long DataPages { get; private set; }

    /// <summary>Data pages whose address got a newer copy or mark: written but no longer referenced.</summary>
    public long DeadPages { get; private set; }

    /// <summary>Present pages the index references.</summary>
    public long LivePages { get; private set; }

    /// <summary>Was every appended page at a higher address than the one appended before it?</summary>
    public bool Ascending { get; private set; } = true;

    /// <summary>Page number of the last page appended (meaningful once <see cref="DataPages"/> &gt; 0).</summary>
    public ulong LastAppendedPage { get; private set; }

    /// <summary>
    /// End of the data file's space made ahead of its pages: preallocated (<see cref="FileSpace"/>) or filled with
    /// zeros (<see cref="PageStore.Provision"/>); 0 when none. Holes below it are punched out.
    /// </summary>
    public long Allocated { get; set; }

    /// <summary>Written since the last fsync.</summary>
    public bool Dirty { get; set; }

    /// <summary>Is the data file, as it is, the target's <c>pages-N.img</c> (its pages in ascending address order, each referenced)?</summary>
    public bool IsInImageOrder => Ascending && DeadPages == 0 && LivePages == DataPages;

    /// <summary>Creates the target's data file in <paramref name="directory"/>; it must not exist yet.</summary>
    public static TargetData Create(PageTarget target, string directory)
    {
        string name = target.Type == PageImageType.Pid ? $"pid-{target.Id}.data" : $"shmem-{target.Id}.data";
        string path = Path.Combine(directory, name);
        var file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read, bufferSize: 0);
        return new TargetData(target, path, file);
    }

    /// <summary>
    /// Opened again while it holds pages: what was held becomes the parent layout and a fresh one starts (see
    /// <see cref="PageStore.OpenAsync"/>). False, changing nothing, when it holds no page yet.
    /// </summary>
    public bool Reopen()
    {
        if (Index.Count == 0)
        {
            return false;
        }

        Parent = Index;
        Index = new PageIndex();
        Ascending = false; // the data file now holds pages the new layout does not use
        LivePages = 0;
        return true;
    }

    /// <summary>
    /// Whether every page of the run has its current copy (in the current layout, or after a re-open in the parent
    /// layout) in the ascending prefix, at consecutive data pages; <paramref name="slot"/> is the first one.
    /// </summary>
    public bool TryPrefixSlot(ulong first, uint nrPages, out long slot)
    {
        slot = -1;
        for (uint i = 0; i < nrPages; i++)
        {
            var e = Index.Get(first + i);
            if (e.Kind != PageKind.Present && Parent is { } parent)
            {
                e = parent.Get(first + i);
            }

            if (e.Kind != PageKind.Present || e.DataPage >= PrefixPages || (i > 0 && e.DataPage != slot + i))
            {
                return false;
            }

            if (i == 0)
            {
                slot = e.DataPage;
            }
        }

        return nrPages > 0;
    }

    /// <summary>Indexes a run written over its current copies in the prefix, from data page <paramref name="slot"/> on.</summary>
    public void IndexInPlace(ulong first, uint nrPages, long slot)
    {
        for (uint i = 0; i < nrPages; i++)
        {
            if (Index.Set(first + i, PageEntry.Present(slot + i)).Kind == PageKind.None)
            {
                LivePages++;
            }
        }
    }

    /// <summary>Counts a present run appended at the end of the data file; the ascending prefix grows while the runs come in address order.</summary>
    public void Appended(ulong vaddr, uint nrPages)
    {
        ulong first = vaddr / PageSize;
        if (DataPages > 0 && first <= LastAppendedPage)
        {
            Ascending = false;
        }

        if (Ascending && !HasParentImage)
        {
            // Still in address order: the data file's prefix grows, as a ready-made pages image.
            if (PrefixRuns.Count > 0 && PrefixRuns[^1] is var last && last.Vaddr + last.NrPages * PageSize == vaddr)
            {
                PrefixRuns[^1] = last with { NrPages = last.NrPages + nrPages };
            }
            else
            {
                PrefixRuns.Add(new PagemapRun(vaddr, nrPages, PagemapFlags.Present));
            }

            PrefixPages += nrPages;
        }

        DataPages += nrPages;
        LastAppendedPage = first + nrPages - 1;
        LivePages += nrPages;
    }

    /// <summary>
    /// Indexes a run of <paramref name="kind"/> (a present one appended from data page <paramref name="firstDataPage"/>),
    /// replacing what the index held for those pages; returns how many it replaced. A PARENT run whose pages are not
    /// all in the parent layout throws before anything changes.
    /// </summary>
    public long IndexRun(ulong first, uint nrPages, PageKind kind, long firstDataPage)
    {
        long overwritten = 0;
        long dead = 0;
        if (kind == PageKind.Parent && Parent is { } parent)
        {
            // Every page of a PARENT run must be in the parent layout; check all before changing anything.
            for (uint i = 0; i < nrPages; i++)
            {
                if (parent.Get(first + i).Kind != PageKind.Present)
                {
                    throw new InvalidOperationException($"{Target}: PARENT page 0x{(first + i) * PageSize:x} has no earlier copy in the store");
                }
            }
        }

        for (uint i = 0; i < nrPages; i++)
        {
            var entry = kind switch
            {
                PageKind.Present => PageEntry.Present(firstDataPage + i),
                PageKind.Lazy => PageEntry.Lazy,
                _ when Parent is { } p => p.Get(first + i),
                _ => PageEntry.Parent,
            };
            var previous = Index.Set(first + i, entry);
            if (previous.Kind != PageKind.None)
            {
                overwritten++;
                if (previous.Kind == PageKind.Present)
                {
                    dead++;
                }
            }
        }

        DeadPages += dead;
        LivePages -= dead;
        if (kind == PageKind.Parent && Parent is not null)
        {
            LivePages += nrPages; // resolved to the parent's copies, which the new layout now uses
        }

        return overwritten;
    }

    /// <summary>Reads <paramref name="into"/>.Length bytes of the data file from data page <paramref name="dataPage"/>.</summary>
    public void ReadData(long dataPage, Span<byte> into)
    {
        long offset = dataPage * PageSize;
        while (!into.IsEmpty)
        {
            int n = RandomAccess.Read(File.SafeFileHandle, into, offset);
            if (n == 0)
            {
                throw new IOException($"data file of {Target} ends at {offset} bytes; the store indexed pages beyond it (was it truncated?)");
            }

            into = into[n..];
            offset += n;
        }
    }

    /// <summary>Closes the data file and deletes it; a failure to delete is logged, not thrown.</summary>
    public void Delete(ILogger logger)
    {
        Dispose();
        if (DataPath is null)
        {
            return;
        }

        try
        {
            System.IO.File.Delete(DataPath);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Safe to swallow: the file lies in the migration's own directory, which its owner removes with the
            // migration; failing here would hide the error that ended the migration.
            PageStoreLog.DeleteFailed(logger, DataPath, ex.Message);
        }
    }

    public void Dispose() => File.Dispose();
}

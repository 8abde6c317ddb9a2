using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// What the store holds for one target: its append-only data file (every present page received, in arrival order)
/// and its index. Guarded by the store's lock.
/// </summary>
internal sealed class TargetData : IDisposable
{
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

    public PageIndex Index { get; set; } = new();

    /// <summary>
    /// The layout before the target was opened again (CRIU's parent image): PARENT runs of the current layout take
    /// their pages from here. Null until a second OPEN.
    /// </summary>
    public PageIndex? Parent { get; set; }

    /// <summary>
    /// The ascending prefix of the data file: the runs (in address order) of the first <see cref="PrefixPages"/> data
    /// pages, appended while every run came after the previous one (pre-copy's first round does that). This prefix is
    /// already a valid CRIU pages file for these runs, so <see cref="PageStore.WriteParentImages"/> needs no copy.
    /// </summary>
    public List<Engine.Images.PagemapRun> PrefixRuns { get; } = [];

    public long PrefixPages { get; set; }

    /// <summary>Set by <see cref="PageStore.WriteParentImages"/>: data pages below <see cref="PrefixPages"/> are in the parent image.</summary>
    public bool HasParentImage { get; set; }

    /// <summary>Pages appended to the data file (the ones still in the store's write buffer included).</summary>
    public long DataPages { get; set; }

    /// <summary>Data pages whose address got a newer copy or mark: written but no longer referenced.</summary>
    public long DeadPages { get; set; }

    /// <summary>Present pages the index references.</summary>
    public long LivePages { get; set; }

    /// <summary>Was every appended page at a higher address than the one appended before it?</summary>
    public bool Ascending { get; set; } = true;

    /// <summary>Page number of the last page appended (meaningful once <see cref="DataPages"/> &gt; 0).</summary>
    public ulong LastAppendedPage { get; set; }

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

    public void Dispose() => File.Dispose();
}

using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// Disk space for the data files ahead of their writes, where it pays (<see cref="FileSpace"/>: on ext4): before a
/// write, as much again as the file holds, 1-64 MiB at a time; and giving back what a file holds past its pages once
/// it may become a pages image. One per store; guarded by the store's lock.
/// </summary>
internal sealed class Preallocator
{
    /// <summary>Preallocation steps (<see cref="Reserve"/>): as much again as the data file holds, within these bounds.</summary>
    internal const long MinPreallocateBytes = 1 << 20;

    internal const long MaxPreallocateBytes = 64 << 20;

    private const int PageSize = PageFacts.PageSize;

    /// <param name="directory">Where the data files are: preallocation is on when its filesystem is one where it pays.</param>
    public Preallocator(string directory) => Enabled = FileSpace.PaysOff(directory);

    /// <summary>Whether data files get their space ahead of the writes; off for good once the filesystem refuses.</summary>
    public bool Enabled { get; private set; }

    /// <summary>
    /// Before a write of [<paramref name="offset"/>, <paramref name="end"/>) in <paramref name="t"/>'s data file: where preallocation pays
    /// (<see cref="FileSpace"/>), makes sure the space up to there is allocated, taking as much again as the file holds
    /// (at least <see cref="MinPreallocateBytes"/>, at most <see cref="MaxPreallocateBytes"/>) so that a growing file asks
    /// rarely and a small one takes little. A refusal (disk full, not supported) only ends preallocation: the write
    /// itself then says whether the space is there.
    /// </summary>
    public void Reserve(TargetData t, long offset, long end)
    {
        if (!Enabled || end <= t.Allocated)
        {
            return;
        }

        // Never before the write: what lies between is a hole (nothing was written there) and stays one.
        long from = Math.Max(t.Allocated, offset);
        long to = Math.Max(end, from + Math.Clamp(from, MinPreallocateBytes, MaxPreallocateBytes));
        if (FileSpace.TryAllocate(t.File.SafeFileHandle, from, to - from))
        {
            t.Allocated = to;
        }
        else
        {
            Enabled = false;
        }
    }

    /// <summary>
    /// Gives back what <paramref name="t"/>'s data file holds past its pages: space preallocated past its end, and the
    /// zeros <see cref="TargetProvisioner"/> wrote that no page took (cutting the file to its pages' length does both).
    /// </summary>
    public static void Release(TargetData t)
    {
        long end = t.DataPages * PageSize;
        if (t.Allocated > end || RandomAccess.GetLength(t.File.SafeFileHandle) > end)
        {
            RandomAccess.SetLength(t.File.SafeFileHandle, end);
        }

        t.Allocated = 0;
    }
}

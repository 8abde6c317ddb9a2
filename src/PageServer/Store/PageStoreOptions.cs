using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// Limits and buffer sizes of one <see cref="PageStore"/>. Every limit is checked before anything of the run that
/// would exceed it is written, and exceeding one throws <see cref="PageStoreFullException"/>.
/// </summary>
public sealed record PageStoreOptions
{
    /// <summary>
    /// 64 GiB: a ceiling for when the agent passes nothing, so that a runaway or hostile peer cannot fill the disk.
    /// The agent passes the free space of the store's file system minus its reserve (<see cref="ForFreeSpace"/>).
    /// </summary>
    public const long DefaultMaxBytes = 64L << 30;

    /// <summary>
    /// 1024: every target (a task's or a shmem segment's pagemap) holds one open data file and one index; a tree
    /// of more than a thousand tasks and segments is not one workload, and a peer naming more is refused early.
    /// </summary>
    public const int DefaultMaxTargets = 1024;

    /// <summary>
    /// 2^26 pages (256 GiB of one task's memory): more than any host here carries, and a bound on the pages one
    /// target's run counts and index walks cost, whatever a peer sends (lazy and parent marks take no disk).
    /// </summary>
    public const long DefaultMaxPagesPerTarget = 1L << 26;

    /// <summary>
    /// 1 GiB of index memory over all targets: about 9 bytes a page when pages are dense (1 GiB indexes ~450 GiB of
    /// memory), but up to ~580 bytes a page when every page lies in its own 256 KiB chunk; this bounds what sparse
    /// runs (a hostile peer's, or a sparse heap's) can make the agent allocate.
    /// </summary>
    public const long DefaultMaxIndexBytes = 1L << 30;

    /// <summary>1 MiB: 256 pages per write system call, one buffer per store whatever the number of targets.</summary>
    public const int DefaultWriteBufferBytes = 1 << 20;

    /// <summary>4 MiB: reads and writes of that size when pages are copied into a <c>pages-N.img</c> in address order.</summary>
    public const int DefaultCopyBufferBytes = 4 << 20;

    /// <summary>Bytes the data files may hold in all, superseded copies included (they stay until the store is disposed).</summary>
    public long MaxBytes { get; init; } = DefaultMaxBytes;

    /// <summary>
    /// Whether a round's acknowledgement waits for the disk (fsync of the data files and the directory). Off by default:
    /// an acknowledged round is always written out of the agent's memory into the files (it survives the agent's crash),
    /// and nothing in a migration needs it to survive the machine's: the source keeps its copy until the target has
    /// restored, and after that the pages live in the restored process. On for a store meant to outlive a reboot.
    /// </summary>
    public bool SyncToDisk { get; init; }

    /// <summary>Distinct targets (pagemaps) the store accepts.</summary>
    public int MaxTargets { get; init; } = DefaultMaxTargets;

    /// <summary>Distinct page addresses (present, lazy or parent) one target may hold.</summary>
    public long MaxPagesPerTarget { get; init; } = DefaultMaxPagesPerTarget;

    /// <summary>Memory the page indexes of all targets may take (counted per 64-page chunk, <c>PageIndex.ChunkBytes</c> each).</summary>
    public long MaxIndexBytes { get; init; } = DefaultMaxIndexBytes;

    /// <summary>Size of the buffer that gathers incoming pages into large appends; at least one page.</summary>
    public int WriteBufferBytes { get; init; } = DefaultWriteBufferBytes;

    /// <summary>Size of the buffer that copies pages into <c>pages-N.img</c>; at least one page.</summary>
    public int CopyBufferBytes { get; init; } = DefaultCopyBufferBytes;

    /// <summary>
    /// When a target's data file already is its <c>pages-N.img</c> (pages appended in ascending address order, none
    /// superseded), rename it into the images directory instead of copying it. On by default: it is O(1) on one file
    /// system; off only to measure or test the copy.
    /// </summary>
    public bool MoveDataFiles { get; init; } = true;

    /// <summary>Options whose <see cref="MaxBytes"/> is the free space of <paramref name="directory"/>'s file system minus <paramref name="reserveBytes"/>.</summary>
    public static PageStoreOptions ForFreeSpace(string directory, long reserveBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(reserveBytes);
        long free = new DriveInfo(Path.GetFullPath(directory)).AvailableFreeSpace;
        return new PageStoreOptions { MaxBytes = Math.Max(0, free - reserveBytes) };
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first option out of range.</summary>
    public void Validate()
    {
        if (MaxBytes < 0)
        {
            throw new ArgumentException($"PageStoreOptions.MaxBytes is {MaxBytes}; it must be 0 or more", nameof(MaxBytes));
        }

        if (MaxTargets < 1)
        {
            throw new ArgumentException($"PageStoreOptions.MaxTargets is {MaxTargets}; it must be 1 or more", nameof(MaxTargets));
        }

        if (MaxPagesPerTarget < 1)
        {
            throw new ArgumentException($"PageStoreOptions.MaxPagesPerTarget is {MaxPagesPerTarget}; it must be 1 or more", nameof(MaxPagesPerTarget));
        }

        if (MaxIndexBytes < 0)
        {
            throw new ArgumentException($"PageStoreOptions.MaxIndexBytes is {MaxIndexBytes}; it must be 0 or more", nameof(MaxIndexBytes));
        }

        if (WriteBufferBytes < PageFacts.PageSize)
        {
            throw new ArgumentException($"PageStoreOptions.WriteBufferBytes is {WriteBufferBytes}; it must be at least one page ({PageFacts.PageSize})", nameof(WriteBufferBytes));
        }

        if (CopyBufferBytes < PageFacts.PageSize)
        {
            throw new ArgumentException($"PageStoreOptions.CopyBufferBytes is {CopyBufferBytes}; it must be at least one page ({PageFacts.PageSize})", nameof(CopyBufferBytes));
        }
    }
}

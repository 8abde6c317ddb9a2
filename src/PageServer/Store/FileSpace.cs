using Microsoft.Win32.SafeHandles;

namespace Migration.PageServer.Store;

/// <summary>
/// Disk space for the store's data files ahead of their writes (fallocate(2) with FALLOC_FL_KEEP_SIZE: the file's
/// length does not change), where that pays: on ext4, a write into blocks already allocated skips the delayed
/// allocation's bookkeeping for every block (reservation, quota, the extent status tree). 700 MiB written in 128 KiB
/// pwrites into a new file took 0.22-0.24 s of CPU, into one preallocated 64 MiB at a time 0.15-0.16 s (C loop,
/// 3 runs each, alternating). Elsewhere it is not used: on tmpfs it would take memory, not disk.
/// </summary>
internal static class FileSpace
{
    /// <summary>Is <paramref name="directory"/> on a filesystem where preallocation pays (ext4)?</summary>
    public static bool PaysOff(string directory)
    {
        var buffer = default(Libc.StatFs);
        return Libc.statfs(directory, ref buffer) == 0 && buffer.Type == Libc.EXT4_SUPER_MAGIC;
    }

    /// <summary>Allocates [offset, offset + length) without changing the file's length; false when the filesystem refuses (full, unsupported).</summary>
    public static bool TryAllocate(SafeFileHandle file, long offset, long length) =>
        Libc.fallocate(file, Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0;

    /// <summary>Frees the blocks of [offset, offset + length) (they read as zeros) without changing the file's length.</summary>
    public static bool TryPunch(SafeFileHandle file, long offset, long length) =>
        Libc.fallocate(file, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0;
}

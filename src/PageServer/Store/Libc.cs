using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Migration.PageServer.Store;

/// <summary>
/// The libc calls the store makes that .NET does not expose (<see cref="DirectorySync"/>, <see cref="FileSpace"/>).
/// Constants are Linux's; x86_64 and arm64 agree.
/// </summary>
internal static partial class Libc
{
    // open(2) flags.
    public const int O_RDONLY = 0;
    public const int O_DIRECTORY = 0x10000;
    public const int O_CLOEXEC = 0x80000;

    // fallocate(2) modes.
    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;

    /// <summary>statfs(2)'s f_type of ext4 (EXT4_SUPER_MAGIC).</summary>
    public const long EXT4_SUPER_MAGIC = 0xEF53;

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statfs(string path, ref StatFs buffer);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fallocate(SafeFileHandle fd, int mode, long offset, long length);

    /// <summary>struct statfs, of which only f_type (its first field on x86_64 and arm64) is read; sized beyond the kernel's 120 bytes.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 256)]
    public struct StatFs
    {
        public long Type;
    }
}

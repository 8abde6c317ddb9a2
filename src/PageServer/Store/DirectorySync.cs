using System.Runtime.InteropServices;

namespace Migration.PageServer.Store;

/// <summary>
/// fsync of a directory, which .NET does not expose: a file created since the last sync survives a crash only when
/// its directory entry is synced too (fsync(2)).
/// </summary>
internal static partial class DirectorySync
{
    // Linux's open(2) flags; x86_64 and arm64 agree.
    private const int O_RDONLY = 0;
    private const int O_DIRECTORY = 0x10000;
    private const int O_CLOEXEC = 0x80000;

    public static void Flush(string directory)
    {
        int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory {directory} to sync it: {Describe(Marshal.GetLastPInvokeError())}");
        }

        try
        {
            if (fsync(fd) != 0)
            {
                throw new IOException($"fsync of directory {directory} failed: {Describe(Marshal.GetLastPInvokeError())}");
            }
        }
        finally
        {
            _ = close(fd);
        }
    }

    private static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}

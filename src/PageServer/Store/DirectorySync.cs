using System.Runtime.InteropServices;

namespace Migration.PageServer.Store;

/// <summary>
/// fsync of a directory, which .NET does not expose: a file created since the last sync survives a crash only when
/// its directory entry is synced too (fsync(2)).
/// </summary>
internal static class DirectorySync
{
    public static void Flush(string directory)
    {
        int fd = Libc.open(directory, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory {directory} to sync it: {Describe(Marshal.GetLastPInvokeError())}");
        }

        try
        {
            if (Libc.fsync(fd) != 0)
            {
                throw new IOException($"fsync of directory {directory} failed: {Describe(Marshal.GetLastPInvokeError())}");
            }
        }
        finally
        {
            _ = Libc.close(fd);
        }
    }

    private static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
}

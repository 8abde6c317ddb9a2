using System.Runtime.InteropServices;

namespace Migration.Engine.Native;

/// <summary>The few libc calls the runtime does not expose. Constants are Linux's (x86_64 and arm64 agree).</summary>
internal static partial class Libc
{
    public const int AF_UNIX = 1;
    public const int SOCK_STREAM = 1;
    public const int SOCK_SEQPACKET = 5;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int F_GETFD = 1;
    public const int F_SETFD = 2;
    public const int FD_CLOEXEC = 1;
    public const int O_RDONLY = 0;
    public const int O_DIRECTORY = 0x10000;
    public const int O_CLOEXEC = 0x80000;
    public const int SIGKILL = 9;
    public const int SIGCONT = 18;
    public const int ESRCH = 3;
    public const int CLONE_NEWNET = 0x40000000;
    public const int AF_PACKET = 17;
    public const int SOCK_RAW = 3;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    public static unsafe partial int setsockopt(int fd, int level, int name, void* value, int length);

    [LibraryImport("libc", SetLastError = true)]
    public static unsafe partial int getsockopt(int fd, int level, int name, void* value, int* length);

    /// <summary>pidfd_open(2), Linux 5.3: a descriptor for process <paramref name="pid"/>.</summary>
    public static int pidfd_open(int pid) => (int)syscall(SYS_pidfd_open, pid, 0, 0);

    /// <summary>pidfd_getfd(2), Linux 5.6: a duplicate (close-on-exec) of descriptor <paramref name="fd"/> of the process of <paramref name="pidfd"/>.</summary>
    public static int pidfd_getfd(int pidfd, int fd) => (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);

    // The generic syscall numbers (include/uapi/asm-generic/unistd.h), the same on x86-64 and arm64 from 424 on.
    private const long SYS_pidfd_open = 434;
    private const long SYS_pidfd_getfd = 438;

    [LibraryImport("libc", SetLastError = true)]
    private static partial long syscall(long number, long a, long b, long c);

    [LibraryImport("libc", SetLastError = true)]
    public static unsafe partial nint sendto(int fd, byte* buf, nuint len, int flags, byte* addr, int addrlen);

    [LibraryImport("libc", SetLastError = true)]
    public static unsafe partial int socketpair(int domain, int type, int protocol, int* sv);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int kill(int pid, int sig);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int setns(int fd, int nstype);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int setsid();

    [LibraryImport("libc", SetLastError = true)]
    public static partial int dup2(int oldFd, int newFd);

    [LibraryImport("libc")]
    public static partial int getpid();

    public static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
}

/// <summary>An owned file descriptor that is closed exactly once.</summary>
internal sealed class OwnedFd : IDisposable
{
    private int _fd;

    public OwnedFd(int fd) => _fd = fd;

    public int Value => _fd >= 0 ? _fd : throw new ObjectDisposedException(nameof(OwnedFd));

    /// <summary>Opens a directory (close-on-exec) for handing to CRIU as an images or work directory.</summary>
    public static OwnedFd OpenDirectory(string path)
    {
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory {path}: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        }

        return new OwnedFd(fd);
    }

    /// <summary>Gives up ownership: the descriptor is someone else's to close now.</summary>
    public void Release() => _fd = -1;

    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
        {
            Libc.close(fd);
        }
    }
}

/// <summary>Connected AF_UNIX stream socket pairs, for handing one end to a CRIU process.</summary>
public static class SocketPair
{
    /// <summary>
    /// Both ends as sockets, close-on-exec. The second is for a CRIU process to inherit (the caller hands it over and
    /// closes its own copy); the first stays here.
    /// </summary>
    public static (System.Net.Sockets.Socket Ours, System.Net.Sockets.Socket Theirs) Connected()
    {
        var (ours, theirs) = Stream();
        int fd = theirs.Value;
        try
        {
            var socket = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(fd, ownsHandle: true));
            theirs.Release();
            return (ours, socket);
        }
        catch
        {
            ours.Dispose();
            theirs.Dispose();
            throw;
        }
    }

    /// <summary>Both ends close-on-exec: whoever hands an end to a child clears that flag under the spawn lock.</summary>
    internal static unsafe (System.Net.Sockets.Socket Ours, OwnedFd Theirs) Stream()
    {
        int* sv = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0, sv) != 0)
        {
            throw new IOException($"socketpair failed: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        }

        return (new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(sv[0], ownsHandle: true)), new OwnedFd(sv[1]));
    }
}

using Migration.Engine.Native;

namespace Migration.Engine.Tracking;

/// <summary>
/// A dirty-tracker call that failed. <see cref="Errno"/> is the kernel's error number (0 when the failure is not
/// a system call's), <see cref="Step"/> the step that failed ("ptrace", "UFFDIO_REGISTER", "PAGEMAP_SCAN", ...).
/// </summary>
public sealed class TrackerException : Exception
{
    public TrackerException(string message, int errno, string step)
        : base(message)
    {
        Errno = errno;
        Step = step;
    }

    public int Errno { get; }

    public string Step { get; }

    /// <summary>Builds "cannot {what} pid {pid}: {step}: {strerror} (errno N)" from an mt_* result (-errno).</summary>
    internal static TrackerException FromNative(string what, int pid, int result)
    {
        int errno = -result;
        var step = TrackerNative.LastStep();
        var text = $"cannot {what} pid {pid}: {(step.Length > 0 ? step + ": " : "")}{Libc.Describe(errno)}";
        var hint = Hint(errno, step);
        return new TrackerException(hint is null ? text : $"{text}; {hint}", errno, step);
    }

    private static string? Hint(int errno, string step) => errno switch
    {
        Codes.EPERM when step == "ptrace" => "tracking another user's process needs root (CAP_SYS_PTRACE)",
        Codes.EBUSY => "resume the process (SIGCONT) or detach the other tracer first",
        Codes.EOPNOTSUPP when step.StartsWith("seccomp", StringComparison.Ordinal) =>
            "pass allowSeccomp: true only if its filter allows userfaultfd() and close()",
        Codes.ESRCH => "the process has exited",
        _ => null,
    };

    private static class Codes
    {
        public const int EPERM = 1;
        public const int ESRCH = 3;
        public const int EBUSY = 16;
        public const int EOPNOTSUPP = 95;
    }
}

using System.Runtime.InteropServices;

namespace Migration.Engine.Processes;

/// <summary>
/// What a process does to outlive the one that started it: a session of its own (no signal to the starter's process
/// group or session reaches it) and standard output and error away from the starter's pipes.
/// </summary>
public static class DetachedProcess
{
    /// <summary>Makes this process the leader of a new session and process group (setsid(2)).</summary>
    /// <exception cref="IOException">setsid failed (this process already leads a process group).</exception>
    public static void NewSession()
    {
        if (Native.Libc.setsid() < 0)
        {
            throw new IOException($"setsid failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>
    /// Points standard output and error at /dev/null: a pipe of the starter is no longer held open by this process (its
    /// reader sees the end) nor written to once the starter is gone.
    /// </summary>
    public static void DetachStandardOutput()
    {
        using var devNull = File.OpenHandle("/dev/null", FileMode.Open, FileAccess.ReadWrite);
        int fd = (int)devNull.DangerousGetHandle();
        if (Native.Libc.dup2(fd, 1) < 0 || Native.Libc.dup2(fd, 2) < 0)
        {
            throw new IOException($"dup2 onto standard output failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }
}

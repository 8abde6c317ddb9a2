using System.Runtime.InteropServices;

namespace Migration.Tests.Common;

/// <summary>
/// Runs code on a thread of its own inside a network namespace (<c>/run/netns/NAME</c>): setns() changes only the
/// calling thread, and programs it starts inherit it. The code must stay synchronous on that thread: an await goes on
/// on a pool thread, outside the namespace.
/// </summary>
public static partial class InNetns
{
    private const int CloneNewNet = 0x40000000;

    public static T Run<T>(string netns, Func<T> work)
    {
        T result = default!;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle($"/run/netns/{netns}");
                if (setns((int)ns.DangerousGetHandle(), CloneNewNet) != 0)
                {
                    throw new IOException($"setns {netns}: errno {Marshal.GetLastPInvokeError()}");
                }

                result = work();
            }
            catch (Exception ex)
            {
                error = ex;
            }
        });
        thread.Start();
        thread.Join();
        if (error is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
        }

        return result;
    }

    public static void Run(string netns, Action work) => Run(netns, () =>
    {
        work();
        return 0;
    });

    [DllImport("libc", SetLastError = true)]
    private static extern int setns(int fd, int nstype);
}

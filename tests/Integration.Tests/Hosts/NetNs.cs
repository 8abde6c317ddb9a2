using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace Migration.Integration.Tests.Hosts;

/// <summary>Talks to sockets inside a network namespace from the test process.</summary>
public static partial class NetNs
{
    private const int CLONE_NEWNET = 0x40000000;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setns(int fd, int nstype);

    /// <summary>
    /// Creates a TCP socket that belongs to namespace <paramref name="name"/>: setns() on a fresh thread
    /// (it changes only that thread), socket() there, and the thread ends. The socket stays in that namespace.
    /// </summary>
    public static Socket CreateTcpSocket(string name)
    {
        Socket? socket = null;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle($"/run/netns/{name}");
                if (setns((int)ns.DangerousGetHandle(), CLONE_NEWNET) != 0)
                {
                    throw new IOException($"setns({name}) failed: errno {Marshal.GetLastPInvokeError()}");
                }

                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            }
            catch (Exception ex)
            {
                error = ex;
            }
        });
        thread.Start();
        thread.Join();
        return socket ?? throw new IOException($"cannot create a socket in netns {name}", error);
    }

    /// <summary>Sends one line to 127.0.0.1:port inside the namespace and returns the one-line answer.</summary>
    public static async Task<string> QueryAsync(string name, int port, string command, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        using var socket = CreateTcpSocket(name);
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), cts.Token);
            await socket.SendAsync(Encoding.ASCII.GetBytes(command + "\n"), SocketFlags.None, cts.Token);
            var buffer = new byte[4096];
            var answer = new StringBuilder();
            int n;
            while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token)) > 0)
            {
                answer.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }

            return answer.ToString().Trim();
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"'{command}' to port {port} in netns {name}: no answer within {timeout.TotalSeconds} s");
        }
    }

    /// <summary>The nftables tables of namespace <paramref name="name"/> ("table inet CRIU-..." lines).</summary>
    public static async Task<string> NftTablesAsync(string name) =>
        await Run.CheckedAsync("nsenter", $"--net=/run/netns/{name}", "nft", "list", "tables");

    /// <summary>The network namespace of a process as the kernel names it ("net:[4026532...]"), or null when gone.</summary>
    public static string? OfProcess(int pid)
    {
        try
        {
            return new FileInfo($"/proc/{pid}/ns/net").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}

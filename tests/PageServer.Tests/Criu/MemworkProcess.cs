using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Migration.Engine.Processes;

namespace Migration.PageServer.Tests.Criu;

/// <summary>
/// native/bin/memwork (see the header comment of native/workload/memwork.c) as init of its own pid namespace:
/// <c>unshare -pf setsid memwork ...</c>. Found through /proc by its unique data-file path. Dispose kills memwork
/// and its unshare parent.
/// </summary>
public sealed class MemworkProcess : IAsyncDisposable
{
    private readonly Process _unshare;

    private MemworkProcess(Process unshare, string dataFile, int port)
    {
        _unshare = unshare;
        DataFile = dataFile;
        Port = port;
    }

    public string DataFile { get; }

    public int Port { get; }

    /// <summary>memwork's pid in this (the test's) pid namespace; 0 until found.</summary>
    public int Pid { get; private set; }

    public static string BinaryPath
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            {
                if (File.Exists(Path.Combine(d.FullName, "Migration.sln")))
                {
                    var path = Path.Combine(d.FullName, "native", "bin", "memwork");
                    return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing: run make -C native (scripts/setup.sh does)");
                }
            }

            throw new DirectoryNotFoundException("Migration.sln not found above the test directory");
        }
    }

    public static async Task<MemworkProcess> StartAsync(string dataFile, int mib)
    {
        var binary = BinaryPath;
        int port = FreePort();
        var psi = new ProcessStartInfo("unshare")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in new[]
        {
            "-pf", "setsid", binary, "--mib", mib.ToString(CultureInfo.InvariantCulture), "--port", port.ToString(CultureInfo.InvariantCulture),
            "--file", dataFile, "--mix", "--stdio-null",
        })
        {
            psi.ArgumentList.Add(arg);
        }

        var unshare = Process.Start(psi) ?? throw new InvalidOperationException("unshare did not start");
        var stderr = unshare.StandardError.ReadToEndAsync();
        var memwork = new MemworkProcess(unshare, dataFile, port);
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                memwork.Pid = memwork.FindPid();
                if (memwork.Pid != 0 && await memwork.PingAsync())
                {
                    return memwork;
                }

                if (unshare.HasExited || DateTime.UtcNow > deadline)
                {
                    string why = unshare.HasExited ? $"unshare exited with {unshare.ExitCode}" : "30 s passed";
                    throw new TimeoutException($"memwork did not answer PING on port {port} ({why}): {(stderr.IsCompleted ? await stderr : "")}");
                }

                await Task.Delay(100);
            }
        }
        catch
        {
            await memwork.DisposeAsync();
            throw;
        }
    }

    /// <summary>memwork's pid as its own pid namespace sees it (the last NSpid entry): CRIU's vpid.</summary>
    public uint VirtualPid()
    {
        var line = File.ReadLines($"/proc/{Pid}/status").First(l => l.StartsWith("NSpid:", StringComparison.Ordinal));
        return uint.Parse(line.Split('\t', StringSplitOptions.RemoveEmptyEntries)[^1], CultureInfo.InvariantCulture);
    }

    public long ResidentBytes() => (long)ProcessTree.ResidentBytes(Pid);

    /// <summary>
    /// Where memwork's buffer of <paramref name="bytes"/> bytes starts. The kernel may merge it with a neighbouring
    /// anonymous mapping (a thread stack), so it is found by content: page 1 is the first text page, read through
    /// /proc/PID/mem in the anonymous rw-p mappings large enough to hold the buffer.
    /// </summary>
    public ulong FindBuffer(ulong bytes)
    {
        const int PageSize = 4096;
        var marker = Encoding.ASCII.GetBytes($"memwork page 1 seed 1: the quick brown fox");
        var maps = File.ReadAllLines($"/proc/{Pid}/maps");
        using var mem = new FileStream($"/proc/{Pid}/mem", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
        var page = new byte[PageSize];
        var found = new List<ulong>();
        foreach (var line in maps)
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var range = fields[0].Split('-');
            ulong start = ulong.Parse(range[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            ulong end = ulong.Parse(range[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (end - start < bytes || fields[1] != "rw-p" || fields.Length != 5)
            {
                continue;
            }

            for (ulong a = start + PageSize; a + bytes - PageSize <= end; a += PageSize)
            {
                mem.Position = (long)a;
                mem.ReadExactly(page);
                if (page.AsSpan().StartsWith(marker))
                {
                    found.Add(a - PageSize);
                }
            }
        }

        return found.Count == 1 ? found[0] : throw new InvalidOperationException(
            $"expected memwork's buffer once in its anonymous mappings, found it {found.Count} times:\n{string.Join('\n', maps)}");
    }

    public async ValueTask DisposeAsync()
    {
        if (Pid != 0)
        {
            ProcessTree.SignalAll([Pid], 9);
        }

        try
        {
            if (!_unshare.HasExited)
            {
                _unshare.Kill(entireProcessTree: true);
            }

            await _unshare.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
        {
            // Already gone, or it will be reaped with the test process: nothing more to do in cleanup.
        }

        _unshare.Dispose();
    }

    private int FindPid()
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline"));
                if (cmdline.StartsWith(BinaryPath + "\0", StringComparison.Ordinal) && cmdline.Contains(DataFile, StringComparison.Ordinal) && ProcessTree.IsAlive(pid))
                {
                    return pid;
                }
            }
            catch (IOException)
            {
                // Exited while we looked.
            }
        }

        return 0;
    }

    private async Task<bool> PingAsync()
    {
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, Port).WaitAsync(TimeSpan.FromSeconds(2));
            var stream = client.GetStream();
            await stream.WriteAsync("PING\n"u8.ToArray());
            var buffer = new byte[64];
            int n = await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(2));
            return Encoding.ASCII.GetString(buffer, 0, n).StartsWith("PONG", StringComparison.Ordinal);
        }
        catch (Exception ex) when (ex is IOException or SocketException or TimeoutException)
        {
            return false; // not listening yet: the buffer is still being filled
        }
    }

    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Any, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    /// <summary>memwork's splitmix64 (see its header comment).</summary>
    public static ulong SplitMix64(ulong x)
    {
        ulong z = x + 0x9e3779b97f4a7c15;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        return z ^ (z >> 31);
    }

    /// <summary>What memwork --mix with seed <paramref name="seed"/> holds in its page <paramref name="page"/> (null: a zero page it never touches).</summary>
    public static byte[]? ExpectedPage(long page, ulong seed)
    {
        const int PageSize = 4096;
        var bytes = new byte[PageSize];
        switch (page % 3)
        {
            case 0:
                return null;
            case 1:
                var text = Encoding.ASCII.GetBytes($"memwork page {page} seed {seed}: the quick brown fox jumps over the lazy dog. ");
                for (int i = 0; i < PageSize; i++)
                {
                    bytes[i] = text[i % text.Length];
                }

                return bytes;
            default:
                for (int o = 0; o < PageSize; o += 8)
                {
                    ulong w = (ulong)((page * PageSize) + o) / 8;
                    System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(o), SplitMix64(seed ^ w));
                }

                return bytes;
        }
    }
}

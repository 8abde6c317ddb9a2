using System.Globalization;
using Migration.Engine.Processes;

namespace Migration.Integration.Tests.Hosts;

/// <summary>
/// The memwork test workload (native/workload/memwork.c) as init of its own pid namespace on a host:
/// known memory pattern, an open file, a listening socket, a 1 ms heartbeat. Found by a marker in its
/// command line (its data file path), so both the original and a restored copy can be located.
/// </summary>
public sealed class Workload : IAsyncDisposable
{
    private readonly BackgroundProcess _launcher;

    private Workload(BackgroundProcess launcher, string dataFile, int port)
    {
        _launcher = launcher;
        DataFile = dataFile;
        Port = port;
    }

    public string DataFile { get; }

    public int Port { get; }

    public static async Task<Workload> StartAsync(TestHosts hosts, int mib, int port = 9000, bool mix = true, int writeRate = 0, bool zeroPresent = false,
        int sparse = 1, bool unpaced = false)
    {
        var dataFile = Path.Combine(hosts.Root, $"memwork-{Guid.NewGuid():N}.dat");
        var args = new List<string>(TestHosts.On(hosts.Source))
        {
            "setsid", "unshare", "-pf", "setsid", Binaries.Memwork,
            "--mib", mib.ToString(CultureInfo.InvariantCulture), "--port", port.ToString(CultureInfo.InvariantCulture),
            "--file", dataFile, "--stdio-null",
        };
        if (mix)
        {
            args.Add("--mix");
        }

        if (zeroPresent)
        {
            args.Add("--zero-present");
        }

        if (sparse > 1)
        {
            args.AddRange(["--sparse", sparse.ToString(CultureInfo.InvariantCulture)]);
        }

        if (unpaced)
        {
            args.AddRange(["--write-rate", "max"]);
        }
        else if (writeRate > 0)
        {
            args.AddRange(["--write-rate", writeRate.ToString(CultureInfo.InvariantCulture)]);
        }

        var w = new Workload(new BackgroundProcess("nsenter", args), dataFile, port);
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                if (w.Pids().Count == 1)
                {
                    try
                    {
                        if ((await NetNs.QueryAsync(hosts.Source, port, "PING", TimeSpan.FromSeconds(2))).StartsWith("PONG", StringComparison.Ordinal))
                        {
                            break;
                        }
                    }
                    catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or TimeoutException)
                    {
                        // Not listening yet: the buffer is still being filled.
                    }
                }

                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"memwork did not answer PING within 30 s: {w._launcher.Output}");
                }

                await Task.Delay(100);
            }
        }
        catch
        {
            await w.DisposeAsync();
            throw;
        }

        return w;
    }

    /// <summary>Live (non-zombie) memwork processes of this workload, in any namespace, original or restored.</summary>
    public IReadOnlyList<int> Pids()
    {
        var result = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline"));
                if (cmdline.StartsWith(Binaries.Memwork + "\0", StringComparison.Ordinal) && cmdline.Contains(DataFile, StringComparison.Ordinal) && ProcessTree.IsAlive(pid))
                {
                    result.Add(pid);
                }
            }
            catch (IOException)
            {
                // Exited while we looked.
            }
        }

        return result;
    }

    /// <summary>The one live copy; fails if there are none or several.</summary>
    public int SinglePid()
    {
        var pids = Pids();
        return pids.Count == 1 ? pids[0] : throw new InvalidOperationException($"expected exactly one live copy of the workload, found {pids.Count}: {string.Join(", ", pids)}");
    }

    /// <summary>STATUS from the workload on the given host, parsed into key=value pairs.</summary>
    public async Task<IReadOnlyDictionary<string, string>> StatusAsync(string netns)
    {
        var line = await NetNs.QueryAsync(netns, Port, "STATUS", TimeSpan.FromSeconds(20));
        if (!line.StartsWith("OK ", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"unexpected STATUS answer: {line}");
        }

        return line[3..].Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(kv => kv.Split('=', 2))
            .ToDictionary(kv => kv[0], kv => kv.Length > 1 ? kv[1] : "");
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var pid in Pids())
        {
            ProcessTree.SignalAll([pid], 9);
        }

        await _launcher.DisposeAsync();
    }
}

using System.Globalization;
using Migration.Engine.Processes;

namespace Migration.Integration.Tests.Hosts;

/// <summary>
/// A program nobody here wrote (redis-server, nginx, python3, a JVM) run on the source host as init of its own pid
/// namespace, like <see cref="Workload"/>. Its tree is found by a marker, a path unique to the test that the program
/// keeps in its command line (its config file, its directory), so the original and a restored copy are both found.
/// </summary>
public sealed class ServerTree : IAsyncDisposable
{
    private readonly BackgroundProcess _launcher;

    private ServerTree(BackgroundProcess launcher, string marker)
    {
        _launcher = launcher;
        Marker = marker;
    }

    public string Marker { get; }

    /// <summary>What the launcher and the program printed (nsenter, unshare and the server's own stderr).</summary>
    public string Output => _launcher.Output;

    /// <summary>
    /// Starts <paramref name="command"/> on <paramref name="netns"/> and waits until <paramref name="ready"/> says it
    /// serves; <paramref name="marker"/> must be part of its command line for as long as it runs.
    /// </summary>
    public static async Task<ServerTree> StartAsync(string netns, string marker, IReadOnlyList<string> command, Func<Task<bool>> ready, TimeSpan timeout)
    {
        var args = new List<string>(TestHosts.On(netns)) { "setsid", "unshare", "-pf", "setsid" };
        args.AddRange(command);
        var tree = new ServerTree(new BackgroundProcess("nsenter", args), marker);
        try
        {
            var deadline = DateTime.UtcNow + timeout;
            while (true)
            {
                if (tree.Roots().Count == 1)
                {
                    try
                    {
                        if (await ready())
                        {
                            return tree;
                        }
                    }
                    catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or TimeoutException or InvalidOperationException)
                    {
                        // Not serving yet.
                    }
                }

                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"{command[0]} did not serve within {timeout.TotalSeconds} s: {tree.Output}");
                }

                await Task.Delay(100);
            }
        }
        catch
        {
            await tree.DisposeAsync();
            throw;
        }
    }

    /// <summary>Live roots of the tree (the init of its pid namespace), original or restored.</summary>
    public IReadOnlyList<int> Roots() => Processes().Where(p => p.NsPid == 1).Select(p => p.Pid).ToArray();

    /// <summary>The one live root; fails if there are none or several.</summary>
    public int SingleRoot()
    {
        var roots = Roots();
        return roots.Count == 1 ? roots[0] : throw new InvalidOperationException($"expected exactly one live copy of the tree, found {roots.Count}: {string.Join(", ", roots)}");
    }

    /// <summary>
    /// Every live process of every copy of the tree, with its pid inside the tree's pid namespace: the roots (marker in
    /// the command line, pid 1 inside) and their descendants (which may have retitled themselves: nginx's workers).
    /// </summary>
    public IReadOnlyList<(int Pid, int NsPid)> Processes()
    {
        var all = new List<(int Pid, int PPid, int NsPid, bool Marked)>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            try
            {
                // "PPid:\t4710" and "NSpid:\t4711\t1": the last NSpid field is its pid in the innermost namespace.
                var status = File.ReadAllLines(Path.Combine(dir, "status"));
                int ppid = int.Parse(status.First(l => l.StartsWith("PPid:", StringComparison.Ordinal))[5..].Trim(), CultureInfo.InvariantCulture);
                var nspid = status.First(l => l.StartsWith("NSpid:", StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries);
                if (ProcessTree.IsAlive(pid))
                {
                    all.Add((pid, ppid, int.Parse(nspid[^1], CultureInfo.InvariantCulture),
                        File.ReadAllText(Path.Combine(dir, "cmdline")).Contains(Marker, StringComparison.Ordinal)));
                }
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException or FormatException)
            {
                // Exited while we looked.
            }
        }

        var members = all.Where(p => p.Marked && p.NsPid == 1).Select(p => p.Pid).ToHashSet();
        for (bool grew = true; grew;)
        {
            grew = false;
            foreach (var p in all.Where(p => !members.Contains(p.Pid) && members.Contains(p.PPid)))
            {
                grew |= members.Add(p.Pid);
            }
        }

        return all.Where(p => members.Contains(p.Pid)).Select(p => (p.Pid, p.NsPid)).ToArray();
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var (pid, _) in Processes())
        {
            ProcessTree.SignalAll([pid], 9);
        }

        await _launcher.DisposeAsync();
    }
}

using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Migration.Tests.Common;
using Xunit;

namespace Migration.PageServer.Tests.Store;

/// <summary>
/// The store against real CRIU: a dump's pages go through a <see cref="PageStore"/> in two rounds (the first with
/// some pages wrong, the second re-sending them right), the store composes the images, and <c>criu restore</c>
/// brings back a workload that verifies every byte of its memory.
/// </summary>
public sealed class PageStoreCriuTests : IDisposable
{
    private const int MaxPagesPerCall = 64;
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(15);

    private readonly TempDirectory _tmp = new("pagestore-criu");

    public void Dispose() => _tmp.Dispose();

    [RequiresRootFact]
    public async Task DumpThroughTheStore_RestoresAWorkloadWithIntactMemory()
    {
        string criu = CriuOptions.Locate();
        string memwork = await EnsureMemworkAsync();
        string dataFile = Path.Combine(_tmp.Path, $"memwork-{Guid.NewGuid():N}.dat");
        string dumpDir = _tmp.Sub("images");
        int port = FreePort();

        var start = new ProcessStartInfo("unshare") { UseShellExecute = false, RedirectStandardError = true };
        foreach (var arg in new[] { "-pf", "setsid", memwork, "--mib", "16", "--port", Num(port), "--file", dataFile, "--mix", "--stdio-null" })
        {
            start.ArgumentList.Add(arg);
        }

        using var unshare = Process.Start(start) ?? throw new InvalidOperationException("unshare did not start");
        try
        {
            int pid = await WaitForPidAsync(memwork, dataFile, "memwork to start under unshare", unshare);
            Assert.Contains("verify=ok", await StatusAsync(port, "memwork before the dump"), StringComparison.Ordinal);

            await RunCriuAsync(criu, dumpDir, "dump.log", "dump", "-t", Num(pid), "-D", dumpDir, "-o", "dump.log", "-v4");
            await Step(unshare.WaitForExitAsync(), "unshare to exit after the dump killed memwork");
            Assert.Empty(FindPids(memwork, dataFile));

            var dumped = Directory.GetFiles(dumpDir, "pagemap-*.img");
            Assert.NotEmpty(dumped);
            using var store = new PageStore(_tmp.Sub("store"));
            var resend = await FeedRoundOneAsync(store, dumpDir, dumped);
            await store.CompleteRoundAsync(CancellationToken.None);
            // Round 2 adds to the same layout (no second OPEN: that would start a fresh one, see PageStoreReopenTests).
            foreach (var (target, vaddr, data) in resend)
            {
                await store.WritePagesAsync(target, vaddr, (uint)(data.Length / PageFacts.PageSize), PagemapFlags.Present, new ReadOnlySequence<byte>(data), CancellationToken.None);
            }

            await store.CompleteRoundAsync(CancellationToken.None);
            Assert.True(store.Stats.PagesOverwritten > 0);

            foreach (var f in Directory.GetFiles(dumpDir, "pagemap-*.img").Concat(Directory.GetFiles(dumpDir, "pages-*.img")))
            {
                File.Delete(f);
            }

            var composed = store.WriteImages(dumpDir);
            Assert.Equal(dumped.Length, composed.Count);
            // Round 2's newer copies were written in place over round 1's (which arrived in address order): the data
            // file stayed a pages image in image order and was moved into place, no copy.
            Assert.All(composed, c => Assert.True(c.Moved));

            await RunCriuAsync(criu, dumpDir, "restore.log", "restore", "-D", dumpDir, "-o", "restore.log", "-v4", "-d");
            await WaitForPidAsync(memwork, dataFile, "the restored memwork to appear");
            string status = await StatusAsync(port, "the restored memwork");
            Assert.Contains("verify=ok", status, StringComparison.Ordinal);
            Assert.Contains("file=ok", status, StringComparison.Ordinal);
        }
        finally
        {
            foreach (int pid in FindPids(memwork, dataFile))
            {
                KillQuietly(pid);
            }

            if (!unshare.HasExited)
            {
                unshare.Kill(entireProcessTree: true);
            }

            await Step(unshare.WaitForExitAsync(), "unshare to exit");
        }
    }

    /// <summary>
    /// Round 1 as a stream would send it: every pagemap's runs in order, present runs cut into calls of at most
    /// 64 pages. Every 5th call carries wrong bytes and every 7th is sent again unchanged; both are returned for round 2.
    /// </summary>
    private static async Task<List<(PageTarget Target, ulong Vaddr, byte[] Data)>> FeedRoundOneAsync(PageStore store, string dumpDir, string[] pagemaps)
    {
        var resend = new List<(PageTarget, ulong, byte[])>();
        int call = 0;
        foreach (var path in pagemaps)
        {
            var target = TargetOf(Path.GetFileName(path));
            PagemapImage image;
            using (var f = File.OpenRead(path))
            {
                image = PagemapImage.Read(f, path);
            }

            await store.OpenAsync(target, CancellationToken.None);
            using var pages = File.OpenRead(Path.Combine(dumpDir, $"pages-{image.PagesId}.img"));
            foreach (var run in image.Runs)
            {
                if (!run.Flags.HasFlag(PagemapFlags.Present))
                {
                    await store.WritePagesAsync(target, run.Vaddr, (uint)run.NrPages, run.Flags, ReadOnlySequence<byte>.Empty, CancellationToken.None);
                    continue;
                }

                for (ulong done = 0; done < run.NrPages;)
                {
                    int n = (int)Math.Min(MaxPagesPerCall, run.NrPages - done);
                    ulong vaddr = run.Vaddr + (done * PageFacts.PageSize);
                    var data = new byte[n * PageFacts.PageSize];
                    pages.ReadExactly(data);
                    var sent = data;
                    if (++call % 5 == 0)
                    {
                        sent = data.Select(b => (byte)(b ^ 0xa5)).ToArray();
                        resend.Add((target, vaddr, data));
                    }
                    else if (call % 7 == 0)
                    {
                        resend.Add((target, vaddr, data));
                    }

                    await store.WritePagesAsync(target, vaddr, (uint)n, run.Flags, new ReadOnlySequence<byte>(sent), CancellationToken.None);
                    done += (ulong)n;
                }
            }
        }

        Assert.NotEmpty(resend);
        return resend;
    }

    private static PageTarget TargetOf(string pagemapName)
    {
        string id = pagemapName["pagemap-".Length..^".img".Length];
        return id.StartsWith("shmem-", StringComparison.Ordinal)
            ? new PageTarget(uint.Parse(id["shmem-".Length..], CultureInfo.InvariantCulture), PageImageType.Shmem)
            : new PageTarget(uint.Parse(id, CultureInfo.InvariantCulture), PageImageType.Pid);
    }

    private static async Task RunCriuAsync(string criu, string dir, string log, params string[] args)
    {
        var (code, output) = await RunAsync(criu, args);
        if (code != 0)
        {
            string logPath = Path.Combine(dir, log);
            string tail = File.Exists(logPath) ? string.Join('\n', File.ReadLines(logPath).TakeLast(30)) : "(no log)";
            Assert.Fail($"criu {args[0]} exited with {code}: {output}\n{logPath} ends:\n{tail}");
        }
    }

    private static async Task<(int Code, string Output)> RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"{file} did not start");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            await Step(p.WaitForExitAsync(), $"{file} {string.Join(' ', args)}");
        }
        finally
        {
            if (!p.HasExited)
            {
                p.Kill(entireProcessTree: true);
            }
        }

        return (p.ExitCode, (await stdout) + (await stderr));
    }

    /// <summary>native/bin/memwork of this checkout (built with make when missing), found above the test binaries or this source file.</summary>
    private static async Task<string> EnsureMemworkAsync([CallerFilePath] string sourceFile = "")
    {
        string? dir = FindAbove(AppContext.BaseDirectory) ?? FindAbove(Path.GetDirectoryName(sourceFile));
        Assert.True(dir is not null, $"no native/Makefile above {AppContext.BaseDirectory} or {sourceFile}");
        string native = Path.Combine(dir, "native");
        string memwork = Path.Combine(native, "bin", "memwork");
        if (!File.Exists(memwork))
        {
            var (code, output) = await RunAsync("make", "-C", native);
            Assert.True(code == 0, $"make -C {native} failed: {output}");
        }

        return memwork;
    }

    private static string? FindAbove(string? dir)
    {
        while (dir is not null && !File.Exists(Path.Combine(dir, "native", "Makefile")))
        {
            dir = Path.GetDirectoryName(dir);
        }

        return dir;
    }

    /// <summary>Pids of processes running <paramref name="memwork"/> on <paramref name="dataFile"/> (unique per test), from /proc/*/cmdline.</summary>
    private static List<int> FindPids(string memwork, string dataFile)
    {
        var pids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            string[] argv;
            try
            {
                argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
            }
            catch (IOException)
            {
                continue; // Safe: the process ended while we looked.
            }
            catch (UnauthorizedAccessException)
            {
                continue; // Safe: not ours to see.
            }

            if (argv.Length > 1 && argv[0] == memwork && argv.Contains(dataFile))
            {
                pids.Add(pid);
            }
        }

        return pids;
    }

    private static async Task<int> WaitForPidAsync(string memwork, string dataFile, string what, Process? launcher = null)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < StartTimeout)
        {
            if (launcher is { HasExited: true })
            {
                Assert.Fail($"waiting for {what}: the launcher exited with {launcher.ExitCode}: {await launcher.StandardError.ReadToEndAsync()}");
            }

            var pids = FindPids(memwork, dataFile);
            if (pids.Count == 1)
            {
                return pids[0];
            }

            Assert.True(pids.Count == 0, $"waiting for {what}: {pids.Count} memwork processes on {dataFile}");
            await Task.Delay(50);
        }

        throw new TimeoutException($"waiting for {what}: no memwork process on {dataFile} after {StartTimeout.TotalSeconds} s");
    }

    /// <summary>memwork's STATUS line; retried until it listens (it fills its memory first).</summary>
    private static async Task<string> StatusAsync(int port, string what)
    {
        var deadline = Stopwatch.StartNew();
        Exception? last = null;
        while (deadline.Elapsed < StartTimeout)
        {
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                using var client = new TcpClient();
                await client.ConnectAsync(IPAddress.Loopback, port, cts.Token);
                var net = client.GetStream();
                await net.WriteAsync("STATUS\n"u8.ToArray(), cts.Token);
                using var reader = new StreamReader(net, Encoding.ASCII);
                string? line = await reader.ReadLineAsync(cts.Token);
                if (line is not null)
                {
                    return line;
                }
            }
            catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException)
            {
                last = ex; // Safe: not listening yet; retried until the deadline.
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"STATUS of {what} on port {port}: no answer after {StartTimeout.TotalSeconds} s ({last?.Message})");
    }

    private static async Task Step(Task task, string what)
    {
        try
        {
            await task.WaitAsync(StepTimeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"hung waiting for {what} ({StepTimeout.TotalSeconds} s)");
        }
    }

    private static void KillQuietly(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            p.Kill();
        }
        catch (ArgumentException)
        {
            // Safe: it is already gone.
        }
        catch (InvalidOperationException)
        {
            // Safe: it exited between the lookup and the kill.
        }
    }

    private static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    private static string Num(int n) => n.ToString(CultureInfo.InvariantCulture);
}

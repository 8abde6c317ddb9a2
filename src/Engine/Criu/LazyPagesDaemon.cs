using System.Diagnostics;

namespace Migration.Engine.Criu;

/// <summary>
/// <c>criu lazy-pages</c> for one restore: started before <c>criu restore --lazy-pages</c>, it receives the restored
/// tasks' userfaultfds over <c>lazy-pages.socket</c> in the work directory, fills every lazy page from the images
/// (on fault first, the rest in the background) and exits when all are in. The images must stay until then.
/// </summary>
public sealed class LazyPagesDaemon : IAsyncDisposable
{
    /// <summary>CRIU's socket name (criu/uffd.c), relative to the work directory both processes run in.</summary>
    public const string SocketName = "lazy-pages.socket";

    private readonly Process _process;
    private readonly BoundedOutput _output = new(16 * 1024);
    private readonly long _started = Stopwatch.GetTimestamp();

    private LazyPagesDaemon(Process process, string logPath)
    {
        _process = process;
        LogPath = logPath;
        _output.Capture(_process);
        Exited = WaitAsync();
    }

    public int Pid => _process.Id;

    public string LogPath { get; }

    /// <summary>Completes when the daemon exits, with its exit code (0: every lazy page was filled).</summary>
    public Task<int> Exited { get; }

    /// <summary>
    /// Whether the daemon has exited, asked of the kernel now (a child that just died is reaped here), not only when
    /// <see cref="Exited"/> has caught up.
    /// </summary>
    public bool HasExited => _process.HasExited;

    /// <summary>The exit code once it has exited (see <see cref="HasExited"/>), else null.</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>Kills the daemon (SIGKILL) and waits for it; it stays to be disposed. For fault injection.</summary>
    public async Task KillAsync()
    {
        try
        {
            _process.Kill(entireProcessTree: false);
        }
        catch (InvalidOperationException)
        {
            // It had exited already.
        }

        await Exited.ConfigureAwait(false);
    }

    /// <summary>Time from start to exit (or to now).</summary>
    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_started);

    /// <summary>What criu printed outside its log (early failures).</summary>
    public string Output => _output.ToString();

    /// <summary>
    /// Starts the daemon and returns once it listens for the restore (or throws with its reason), with the page server
    /// end of a connected socket pair whose other end it inherits (--page-server --ps-socket): CRIU's daemon cannot take
    /// lazy pages from local parent images, and a socket of our own needs no port.
    /// </summary>
    public static async Task<(LazyPagesDaemon Daemon, System.Net.Sockets.Socket PageServer)> StartServedAsync(CriuOptions options, string imagesDir,
        string workDir, string logFile, TimeSpan readyTimeout, CancellationToken ct)
    {
        // The daemon inherits one end; the caller serves the other (it must, or the daemon's first request waits forever).
        var (ours, theirs) = Native.SocketPair.Stream();
        try
        {
            var daemon = await StartAsync(options, imagesDir, workDir, logFile, theirs.Value, readyTimeout, ct).ConfigureAwait(false);
            return (daemon, ours);
        }
        catch
        {
            ours.Dispose();
            throw;
        }
        finally
        {
            theirs.Dispose();
        }
    }

    internal static async Task<LazyPagesDaemon> StartAsync(CriuOptions options, string imagesDir, string workDir, string logFile, int pageServerFd,
        TimeSpan readyTimeout, CancellationToken ct)
    {
        var socket = Path.Combine(workDir, SocketName);
        File.Delete(socket);
        var psi = new ProcessStartInfo(options.CriuPath)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        string fd = pageServerFd.ToString(System.Globalization.CultureInfo.InvariantCulture);
        foreach (var arg in new[] { "lazy-pages", "--images-dir", imagesDir, "--work-dir", workDir, "--log-file", logFile, $"-v{options.LogLevel}",
            "--page-server", "--ps-socket", fd })
        {
            psi.ArgumentList.Add(arg);
        }

        Process process;
        try
        {
            process = CriuSwrk.SpawnInheriting(psi, pageServerFd);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new CriuException("lazy-pages", $"cannot start '{options.CriuPath} lazy-pages': {ex.Message}", [], null, ex);
        }

        var daemon = new LazyPagesDaemon(process, Path.Combine(workDir, logFile));
        var deadline = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (daemon.Exited.IsCompleted || deadline.Elapsed > readyTimeout || ct.IsCancellationRequested)
            {
                string why = daemon.Exited.IsCompleted ? $"exited with code {daemon.Exited.Result}" : $"not listening after {deadline.Elapsed.TotalMilliseconds:0} ms";
                await daemon.DisposeAsync().ConfigureAwait(false);
                throw new CriuException("lazy-pages", $"criu lazy-pages {why}. {daemon.Output.Trim()}", CriuLog.ReadErrors(daemon.LogPath), daemon.LogPath);
            }

            await Task.Delay(2, CancellationToken.None).ConfigureAwait(false);
        }

        return daemon;
    }

    private async Task<int> WaitAsync()
    {
        await _process.WaitForExitAsync().ConfigureAwait(false);
        return _process.ExitCode;
    }

    /// <summary>Kills the daemon if it still runs (a restore that failed or was aborted), and waits for it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            try
            {
                _process.Kill(entireProcessTree: false);
            }
            catch (InvalidOperationException)
            {
                // It exited between the check and the kill.
            }
        }

        await Exited.ConfigureAwait(false);
        _process.Dispose();
    }
}

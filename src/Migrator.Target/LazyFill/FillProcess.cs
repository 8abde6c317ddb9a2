using System.Diagnostics;
using System.Globalization;
using Migration.Engine.Criu;
using Migration.Engine.Processes;

namespace Migration.Target.LazyFill;

/// <summary>
/// The agent's handle on a lazy fill process (<see cref="FillServer"/>): launched ahead (at Begin, so that its start
/// costs no downtime), told to start <c>criu lazy-pages</c> at the restore and given the restored tree after
/// it. The fill does not depend on this handle or on the agent: dropping the handle (<see cref="Detach"/>) leaves it
/// running; only <see cref="KillAsync"/> and <see cref="DisposeAsync"/> stop it.
/// </summary>
internal sealed class FillProcess : IAsyncDisposable
{
    /// <summary>How long the fill process may take to answer <c>start</c>, over the daemon's own readiness.</summary>
    private static readonly TimeSpan AnswerTimeout = TimeSpan.FromSeconds(45);

    /// <summary>How long a killed daemon's fill process may take to exit before it is killed too.</summary>
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(10);

    private readonly Process _process;
    private readonly string _workDir;
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly Task<string> _stderr;
    private bool _detached;

    private FillProcess(Process process, string workDir)
    {
        _process = process;
        _workDir = workDir;
        _stderr = ReadBoundedAsync(process.StandardError);
        Exited = WaitAsync();
    }

    /// <summary>The fill process.</summary>
    public int Pid => _process.Id;

    /// <summary><c>criu lazy-pages</c> (its child), once started; 0 before.</summary>
    public int CriuPid { get; private set; }

    /// <summary>CRIU's log of the daemon.</summary>
    public string LogPath => Path.Combine(_workDir, "lazy-pages.log");

    /// <summary>The fill process's own log.</summary>
    public string FillLogPath => Path.Combine(_workDir, "lazy-fill.log");

    /// <summary>Completes when the fill process exits, with its exit code (<see cref="FillServer.ExitFilled"/>: every lazy page filled).</summary>
    public Task<int> Exited { get; }

    /// <summary>The exit code once it has exited, asked of the kernel now; else null.</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>Whether the daemon it started is gone (exited, a zombie not yet reaped) while the fill process has not said why yet.</summary>
    public bool DaemonGone => CriuPid > 0 && !ProcessTree.IsAlive(CriuPid) && !_process.HasExited;

    /// <summary>Time from launch to now.</summary>
    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_started);

    /// <summary>Its state file now (progress, error), or null when there is none or it cannot be read.</summary>
    public FillState? State
    {
        get
        {
            try
            {
                return FillState.Read(_workDir);
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                return null; // being replaced, or damaged: no progress known
            }
        }
    }

    /// <summary>Launches the fill process for the migration in <paramref name="workDir"/>; it waits for <see cref="StartDaemonAsync"/>.</summary>
    /// <exception cref="System.ComponentModel.Win32Exception">The agent's executable cannot be started.</exception>
    public static FillProcess Launch(string workDir, string imagesDir, CriuOptions criu)
    {
        var (exe, prefix) = SelfCommand();
        var psi = new ProcessStartInfo(exe)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // The agent does not tier (it compiles everything optimized, for its frozen page path); the fill process should
        // start cheaply instead: its start overlaps pre-copy on the same cores, and its hot paths tier up while it serves.
        psi.Environment["DOTNET_TieredCompilation"] = "1";
        foreach (var a in prefix.Append(FillServer.Command).Concat(FillServer.Arguments(workDir, imagesDir, criu)))
        {
            psi.ArgumentList.Add(a);
        }

        var process = Process.Start(psi) ?? throw new IOException($"could not start {exe} {FillServer.Command}");
        return new FillProcess(process, workDir);
    }

    /// <summary>Tells it to start <c>criu lazy-pages</c> and waits until the daemon listens for the restore (or throws with the reason).</summary>
    public async Task StartDaemonAsync(CancellationToken ct)
    {
        string? answer;
        try
        {
            await _process.StandardInput.WriteLineAsync("start".AsMemory(), ct).ConfigureAwait(false);
            await _process.StandardInput.FlushAsync(ct).ConfigureAwait(false);
            answer = await _process.StandardOutput.ReadLineAsync(ct).AsTask().WaitAsync(AnswerTimeout, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or TimeoutException)
        {
            answer = null;
        }

        if (answer is not null && answer.StartsWith("ready ", StringComparison.Ordinal)
            && int.TryParse(answer.AsSpan(6), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0)
        {
            CriuPid = pid;
            return;
        }

        string why = answer is not null && answer.StartsWith("error ", StringComparison.Ordinal) ? answer[6..]
            : $"no answer from the lazy fill process (pid {Pid}){(_process.HasExited ? $", exit code {_process.ExitCode}" : "")}";
        await DisposeAsync().ConfigureAwait(false);
        var stderr = await _stderr.ConfigureAwait(false);
        throw new CriuException("lazy-pages", $"criu lazy-pages did not start: {why}. {stderr.Trim()}", CriuLog.ReadErrors(LogPath), LogPath);
    }

    /// <summary>Hands it the restored tree: from now on a failed fill kills that tree, agent or not.</summary>
    public void HandOver(int restoredPid)
    {
        ulong start = ProcessIdentity.StartTime(restoredPid);
        try
        {
            _process.StandardInput.WriteLine($"tree {restoredPid.ToString(CultureInfo.InvariantCulture)} {start.ToString(CultureInfo.InvariantCulture)}");
            _process.StandardInput.Flush();
        }
        catch (IOException)
        {
            // It has exited: its exit code says why, and the caller checks it next.
        }
    }

    /// <summary>Kills the daemon and waits for the fill process to exit (killing it too if it does not). For faults and stops.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited && CriuPid > 0)
        {
            ProcessTree.KillAll([CriuPid]);
        }

        try
        {
            await Exited.WaitAsync(CriuPid > 0 ? ExitTimeout : TimeSpan.Zero).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            try
            {
                _process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // It exited in between.
            }

            await Exited.ConfigureAwait(false);
        }
    }

    /// <summary>The agent stops while the fill goes on: the handle is dropped, the fill process is not touched.</summary>
    public void Detach()
    {
        _detached = true;
        _process.Dispose();
    }

    /// <summary>Stops the fill if it still runs (a restore that failed or was aborted), and waits for it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_detached)
        {
            return;
        }

        if (!_process.HasExited)
        {
            await KillAsync().ConfigureAwait(false);
        }

        await Exited.ConfigureAwait(false);
        _process.Dispose();
    }

    private async Task<int> WaitAsync()
    {
        await _process.WaitForExitAsync().ConfigureAwait(false);
        return _process.ExitCode;
    }

    /// <summary>This agent's own command: its executable, and before the subcommand the entry assembly when run by the dotnet host.</summary>
    private static (string Exe, string[] Prefix) SelfCommand()
    {
        var exe = Environment.ProcessPath ?? throw new IOException("the agent's executable path is unknown");
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet")
        {
            var entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
            return string.IsNullOrEmpty(entry) ? throw new IOException("the agent's entry assembly is unknown") : (exe, [entry]);
        }

        return (exe, []);
    }

    /// <summary>What it printed to standard error before it detached, at most 16 KiB.</summary>
    private static async Task<string> ReadBoundedAsync(StreamReader reader)
    {
        const int Limit = 16 * 1024;
        var text = new System.Text.StringBuilder();
        var buffer = new char[4096];
        try
        {
            int n;
            while ((n = await reader.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                text.Append(buffer, 0, Math.Min(n, Math.Max(0, Limit - text.Length)));
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // The pipe went with the process (or the handle was dropped): what came is what there is.
        }

        return text.ToString();
    }
}

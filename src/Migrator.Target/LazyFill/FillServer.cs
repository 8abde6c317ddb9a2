using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Migration.Engine.Criu;
using Migration.Engine.Processes;
using Migration.PageServer.Criu;
using Migration.PageServer.Store;
using Serilog;

namespace Migration.Target.LazyFill;

/// <summary>
/// The lazy fill of one restored tree, as its own process (<c>migrate-agent lazy-fill</c>, a hidden subcommand) in its
/// own session, so that it lives on when the agent that started it is killed. It starts <c>criu lazy-pages</c> as its
/// child and serves it the composed images' pages (<see cref="ImagePageSource"/>) over a socket pair; it keeps the
/// state file (<see cref="FillState"/>) in the work directory; when the fill fails it kills the restored tree itself
/// (its unfilled pages would read as zeros); when the fill ends it removes the images and the page data.
/// </summary>
/// <remarks>
/// Its standard input carries the agent's commands, one per line: <c>start</c> (start the daemon; answered on
/// standard output with <c>ready CRIU_PID</c> or <c>error TEXT</c>) and <c>tree PID START_TIME</c> (the restored tree,
/// once restored). End of input before <c>start</c> means the fill is not wanted: it exits at once. End of input later
/// means the agent is gone: the fill goes on. After the answer to <c>start</c>, standard output and error go to
/// /dev/null, so that no pipe of a dead agent is written to (or held open).
/// </remarks>
public static partial class FillServer
{
    /// <summary>The hidden subcommand.</summary>
    public const string Command = "lazy-fill";

    /// <summary>How often the state file's progress is brought up to date while pages are served.</summary>
    public static readonly TimeSpan ProgressPeriod = TimeSpan.FromMilliseconds(500);

    /// <summary>The daemon's readiness: how long its start may take.</summary>
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(30);

    /// <summary>What a migration directory holds besides logs, removed when the fill ends.</summary>
    internal static readonly string[] DataDirs = ["images", "parent-images", "pages"];

    /// <summary>Exit codes: every page filled; the fill failed; bad arguments; the daemon did not start.</summary>
    public const int ExitFilled = 0, ExitFailed = 1, ExitUsage = 2, ExitNotStarted = 3;

    /// <summary>The command line for <paramref name="workDir"/> (after the executable and the subcommand).</summary>
    public static IReadOnlyList<string> Arguments(string workDir, string imagesDir, CriuOptions criu) =>
        ["--work-dir", workDir, "--images-dir", imagesDir, "--criu", criu.CriuPath, "--log-level", criu.LogLevel.ToString(CultureInfo.InvariantCulture)];

    /// <summary>Runs the fill; <paramref name="args"/> are those after the subcommand.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        if (!TryParse(args, out var workDir, out var imagesDir, out var criu, out var usage))
        {
            await Console.Error.WriteLineAsync($"migrate-agent {Command}: {usage}").ConfigureAwait(false);
            return ExitUsage;
        }

        // Its own session and process group: a signal to the agent's group or session does not reach it.
        try
        {
            DetachedProcess.NewSession();
        }
        catch (IOException ex)
        {
            await Console.Error.WriteLineAsync($"migrate-agent {Command}: {ex.Message}").ConfigureAwait(false);
            return ExitUsage;
        }

        await using var serilog = new LoggerConfiguration().MinimumLevel.Information()
            .WriteTo.File(Path.Combine(workDir, "lazy-fill.log"), outputTemplate: "{Timestamp:o} {Level:u3} {Message:lj}{NewLine}{Exception}")
            .CreateLogger();
        using var loggers = LoggerFactory.Create(b => b.AddSerilog(serilog));
        var logger = loggers.CreateLogger("Migration.Target.LazyFill");
        // SIGTERM (a service manager stopping the agent's whole unit, say) does not cut the fill short: the tree's
        // memory is still coming. The fill ends as it would; a daemon that took the signal too fails it, and the tree
        // is then killed here as for any failure. Only SIGKILL stops this process at once.
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx =>
        {
            ctx.Cancel = true;
            LogTermIgnored(logger);
        });
        var run = new Run(workDir, imagesDir, criu, logger);
        return await run.ExecuteAsync().ConfigureAwait(false);
    }

    private static bool TryParse(string[] args, out string workDir, out string imagesDir, out CriuOptions criu, out string usage)
    {
        workDir = imagesDir = "";
        criu = new CriuOptions();
        usage = "usage: --work-dir DIR --images-dir DIR --criu PATH --log-level 0-4";
        if (args.Length != 8)
        {
            return false;
        }

        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i += 2)
        {
            if (args[i] is not ("--work-dir" or "--images-dir" or "--criu" or "--log-level") || !values.TryAdd(args[i], args[i + 1]))
            {
                usage = $"unexpected or repeated argument; {usage}";
                return false;
            }
        }

        workDir = values["--work-dir"];
        imagesDir = values["--images-dir"];
        if (!Path.IsPathFullyQualified(workDir) || !Directory.Exists(workDir) || !Path.IsPathFullyQualified(imagesDir) || !Directory.Exists(imagesDir))
        {
            usage = "--work-dir and --images-dir must be existing absolute directories";
            return false;
        }

        if (!int.TryParse(values["--log-level"], NumberStyles.None, CultureInfo.InvariantCulture, out int level) || level > 4
            || !Path.IsPathFullyQualified(values["--criu"]))
        {
            usage = $"--log-level must be 0-4 and --criu an absolute path; {usage}";
            return false;
        }

        criu = new CriuOptions { CriuPath = values["--criu"], LogLevel = level };
        return true;
    }

    /// <summary>One fill, from <c>start</c> to its end.</summary>
    private sealed class Run(string workDir, string imagesDir, CriuOptions criu, Microsoft.Extensions.Logging.ILogger logger)
    {
        private readonly Lock _lock = new();
        private FillState _state = new() { Phase = FillPhase.Starting, ServerPid = Environment.ProcessId, ServerStart = ProcessIdentity.StartTime(Environment.ProcessId) };
        private ImagePageSource? _source;

        public async Task<int> ExecuteAsync()
        {
            Publish(s => s);
            var input = new StreamReader(Console.OpenStandardInput());
            await WarmUpAsync().ConfigureAwait(false);
            var first = await input.ReadLineAsync().ConfigureAwait(false);
            if (first != "start")
            {
                // Not wanted (the migration went another way) or not understood: nothing was started.
                File.Delete(Path.Combine(workDir, FillState.FileName));
                return first is null ? ExitFilled : ExitUsage;
            }

            LazyPagesDaemon daemon;
            System.Net.Sockets.Socket ours;
            try
            {
                (daemon, ours) = await LazyPagesDaemon.StartServedAsync(criu, imagesDir, workDir, "lazy-pages.log", ReadyTimeout, CancellationToken.None)
                    .ConfigureAwait(false);
            }
            catch (CriuException ex)
            {
                Publish(s => s with { Phase = FillPhase.Failed, Error = ex.Message });
                await AnswerAsync($"error {ex.Message.ReplaceLineEndings(" ")}").ConfigureAwait(false);
                return ExitNotStarted;
            }

            await using (daemon.ConfigureAwait(false))
            {
                using var source = new ImagePageSource(imagesDir);
                _source = source;
                var serving = CriuPageServerConnection.ServeLazyAsync(ours, source, logger: logger);
                Publish(s => s with { Phase = FillPhase.Serving, CriuPid = daemon.Pid });
                LogStarted(logger, Environment.ProcessId, daemon.Pid, imagesDir);
                await AnswerAsync($"ready {daemon.Pid.ToString(CultureInfo.InvariantCulture)}").ConfigureAwait(false);
                DetachedProcess.DetachStandardOutput();

                using var stop = new CancellationTokenSource();
                var commands = ReadCommandsAsync(input, stop.Token);
                var progress = ReportProgressAsync(stop.Token);
                int code = await daemon.Exited.ConfigureAwait(false);
                PageServer.Criu.PageServerResult served;
                try
                {
                    served = await serving.ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or ObjectDisposedException or InvalidOperationException)
                {
                    // A failure of the session itself is a failed fill like any other: the tree must not run on.
                    served = PageServer.Criu.PageServerResult.Failed(PageServer.Criu.PageServerOutcome.SourceFailed, ex.Message, default);
                }

                await stop.CancelAsync().ConfigureAwait(false);
                await progress.ConfigureAwait(false);
                _ = commands; // ends with the process: a read blocked on the agent's pipe cannot be cancelled

                bool ok = code == 0 && served.IsCompleted;
                FillState end;
                lock (_lock)
                {
                    end = _state;
                }

                if (ok)
                {
                    LogFilled(logger, source.PagesRead, daemon.Elapsed.TotalMilliseconds);
                }
                else
                {
                    var errors = CriuLog.ReadErrors(daemon.LogPath);
                    string why = code != 0
                        ? $"criu lazy-pages (pid {daemon.Pid}) exited with code {code} before every lazy page was filled ({(errors.Count > 0 ? string.Join(" | ", errors) + "; " : "")}log {daemon.LogPath})"
                        : $"serving lazy pages failed: {served.Error ?? served.Outcome.ToString()}";
                    int killed = 0;
                    if (end.TreePid > 0 && ProcessIdentity.IsSame(end.TreePid, end.TreeStart))
                    {
                        // Its unfilled pages read as zeros now: it must not run on with them.
                        killed = ProcessTree.KillAll(ProcessTree.Enumerate(end.TreePid));
                    }

                    why = end.TreePid > 0 ? $"{why}; {killed} tasks of restored pid {end.TreePid} killed" : why;
                    LogFailed(logger, end.TreePid, killed, why);
                    end = end with { Error = why };
                }

                if (end.TreePid > 0)
                {
                    // The fill owned the images from the restore on; nothing reads them any more.
                    RemoveData();
                }

                Publish(_ => end with { Phase = ok ? FillPhase.Done : FillPhase.Failed, PagesFilled = source.PagesRead });
                return ok ? ExitFilled : ExitFailed;
            }
        }

        /// <summary>
        /// Before the freeze, while it waits for <c>start</c>: spawns <c>criu --version</c> the way the daemon will be
        /// spawned, so that the spawn path is compiled (the agent's binary does not tier) when the frozen restore waits
        /// on it. A failure here changes nothing: <c>start</c> reports the real one.
        /// </summary>
        private async Task WarmUpAsync()
        {
            try
            {
                var psi = new System.Diagnostics.ProcessStartInfo(criu.CriuPath) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
                psi.ArgumentList.Add("--version");
                using var p = System.Diagnostics.Process.Start(psi);
                if (p is not null)
                {
                    await p.StandardOutput.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
                    await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
                }
            }
            catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException or TimeoutException or InvalidOperationException)
            {
                LogStateNotWritten(logger, $"warm-up: {ex.Message}");
            }
        }

        private async Task ReadCommandsAsync(StreamReader input, CancellationToken ct)
        {
            try
            {
                while (await input.ReadLineAsync(ct).ConfigureAwait(false) is { } line)
                {
                    var parts = line.Split(' ');
                    if (parts is ["tree", var p, var s] && int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0
                        && ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out ulong start) && start > 0)
                    {
                        long lazy = ImagePageSource.CountLazyPages(imagesDir);
                        Publish(st => st with { TreePid = pid, TreeStart = start, LazyPages = lazy });
                        LogTree(logger, pid, lazy);
                    }
                    else
                    {
                        LogBadCommand(logger, new string(line.Take(80).Where(c => !char.IsControl(c)).ToArray()));
                    }
                }

                LogAgentGone(logger);
            }
            catch (OperationCanceledException)
            {
                // The fill ended.
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException)
            {
                LogBadCommand(logger, ex.Message);
            }
        }

        private async Task ReportProgressAsync(CancellationToken ct)
        {
            long last = -1;
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    await Task.Delay(ProgressPeriod, ct).ConfigureAwait(false);
                    long now = _source?.PagesRead ?? 0;
                    if (now != last)
                    {
                        last = now;
                        Publish(s => s with { PagesFilled = now });
                    }
                }
            }
            catch (OperationCanceledException)
            {
                // The fill ended; its final state is written by the caller.
            }
        }

        private void Publish(Func<FillState, FillState> change)
        {
            lock (_lock)
            {
                _state = change(_state);
                try
                {
                    _state.Write(workDir);
                }
                catch (IOException ex)
                {
                    // A full disk: the fill itself goes on; only what a restarted agent can learn of it is stale.
                    LogStateNotWritten(logger, ex.Message);
                }
            }
        }

        private void RemoveData()
        {
            foreach (var d in DataDirs)
            {
                var path = Path.Combine(workDir, d);
                try
                {
                    if (Directory.Exists(path))
                    {
                        Directory.Delete(path, recursive: true);
                    }
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // Space only: a starting agent sweeps what is left.
                    LogStateNotWritten(logger, $"could not remove {path}: {ex.Message}");
                }
            }
        }
    }

    private static async Task AnswerAsync(string line)
    {
        await Console.Out.WriteLineAsync(line).ConfigureAwait(false);
        await Console.Out.FlushAsync().ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 320, Level = LogLevel.Information, Message = "lazy fill (pid {Pid}): criu lazy-pages (pid {CriuPid}) serves from {Images}")]
    private static partial void LogStarted(Microsoft.Extensions.Logging.ILogger logger, int pid, int criuPid, string images);

    [LoggerMessage(EventId = 321, Level = LogLevel.Information, Message = "restored pid {Pid} handed over: {Pages} lazy pages to fill")]
    private static partial void LogTree(Microsoft.Extensions.Logging.ILogger logger, int pid, long pages);

    [LoggerMessage(EventId = 322, Level = LogLevel.Information, Message = "every lazy page filled ({Pages} served), {Ms:0} ms after the daemon started")]
    private static partial void LogFilled(Microsoft.Extensions.Logging.ILogger logger, long pages, double ms);

    [LoggerMessage(EventId = 323, Level = LogLevel.Error, Message = "the lazy fill of restored pid {Pid} failed; {Killed} tasks killed: {Why}")]
    private static partial void LogFailed(Microsoft.Extensions.Logging.ILogger logger, int pid, int killed, string why);

    [LoggerMessage(EventId = 324, Level = LogLevel.Warning, Message = "the agent is gone (end of its commands); the fill goes on")]
    private static partial void LogAgentGone(Microsoft.Extensions.Logging.ILogger logger);

    [LoggerMessage(EventId = 325, Level = LogLevel.Warning, Message = "ignored a command from the agent: {Command}")]
    private static partial void LogBadCommand(Microsoft.Extensions.Logging.ILogger logger, string command);

    [LoggerMessage(EventId = 327, Level = LogLevel.Warning, Message = "SIGTERM: the fill goes on until it ends (SIGKILL stops it at once, and fails it)")]
    private static partial void LogTermIgnored(Microsoft.Extensions.Logging.ILogger logger);

    [LoggerMessage(EventId = 326, Level = LogLevel.Warning, Message = "fill state: {Message}")]
    private static partial void LogStateNotWritten(Microsoft.Extensions.Logging.ILogger logger, string message);
}

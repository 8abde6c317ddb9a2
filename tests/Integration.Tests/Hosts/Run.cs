using System.Diagnostics;
using System.Text;

namespace Migration.Integration.Tests.Hosts;

/// <summary>The output of a finished command.</summary>
public sealed record CommandResult(int ExitCode, string Stdout, string Stderr)
{
    public string LastStdoutLine => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "";

    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>Runs commands with ArgumentList (no shell) and a bound on how long they may take.</summary>
public static class Run
{
    public static async Task<CommandResult> CommandAsync(string file, IEnumerable<string> args, TimeSpan timeout, string what)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            await p.WaitForExitAsync().WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{what}: '{file} {string.Join(' ', psi.ArgumentList)}' did not finish within {timeout.TotalSeconds} s");
        }

        return new CommandResult(p.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs and requires exit 0.</summary>
    public static async Task<string> CheckedAsync(string file, params string[] args)
    {
        var r = await CommandAsync(file, args, TimeSpan.FromSeconds(30), file);
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed: {r}");
        }

        return r.Stdout;
    }

    /// <summary>Awaits <paramref name="task"/> or fails naming what hung.</summary>
    public static async Task<T> Within<T>(this Task<T> task, TimeSpan timeout, string what)
    {
        try
        {
            return await task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"timed out after {timeout.TotalSeconds} s waiting for: {what}");
        }
    }
}

/// <summary>A background process whose output is collected line by line.</summary>
public sealed class BackgroundProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly List<(string Needle, TaskCompletionSource Seen)> _waiters = [];

    public BackgroundProcess(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        _process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        _process.OutputDataReceived += (_, e) => OnLine(e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for the process to exit and, unlike polling <see cref="HasExited"/>, for its
    /// last output lines to reach <see cref="Output"/>. Returns whether it exited.
    /// </summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        try
        {
            await _process.WaitForExitAsync().WaitAsync(timeout);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public Task WaitForOutputAsync(string needle, TimeSpan timeout, string what)
    {
        TaskCompletionSource tcs;
        lock (_output)
        {
            if (_output.ToString().Contains(needle, StringComparison.Ordinal))
            {
                return Task.CompletedTask;
            }

            tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((needle, tcs));
        }

        return WaitAsync();

        async Task WaitAsync()
        {
            var exited = _process.WaitForExitAsync();
            var done = await Task.WhenAny(tcs.Task, exited, Task.Delay(timeout));
            if (done == tcs.Task)
            {
                return;
            }

            throw new TimeoutException(done == exited
                ? $"{what}: process exited (code {_process.ExitCode}) before printing '{needle}'. Output:\n{Output}"
                : $"{what}: '{needle}' not printed within {timeout.TotalSeconds} s. Output:\n{Output}");
        }
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
            var text = _output.ToString();
            foreach (var w in _waiters.Where(w => text.Contains(w.Needle, StringComparison.Ordinal)).ToArray())
            {
                w.Seen.TrySetResult();
                _waiters.Remove(w);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }

        _process.Dispose();
    }
}

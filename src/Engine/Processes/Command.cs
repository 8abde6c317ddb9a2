using System.Diagnostics;
using System.Text;

namespace Migration.Engine.Processes;

/// <summary>What a finished command said: its exit code and its output, each cut to <see cref="Command.MaxOutputChars"/>.</summary>
public sealed record CommandResult(string File, IReadOnlyList<string> Args, int ExitCode, string Stdout, string Stderr, TimeSpan Took)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>"ip addr add ...: exit 2: RTNETLINK answers: File exists" — for a log line or an error.</summary>
    public override string ToString()
    {
        var said = (Stderr.Trim().Length > 0 ? Stderr : Stdout).Trim().ReplaceLineEndings(" | ");
        return $"{File} {string.Join(' ', Args)}: exit {ExitCode}{(said.Length > 0 ? ": " + said : "")}";
    }
}

/// <summary>Runs a program to its end with a time limit; the one way the engine starts short-lived tools (ip, nft, arping, hooks).</summary>
public static class Command
{
    /// <summary>Output kept per stream: enough for any message, bounded against a program that floods.</summary>
    public const int MaxOutputChars = 64 * 1024;

    /// <summary>
    /// Runs <paramref name="file"/> with <paramref name="args"/> (no shell) and waits for it; after
    /// <paramref name="timeout"/> or on <paramref name="ct"/> it is killed, with its children, and
    /// <see cref="TimeoutException"/> or <see cref="OperationCanceledException"/> is thrown.
    /// </summary>
    /// <exception cref="System.ComponentModel.Win32Exception">The program cannot be started (not installed).</exception>
    public static async Task<CommandResult> RunAsync(string file, IReadOnlyList<string> args, TimeSpan timeout, CancellationToken ct = default)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }

        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {file}");
        process.StandardInput.Close();
        var stdout = ReadBoundedAsync(process.StandardOutput);
        var stderr = ReadBoundedAsync(process.StandardError);
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // It ended meanwhile.
            }

            ct.ThrowIfCancellationRequested();
            throw new TimeoutException($"{file} {string.Join(' ', args)}: no end within {timeout.TotalSeconds:0.#} s; killed");
        }

        return new CommandResult(file, args, process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false), clock.Elapsed);
    }

    private static async Task<string> ReadBoundedAsync(StreamReader reader)
    {
        var kept = new StringBuilder();
        var buffer = new char[4096];
        int n;
        while ((n = await reader.ReadAsync(buffer).ConfigureAwait(false)) > 0)
        {
            kept.Append(buffer, 0, Math.Min(n, MaxOutputChars - kept.Length));
        }

        return kept.ToString();
    }
}

using System.Diagnostics;
using System.Globalization;
using Migration.Engine.Native;

namespace Migration.Engine.Processes;

/// <summary>
/// Slows a running process tree by a duty cycle of SIGSTOP and SIGCONT: at level L percent each period of
/// <see cref="Period"/> stops every process of the tree for L percent of it. Pre-copy's auto-converge uses it, as
/// QEMU throttles a guest's vCPUs, when the tree dirties memory faster than the link moves it. Works without
/// cgroups and for any tree; what the tree sees is a slower clock, never a lost signal (SIGCONT is what job control
/// sends too). A guard process in its own session holds a pipe from this one: if this process dies, however it
/// dies, the guard continues the tree, so a throttle never leaves a workload stopped.
/// </summary>
public sealed class TreeThrottle : IAsyncDisposable
{
    private const int SigCont = 18;
    private const int SigStop = 19;

    /// <summary>One stop-and-run cycle: short against a heartbeat of seconds, long against the scheduler's tick.</summary>
    public static readonly TimeSpan Period = TimeSpan.FromMilliseconds(100);

    /// <summary>The highest level: the tree still runs 1% of the time.</summary>
    public const int MaxLevel = 99;

    private readonly int _root;
    private readonly Process _guard;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _cycle;
    private IReadOnlyList<int> _pids;
    private volatile int _level;
    private int _lifted;

    private TreeThrottle(int root, IReadOnlyList<int> pids, Process guard)
    {
        _root = root;
        _pids = pids;
        _guard = guard;
        _cycle = Task.Run(CycleAsync);
    }

    /// <summary>Percent of each period the tree is stopped; 0 until <see cref="Set"/>.</summary>
    public int Level => _level;

    /// <summary>The highest level set: what a migration reports.</summary>
    public int MaxReached { get; private set; }

    /// <summary>
    /// Starts a throttle at level 0 (the tree runs freely) for the tree rooted at <paramref name="root"/>, with its guard.
    /// </summary>
    /// <exception cref="System.ComponentModel.Win32Exception">The guard (/bin/sh) cannot be started.</exception>
    public static TreeThrottle Start(int root)
    {
        var pids = ProcessTree.Enumerate(root);
        // The guard: setsid, so a signal to this process's group does not reach it; 'read' returns at EOF, when
        // this process closes the pipe or dies; then every task of the tree is continued, whatever the throttle did.
        var psi = new ProcessStartInfo("/usr/bin/setsid")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = false,
            RedirectStandardError = false,
        };
        foreach (var a in new[] { "/bin/sh", "-c", "read -r _ ; kill -CONT \"$@\" 2>/dev/null; exit 0", "migrate-throttle-guard" })
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var pid in pids)
        {
            psi.ArgumentList.Add(pid.ToString(CultureInfo.InvariantCulture));
        }

        var guard = Process.Start(psi) ?? throw new InvalidOperationException("cannot start the throttle's guard");
        return new TreeThrottle(root, pids, guard);
    }

    /// <summary>Sets the level, 0 to <see cref="MaxLevel"/> percent; it applies from the next period.</summary>
    public void Set(int percent)
    {
        _level = Math.Clamp(percent, 0, MaxLevel);
        MaxReached = Math.Max(MaxReached, _level);
    }

    private async Task CycleAsync()
    {
        var ct = _stop.Token;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                int level = _level;
                if (level <= 0)
                {
                    await Task.Delay(Period, ct).ConfigureAwait(false);
                    continue;
                }

                var stopFor = Period * (level / 100.0);
                Signal(SigStop);
                try
                {
                    await Task.Delay(stopFor, ct).ConfigureAwait(false);
                }
                finally
                {
                    Signal(SigCont);
                }

                await Task.Delay(Period - stopFor, ct).ConfigureAwait(false);
                _pids = ProcessTree.Enumerate(_root); // a child forked meanwhile is throttled from the next period
            }
        }
        catch (OperationCanceledException)
        {
            // Lifted.
        }
    }

    private void Signal(int sig)
    {
        foreach (var pid in _pids)
        {
            _ = Libc.kill(pid, sig); // a task that exited meanwhile: ESRCH, nothing to do
        }
    }

    /// <summary>
    /// For tests: what this process dying looks like to the guard: the cycle stops with the tree stopped, not continued,
    /// and the guard's pipe closes. The guard must continue the tree.
    /// </summary>
    internal async Task AbandonStoppedAsync()
    {
        Interlocked.Exchange(ref _lifted, 1);
        await _stop.CancelAsync().ConfigureAwait(false);
        await _cycle.ConfigureAwait(false);
        Signal(SigStop);
        _guard.StandardInput.Close();
        await _guard.WaitForExitAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Lifts the throttle: the cycle ends with the tree continued, and the guard is told and has exited before this
    /// returns, so nothing of the throttle acts on the tree afterwards (a freeze may follow at once).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _lifted, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        await _cycle.ConfigureAwait(false);
        Signal(SigCont);
        try
        {
            _guard.StandardInput.Close();
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _guard.WaitForExitAsync(wait.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException)
        {
            try
            {
                _guard.Kill();
            }
            catch (InvalidOperationException)
            {
                // Gone already.
            }
        }

        _guard.Dispose();
        _stop.Dispose();
    }
}

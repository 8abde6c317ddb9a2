using System.Diagnostics;
using System.Globalization;
using Migration.Engine.Native;
using Migration.Engine.Tracking;

namespace Migration.Engine.Tests.Tracking;

/// <summary>
/// native/bin/trackee (native/tests/trackee.c): a process that writes pages on command over stdin. Started through
/// <c>setsid -f</c> so that it is not a child of the test host (the runtime would reap its ptrace stops).
/// </summary>
internal sealed class Trackee : IAsyncDisposable
{
    public const ulong PageSize = 4096;

    private static readonly TimeSpan s_replyTimeout = TimeSpan.FromSeconds(10);

    private readonly Process _launcher;
    private readonly StreamWriter _in;
    private readonly StreamReader _out;

    private Trackee(Process launcher, int pid, ulong buffer, ulong pages)
    {
        _launcher = launcher;
        _in = launcher.StandardInput;
        _out = launcher.StandardOutput;
        Pid = pid;
        Buffer = buffer;
        Pages = pages;
    }

    public int Pid { get; }

    /// <summary>Address of its page buffer (64 MiB unless --mib).</summary>
    public ulong Buffer { get; }

    public ulong Pages { get; }

    public static string Locate() =>
        TrackerLibrary.Candidates("trackee").FirstOrDefault(File.Exists)
        ?? throw new FileNotFoundException("native/bin/trackee not found: build it with make -C native");

    /// <param name="args">trackee's arguments: --mode read|compute|sleep, --mib N, --thp.</param>
    public static async Task<Trackee> StartAsync(params string[] args)
    {
        var psi = new ProcessStartInfo("setsid")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("--fork");
        psi.ArgumentList.Add(Locate());
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        var launcher = Process.Start(psi) ?? throw new InvalidOperationException("setsid did not start");
        var ready = await ReadLineAsync(launcher.StandardOutput, "READY");
        // "READY pid=<pid> buf=0x<addr> pages=<n>"
        var fields = ready.Split(' ').Skip(1).Select(f => f.Split('=')).ToDictionary(kv => kv[0], kv => kv[1]);
        return new Trackee(
            launcher,
            int.Parse(fields["pid"], CultureInfo.InvariantCulture),
            ulong.Parse(fields["buf"].AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
            ulong.Parse(fields["pages"], CultureInfo.InvariantCulture));
    }

    /// <summary>Sends one command line and returns its answer, which must start with OK.</summary>
    public async Task<string> CommandAsync(string command)
    {
        await _in.WriteLineAsync(command).WaitAsync(s_replyTimeout);
        await _in.FlushAsync().WaitAsync(s_replyTimeout);
        var answer = await ReadLineAsync(_out, command);
        if (!answer.StartsWith("OK", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"trackee {Pid}: \"{command}\" answered \"{answer}\"");
        }

        return answer;
    }

    /// <summary>The hexadecimal address of an "OK 0x..." answer.</summary>
    public static ulong Address(string answer) =>
        ulong.Parse(answer.AsSpan(answer.IndexOf("0x", StringComparison.Ordinal) + 2), NumberStyles.HexNumber,
            CultureInfo.InvariantCulture);

    /// <summary>A field of the STATUS answer ("errors", "rounds", ...).</summary>
    public async Task<ulong> StatusAsync(string field)
    {
        var status = await CommandAsync("STATUS");
        var kv = status.Split(' ').Select(f => f.Split('=')).First(p => p[0] == field);
        return ulong.Parse(kv[1], CultureInfo.InvariantCulture);
    }

    public bool HoldsUserfaultfd()
    {
        foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{Pid}/fd"))
        {
            if (new FileInfo(fd).LinkTarget == "anon_inode:[userfaultfd]")
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>VMAs whose VmFlags carry "uw" (userfaultfd write-protect registered).</summary>
    public int WriteProtectedVmas() =>
        File.ReadLines($"/proc/{Pid}/smaps").Count(l => l.StartsWith("VmFlags:", StringComparison.Ordinal) && l.Contains(" uw", StringComparison.Ordinal));

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _in.WriteLineAsync("QUIT").WaitAsync(s_replyTimeout);
            await _in.FlushAsync().WaitAsync(s_replyTimeout);
        }
        catch (Exception e) when (e is IOException or TimeoutException)
        {
            // Already gone or stuck: the kill below ends it either way.
        }

        for (int i = 0; i < 100 && IsAlive(); i++)
        {
            await Task.Delay(10);
        }

        if (IsAlive())
        {
            Libc.kill(Pid, Libc.SIGKILL);
        }

        _launcher.Dispose();
    }

    /// <summary>Neither gone nor a zombie (it is reaped by init, not by us).</summary>
    private bool IsAlive()
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{Pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].FirstOrDefault() is not ('Z' or 'X');
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static async Task<string> ReadLineAsync(StreamReader reader, string waitingFor)
    {
        try
        {
            return await reader.ReadLineAsync().WaitAsync(s_replyTimeout)
                ?? throw new InvalidOperationException($"trackee closed its output while waiting for the answer to \"{waitingFor}\"");
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"trackee did not answer \"{waitingFor}\" within {s_replyTimeout.TotalSeconds} s");
        }
    }
}

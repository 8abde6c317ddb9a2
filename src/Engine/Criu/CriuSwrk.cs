using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Migration.Engine.Criu.Rpc;
using Migration.Engine.Native;

namespace Migration.Engine.Criu;

/// <summary>
/// One <c>criu swrk FD</c> process and its SOCK_SEQPACKET socket: each datagram is one bare
/// <c>criu_req</c> or <c>criu_resp</c> (CRIU's cr-service). One request per process, except the
/// keep_open kinds. Notifications are answered through a callback; the process is reaped on dispose.
/// </summary>
internal sealed class CriuSwrk : IAsyncDisposable
{
    /// <summary>A criu_resp is a few hundred bytes; anything this large is a protocol error.</summary>
    private const int MaxResponseBytes = 1 << 20;

    /// <summary>How long CRIU gets to exit after its socket closed before it is killed.</summary>
    private static readonly TimeSpan s_exitGrace = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Spawns are serialized so that the one inheritable descriptor (the child's socket end) is inherited
    /// only by the criu it is meant for, not by a process another thread starts at the same moment.
    /// </summary>
    private static readonly Lock s_spawnLock = new();

    private readonly Socket _socket;
    private readonly Process _process;
    private readonly BoundedOutput _output = new(64 * 1024);
    private readonly byte[] _receiveBuffer = new byte[MaxResponseBytes];

    private CriuSwrk(Socket socket, Process process)
    {
        _socket = socket;
        _process = process;
        _output.Capture(_process);
    }

    public int Pid => _process.Id;

    /// <summary>What criu printed on stdout/stderr (it logs to its log file; this catches early failures).</summary>
    public string Output => _output.ToString();

    /// <summary>
    /// Starts <c>criu swrk</c>. <paramref name="inheritFd"/> (optional) is a further descriptor the child inherits
    /// under the same number; the caller keeps and closes its own copy.
    /// </summary>
    public static unsafe CriuSwrk Start(string criuPath, int inheritFd = -1)
    {
        int* sv = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, sv) != 0)
        {
            throw new IOException($"socketpair for criu swrk failed: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        }

        var ours = new Socket(new SafeSocketHandle(sv[0], ownsHandle: true));
        Process process;
        try
        {
            var psi = new ProcessStartInfo(criuPath)
            {
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            psi.ArgumentList.Add("swrk");
            psi.ArgumentList.Add(sv[1].ToString(System.Globalization.CultureInfo.InvariantCulture));
            try
            {
                // The child's end must survive exec; ours stays close-on-exec.
                process = inheritFd >= 0 ? SpawnInheriting(psi, sv[1], inheritFd) : SpawnInheriting(psi, sv[1]);
            }
            finally
            {
                Libc.close(sv[1]);
            }
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException)
        {
            ours.Dispose();
            throw new CriuException("swrk", $"cannot start '{criuPath} swrk': {ex.Message}. Is CRIU installed (scripts/setup.sh)?", [], null, ex);
        }

        return new CriuSwrk(ours, process);
    }

    /// <summary>
    /// Starts <paramref name="psi"/> with <paramref name="inherit"/> (close-on-exec descriptors) inherited under their
    /// numbers. Spawns are serialized (one lock): the flag is cleared only for this spawn, so no other
    /// child inherits them, and this child inherits no other spawn's.
    /// </summary>
    internal static Process SpawnInheriting(ProcessStartInfo psi, params ReadOnlySpan<int> inherit)
    {
        lock (s_spawnLock)
        {
            foreach (int fd in inherit)
            {
                Libc.fcntl(fd, Libc.F_SETFD, 0);
            }

            try
            {
                return Process.Start(psi) ?? throw new IOException($"could not start {psi.FileName}");
            }
            finally
            {
                foreach (int fd in inherit)
                {
                    Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
                }
            }
        }
    }

    /// <summary>
    /// Sends <paramref name="request"/> and returns the final answer. Notifications in between are passed
    /// to <paramref name="onNotify"/>; its answer (or false when it throws) goes back to CRIU. When the
    /// callback threw, that exception is rethrown after CRIU's final answer arrived, so CRIU has
    /// finished its own rollback by the time the caller sees the failure.
    /// </summary>
    public async Task<CriuResp> CallAsync(CriuReq request, Func<CriuNotify, Task<bool>>? onNotify, CancellationToken ct)
    {
        await SendAsync(request, ct).ConfigureAwait(false);
        Exception? callbackFailure = null;
        while (true)
        {
            var response = await ReceiveAsync(ct).ConfigureAwait(false);
            if (response.Type != CriuReqType.Notify)
            {
                if (callbackFailure is not null)
                {
                    throw new CriuNotifyHandlerException(callbackFailure);
                }

                return response;
            }

            bool ok = true;
            if (onNotify is not null && callbackFailure is null)
            {
                try
                {
                    ok = await onNotify(response.Notify ?? new CriuNotify()).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    callbackFailure = ex;
                    ok = false;
                }
            }
            else if (callbackFailure is not null)
            {
                ok = false;
            }

            await SendAsync(new CriuReq { Type = CriuReqType.Notify, NotifySuccess = ok }, ct).ConfigureAwait(false);
        }
    }

    private async Task SendAsync(CriuReq request, CancellationToken ct)
    {
        var bytes = request.ToByteArray();
        int sent = await _socket.SendAsync(bytes, SocketFlags.None, ct).ConfigureAwait(false);
        if (sent != bytes.Length)
        {
            throw new IOException($"short write to criu swrk ({sent} of {bytes.Length} bytes)");
        }
    }

    private async Task<CriuResp> ReceiveAsync(CancellationToken ct)
    {
        int n;
        try
        {
            n = await _socket.ReceiveAsync(_receiveBuffer, SocketFlags.None, ct).ConfigureAwait(false);
        }
        catch (SocketException ex)
        {
            throw new IOException($"criu swrk socket failed: {ex.Message}", ex);
        }

        if (n == 0)
        {
            await WaitExitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            string exit = _process.HasExited ? $"exit code {_process.ExitCode}" : "still running";
            throw new IOException($"criu swrk closed its socket without an answer ({exit}). {Output.Trim()}");
        }

        if (n >= MaxResponseBytes)
        {
            throw new InvalidDataException($"criu swrk answer of {n} bytes or more: refusing it");
        }

        return CriuResp.Parser.ParseFrom(_receiveBuffer, 0, n);
    }


    private async Task WaitExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Still running after the grace period: the caller decides whether to kill it.
        }
    }

    public async ValueTask DisposeAsync()
    {
        _socket.Dispose();
        await WaitExitAsync(s_exitGrace).ConfigureAwait(false);
        if (!_process.HasExited)
        {
            try
            {
                _process.Kill(entireProcessTree: false);
            }
            catch (InvalidOperationException)
            {
                // Exited between the check and the kill: nothing left to do.
            }

            await WaitExitAsync(s_exitGrace).ConfigureAwait(false);
        }

        _process.Dispose();
    }
}

/// <summary>A notification callback failed; CRIU was told "no" and has rolled back.</summary>
public sealed class CriuNotifyHandlerException(Exception inner)
    : Exception($"notification handler failed: {inner.Message}", inner);

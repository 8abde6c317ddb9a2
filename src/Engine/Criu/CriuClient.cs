using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Migration.Engine.Criu.Rpc;
using Migration.Engine.Native;

namespace Migration.Engine.Criu;

/// <summary>
/// CRIU's operations over <c>criu swrk</c> RPC. Each call starts its own swrk process (CRIU serves one
/// request per process) and surfaces CRIU's own error lines when it fails.
/// </summary>
public sealed partial class CriuClient(CriuOptions options, ILogger<CriuClient> logger)
{
    private readonly ILogger _logger = logger;

    public CriuOptions Options { get; } = options;

    public async Task<CriuVersionInfo> GetVersionAsync(CancellationToken ct)
    {
        var resp = await CallAsync("version", new CriuReq { Type = CriuReqType.Version }, null, null, ct).ConfigureAwait(false);
        var v = resp.Version ?? throw new CriuException("version", "answer carries no version", [], null);
        string text = v.Sublevel > 0 ? $"{v.MajorNumber}.{v.MinorNumber}.{v.Sublevel}" : $"{v.MajorNumber}.{v.MinorNumber}";
        if (!string.IsNullOrEmpty(v.Gitid))
        {
            text += $" ({v.Gitid})";
        }

        return new CriuVersionInfo(v.MajorNumber, v.MinorNumber, v.Sublevel, text);
    }

    /// <summary><c>criu check</c>: the kernel supports what CRIU needs. Throws with CRIU's reasons otherwise.</summary>
    public async Task CheckAsync(string workDir, CancellationToken ct)
    {
        using var dir = OwnedFd.OpenDirectory(workDir);
        var req = new CriuReq { Type = CriuReqType.Check, Opts = BaseOpts(dir, dir, "check.log") };
        await CallAsync("check", req, Path.Combine(workDir, "check.log"), null, ct).ConfigureAwait(false);
    }

    public async Task<CriuFeatureSet> CheckFeaturesAsync(CancellationToken ct)
    {
        var req = new CriuReq
        {
            Type = CriuReqType.FeatureCheck,
            Features = new Rpc.CriuFeatures { MemTrack = true, LazyPages = true },
        };
        var resp = await CallAsync("feature-check", req, null, null, ct, requireSuccess: false).ConfigureAwait(false);
        var f = resp.Features;
        return new CriuFeatureSet(f?.MemTrack ?? false, f?.LazyPages ?? false);
    }

    /// <summary>Writes <c>cpuinfo.img</c> describing this host's CPU into <paramref name="imagesDir"/>.</summary>
    public async Task CpuInfoDumpAsync(string imagesDir, CancellationToken ct)
    {
        using var dir = OwnedFd.OpenDirectory(imagesDir);
        var req = new CriuReq { Type = CriuReqType.CpuinfoDump, Opts = BaseOpts(dir, dir, "cpuinfo-dump.log") };
        await CallAsync("cpuinfo dump", req, Path.Combine(imagesDir, "cpuinfo-dump.log"), null, ct).ConfigureAwait(false);
    }

    /// <summary>Checks that tasks dumped on the CPU described by <c>cpuinfo.img</c> in <paramref name="imagesDir"/> can run here.</summary>
    public async Task CpuInfoCheckAsync(string imagesDir, CancellationToken ct)
    {
        using var dir = OwnedFd.OpenDirectory(imagesDir);
        var req = new CriuReq { Type = CriuReqType.CpuinfoCheck, Opts = BaseOpts(dir, dir, "cpuinfo-check.log") };
        await CallAsync("cpuinfo check", req, Path.Combine(imagesDir, "cpuinfo-check.log"), null, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Dumps the tree. <paramref name="onNotify"/> sees every notification (script name, pid); answering
    /// false to post-dump makes CRIU resume the tree and fail the dump: the rollback lever.
    /// </summary>
    public async Task DumpAsync(DumpSpec spec, Func<string, int, Task<bool>> onNotify, CancellationToken ct)
    {
        using var images = OwnedFd.OpenDirectory(spec.ImagesDir);
        using var work = OwnedFd.OpenDirectory(spec.WorkDir);
        var opts = BaseOpts(images, work, spec.LogFile);
        opts.Pid = spec.Pid;
        opts.NotifyScripts = true;
        opts.LeaveRunning = spec.LeaveRunning;
        spec.Flags.ApplyTo(opts);
        if (spec.LeaveStopped)
        {
            opts.LeaveStopped = true;
        }

        // Always: CRIU also locks the network for sockets in transient states (a connection closing as the dump
        // starts), and its default method (iptables) is not what this host has.
        opts.NetworkLock = spec.NetworkLock;

        if (spec.PageServerAddress is not null && spec.PageServerConnection is not null)
        {
            spec.PageServerConnection.Dispose();
            throw new ArgumentException("a dump takes a page-server address or a connection, not both", nameof(spec));
        }

        if (spec.PageServerAddress is not null)
        {
            opts.Ps = new CriuPageServerInfo { Address = spec.PageServerAddress, Port = spec.PageServerPort };
        }

        Socket? lazyServer = null;
        OwnedFd? lazyServerChildEnd = null;
        try
        {
            if (spec.PageServerConnection is { } connection)
            {
                // CRIU's swrk takes an inherited, connected socket as its page-server connection (ps.fd): nothing
                // listens, and nobody but this process's page server can feed or read it.
                opts.Ps = new CriuPageServerInfo { Fd = checked((int)connection.Handle) };
            }

            if (spec.LazyPages)
            {
                if (spec.PageServerConnection is not null || spec.PageServerAddress is not null)
                {
                    throw new ArgumentException("a lazy dump writes no pages: it takes no page server", nameof(spec));
                }

                opts.LazyPages = true;
                (lazyServer, lazyServerChildEnd) = LazyServerSocket();

                // CRIU's RPC ignores the page-server address of a lazy dump (it would listen on every interface); its
                // configuration file can hand it a connected socket instead (--ps-socket), which no one else can reach.
                var conf = Path.Combine(spec.WorkDir, "lazy-dump.conf");
                await File.WriteAllTextAsync(conf, $"ps-socket {lazyServerChildEnd.Value}\n", ct).ConfigureAwait(false);
                opts.ConfigFile = conf;
            }

            var req = new CriuReq { Type = CriuReqType.Dump, Opts = opts };
            LogDumpStarting(spec.Pid, spec.ImagesDir);
            await CallAsync("dump", req, Path.Combine(spec.WorkDir, spec.LogFile),
                n => onNotify(n.Script ?? "", n.Pid), ct,
                inherit: lazyServerChildEnd is not null ? (lazyServerChildEnd.Value, lazyServerChildEnd)
                    : spec.PageServerConnection is { } c ? (checked((int)c.Handle), c) : null).ConfigureAwait(false);
        }
        finally
        {
            spec.PageServerConnection?.Dispose();
            lazyServerChildEnd?.Dispose();
            lazyServer?.Dispose();
        }
    }

    /// <summary>
    /// The connection a lazy dump's page server serves after post-dump, with PS_IOV_CLOSE already queued on it.
    /// CRIU keeps the tree frozen until that server ends, and the engine reads what it needs itself, so the server
    /// ends as soon as it starts, whatever happened before (post-dump refused, the engine gone): never a frozen
    /// tree waiting for a connection. Returns our end and the end CRIU inherits.
    /// </summary>
    private static (Socket Ours, OwnedFd Child) LazyServerSocket()
    {
        var (ours, child) = SocketPair.Stream();

        // struct page_server_iov { u32 cmd; (4 bytes padding) u64 nr_pages; u64 vaddr; u64 dst_id; }, little-endian.
        Span<byte> close = stackalloc byte[PageServerIovBytes];
        close.Clear();
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(close, PsIovClose);
        ours.Send(close);
        return (ours, child);
    }

    /// <summary>CRIU's PS_IOV_CLOSE command and the size of its page-server header (criu/page-xfer.c).</summary>
    private const uint PsIovClose = 0x1023;

    private const int PageServerIovBytes = 32;

    /// <summary>Restores the tree; returns the root's pid (in this process's pid namespace).</summary>
    public async Task<int> RestoreAsync(RestoreSpec spec, Func<string, int, Task<bool>>? onNotify, CancellationToken ct)
    {
        using var images = OwnedFd.OpenDirectory(spec.ImagesDir);
        using var work = OwnedFd.OpenDirectory(spec.WorkDir);
        var opts = BaseOpts(images, work, spec.LogFile);
        opts.NotifyScripts = onNotify is not null;
        spec.Flags.ApplyTo(opts);
        if (spec.LeaveStopped)
        {
            opts.LeaveStopped = true;
        }

        if (spec.LazyPages)
        {
            opts.LazyPages = true;
        }

        opts.NetworkLock = spec.NetworkLock; // as for the dump: whatever CRIU locked, it unlocks the same way

        var req = new CriuReq { Type = CriuReqType.Restore, Opts = opts };
        LogRestoreStarting(spec.ImagesDir);
        Func<CriuNotify, Task<bool>>? handler = onNotify is null ? null : n => onNotify(n.Script ?? "", n.Pid);
        var resp = await CallAsync("restore", req, Path.Combine(spec.WorkDir, spec.LogFile), handler, ct).ConfigureAwait(false);
        int pid = resp.Restore?.Pid ?? 0;
        if (pid <= 0)
        {
            throw new CriuException("restore", "CRIU reported success without a pid", [], Path.Combine(spec.WorkDir, spec.LogFile));
        }

        return pid;
    }

    private CriuOpts BaseOpts(OwnedFd images, OwnedFd work, string logFile) => new()
    {
        ImagesDirFd = images.Value,
        WorkDirFd = work.Value,
        LogFile = logFile,
        LogLevel = Options.LogLevel,
    };

    private async Task<CriuResp> CallAsync(string operation, CriuReq req, string? logPath,
        Func<CriuNotify, Task<bool>>? onNotify, CancellationToken ct, bool requireSuccess = true, (int Fd, IDisposable Owner)? inherit = null)
    {
        await using var swrk = CriuSwrk.Start(Options.CriuPath, inherit?.Fd ?? -1);
        inherit?.Owner.Dispose(); // CRIU holds its copy now
        CriuResp resp;
        try
        {
            resp = await swrk.CallAsync(req, onNotify, ct).ConfigureAwait(false);
        }
        catch (CriuNotifyHandlerException)
        {
            throw;
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or Google.Protobuf.InvalidProtocolBufferException)
        {
            throw new CriuException(operation, ex.Message, CriuLog.ReadErrors(logPath), logPath, ex);
        }

        if (resp.Type != req.Type)
        {
            throw new CriuException(operation, $"answer of type {resp.Type} to a {req.Type} request", CriuLog.ReadErrors(logPath), logPath);
        }

        if (requireSuccess && !resp.Success)
        {
            var errors = new List<string>(CriuLog.ReadErrors(logPath));
            string message = "CRIU reported failure";
            if (resp.HasCrErrmsg && !string.IsNullOrWhiteSpace(resp.CrErrmsg))
            {
                message += $": {resp.CrErrmsg.Trim()}";
            }

            if (resp.HasCrErrno && resp.CrErrno != 0)
            {
                message += $" ({Libc.Describe(resp.CrErrno)})";
            }

            if (errors.Count == 0 && swrk.Output.Length > 0)
            {
                errors.AddRange(swrk.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).TakeLast(CriuLog.MaxErrorLines));
            }

            LogCriuFailed(operation, message);
            throw new CriuException(operation, message, errors, logPath);
        }

        return resp;
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Debug, Message = "criu dump of pid {Pid} into {ImagesDir}")]
    private partial void LogDumpStarting(int pid, string imagesDir);

    [LoggerMessage(EventId = 101, Level = LogLevel.Debug, Message = "criu restore from {ImagesDir}")]
    private partial void LogRestoreStarting(string imagesDir);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "criu {Operation} failed: {Message}")]
    private partial void LogCriuFailed(string operation, string message);
}

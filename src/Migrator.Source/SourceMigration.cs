using System.Net;
using Microsoft.Extensions.Logging;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Network;
using Migration.Engine.Processes;
using Migration.Engine.Telemetry;
using Migration.PageServer.Transport;
using Migration.Source.Agent;
using Migration.Source.Events;
using Migration.Source.Precopy;

namespace Migration.Source;

/// <summary>
/// The source side of a migration: preflight and begin here, then the <see cref="Cutover"/> (pre-copy, freeze, dump,
/// transfer, restore on the target, commit or roll back), then the staging directory cleaned up.
/// </summary>
public sealed partial class SourceMigration(
    CriuClient criu, IMigrationTarget target, SourceMigrationOptions options, ILogger<SourceMigration> logger, TimeProvider time,
    Func<TargetMigration, CancellationToken, Task<IPageTransport>>? pageTransport = null)
{
    /// <summary>The tree's largest tasks a cold migration tells the target about (<see cref="TaskMemory"/>); the rest get no room made.</summary>
    public const int MaxTaskHints = 64;

    private readonly ILogger _logger = logger;

    public static string Version => Engine.BuildInfo.Version;

    /// <summary>
    /// Migrates the tree of <paramref name="pid"/>. Its events (phases, iterations, notes, and the outcome last) go to
    /// <paramref name="progress"/>. <paramref name="gate"/>, when given, is the point of no return a canceller shares
    /// (<see cref="CommitGate"/>): cancelling <paramref name="ct"/> before it rolls back to the source and fails the
    /// migration (<see cref="MigrationException"/>, the target told to discard), never leaving it half done.
    /// </summary>
    public async Task<MigrationResult> RunAsync(int pid, IProgress<MigrationEvent>? progress, CancellationToken ct, CommitGate? gate = null)
    {
        var events = new MigrationEvents(progress, time);
        long started = time.GetTimestamp();
        MigrationMetrics.RecordStarted(MigrationMetrics.RoleSource, options.Mode);
        try
        {
            var result = await RunCoreAsync(pid, events, gate, ct).ConfigureAwait(false);
            events.Outcome(MigrationOutcome.Of(result));
            SourceMetrics.Succeeded(result);
            return result;
        }
        catch (MigrationException ex)
        {
            bool cancelled = ct.IsCancellationRequested || gate?.Cancelled == true;
            events.Outcome(MigrationOutcome.Of(ex, cancelled));
            SourceMetrics.Failed(options.Mode, ex, cancelled, time.GetElapsedTime(started));
            throw;
        }
    }

    private async Task<MigrationResult> RunCoreAsync(int pid, MigrationEvents events, CommitGate? gate, CancellationToken ct)
    {
        long started = time.GetTimestamp();
        if (!ProcessTree.IsAlive(pid))
        {
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                $"process {pid} does not exist (or is a zombie): nothing to migrate");
        }

        Directory.CreateDirectory(options.WorkRoot);
        var work = Path.Combine(options.WorkRoot, $"{time.GetUtcNow():yyyyMMdd-HHmmss}-{pid}-{Random.Shared.Next(0x10000):x4}");
        var images = Path.Combine(work, "images");
        Directory.CreateDirectory(images);
        LogWorkDir(pid, work);
        TargetMigration? begun = null;
        try
        {
            await PreflightAsync(pid, work, events, ct).ConfigureAwait(false);
            // A cold dump writes every page on the target while the tree is frozen: the target makes room for them first.
            var tasks = options.Mode == "cold" ? ProcessTree.TaskMemory(pid, MaxTaskHints) : [];
            long beginAt = time.GetTimestamp();
            events.Started(MigrationPhase.Begin, "beginning the migration on the target");
            // Not cancelled half way: a Begin the target completed must be known here, to be aborted there.
            begun = await CallAsync(MigrationPhase.Begin, WorkloadOutcome.Untouched,
                c => target.BeginAsync(pid, EstimateBytes(pid), options.Mode, tasks, options.Criu, options.MoveAddresses, c), CancellationToken.None).ConfigureAwait(false);
            var beginTook = time.GetElapsedTime(beginAt);
            LogBegun(begun.Id, begun.ProvisionedBytes >> 20, beginTook.TotalMilliseconds);
            events.Ended(MigrationPhase.Begin, $"migration {begun.Id} on the target", begun.Id);
            ct.ThrowIfCancellationRequested();
            var cutover = new Cutover(this, criu, target, options, _logger, time, begun, beginTook, pid, work, images, started, events, gate);
            return await cutover.RunAsync(pageTransport, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (ct.IsCancellationRequested || gate?.Cancelled == true)
        {
            // Cancelled before anything was frozen (the cutover turns a cancellation once frozen into its rollback).
            if (begun is not null)
            {
                await AbortTargetAsync(begun.Id, "cancelled by the caller").ConfigureAwait(false);
            }

            throw new MigrationException(events.Current, WorkloadOutcome.Untouched,
                $"cancelled in {events.Current.ToString().ToLowerInvariant()}; the workload (pid {pid}) was never frozen", ex);
        }
        finally
        {
            Cleanup(images, Path.Combine(work, "cpuinfo", "cpuinfo.img"));
        }
    }

    private ServiceAddresses? _addresses;

    /// <summary>The service addresses that move with the tree (one set per migration).</summary>
    internal ServiceAddresses Addresses => _addresses ??= new ServiceAddresses(options.MoveAddresses, new AddressMover(_logger, options.AddressHook), _logger);

    private async Task PreflightAsync(int pid, string work, MigrationEvents events, CancellationToken ct)
    {
        events.Started(MigrationPhase.Preflight, "checking source and target");
        var tree = ProcessTree.Enumerate(pid);
        CheckSockets(tree, events);
        await Addresses.CheckAsync(ct).ConfigureAwait(false);
        WarnOfOutsidePipes(tree, events);
        CriuVersionInfo version;
        byte[] cpuinfo;
        var cpuDir = Path.Combine(work, "cpuinfo");
        Directory.CreateDirectory(cpuDir);
        try
        {
            version = await criu.GetVersionAsync(ct).ConfigureAwait(false);
            if (version.AsVersion < CriuOptions.MinimumVersion)
            {
                throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                    $"CRIU {version} on the source is too old: {CriuOptions.MinimumVersion} or newer is required (scripts/setup.sh builds it)");
            }

            await criu.CpuInfoDumpAsync(cpuDir, ct).ConfigureAwait(false);
            cpuinfo = await File.ReadAllBytesAsync(Path.Combine(cpuDir, "cpuinfo.img"), ct).ConfigureAwait(false);
        }
        catch (CriuException ex)
        {
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched, $"source preflight: {ex.Message}", ex);
        }

        ulong needed = EstimateBytes(pid);
        var request = new SourcePreflight(Environment.MachineName, Version, version, cpuinfo, needed, options.Mode);
        var reply = await CallAsync(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
            c => target.PreflightAsync(request, c), ct).ConfigureAwait(false);
        foreach (var check in reply.Checks)
        {
            LogPreflightCheck(check.Name, check.Ok, check.Detail);
        }

        if (!reply.Ok)
        {
            var failed = reply.Checks.Where(c => !c.Ok).Select(c => $"{c.Name}: {c.Detail}");
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                $"target {reply.Hostname} failed preflight: {string.Join("; ", failed)}");
        }

        LogPreflightOk(reply.Hostname, version.ToString(), reply.Criu?.ToString() ?? "?", needed, reply.FreeBytes);
        events.Ended(MigrationPhase.Preflight,
            $"preflight ok: target {reply.Hostname}, CRIU {version} -> {reply.Criu}, ~{needed >> 20} MiB to move, {reply.FreeBytes >> 20} MiB free");
    }

    /// <summary>Tells the target to discard the migration; a target that cannot be told is logged, not fatal.</summary>
    internal async Task AbortTargetAsync(string id, string reason)
    {
        try
        {
            using var cts = new CancellationTokenSource(options.CallTimeout);
            await target.AbortAsync(id, reason, cts.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The source copy runs; a target that cannot be told discards its unconfirmed state itself.
            LogAbortFailed(id, ex.Message);
        }
    }

    /// <summary>One call to the target, bounded by the call timeout; any failure becomes a <see cref="MigrationException"/> of <paramref name="phase"/>.</summary>
    internal async Task<T> CallAsync<T>(MigrationPhase phase, WorkloadOutcome outcome, Func<CancellationToken, Task<T>> call, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(options.CallTimeout);
        try
        {
            return await call(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new MigrationException(phase, outcome, $"{phase}: the target did not answer within {options.CallTimeout.TotalSeconds:0} s");
        }
        catch (MigrationException)
        {
            throw;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            throw new MigrationException(phase, outcome, $"{phase}: {ex.Message}", ex);
        }
    }

    /// <summary>Connections shown at most in a refusal; the log has them all.</summary>
    private const int SocketsNamed = 5;

    /// <summary>
    /// Lists the tree's sockets and refuses, before anything is frozen, what the dump would fail on or what would break
    /// silently: connected TCP sockets without --tcp-established (CRIU refuses them
    /// after the freeze), and loopback connections to a process outside the tree (its end stays behind).
    /// </summary>
    private void CheckSockets(IReadOnlyList<int> tree, MigrationEvents events)
    {
        var sockets = TreeSockets.List(tree);
        foreach (var socket in sockets)
        {
            LogSocket(socket.ToString());
        }

        var connected = sockets.Where(s => s.IsConnectedTcp).ToArray();
        if (connected.Length > 0 && !options.Criu.TcpEstablished)
        {
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                $"the tree holds {connected.Length} TCP connection(s) ({Name(connected)}): CRIU dumps them only with --tcp-established " +
                "(repair mode: they move with the tree and their peers see a pause); add it, or close the connections first");
        }

        var outside = connected.Where(s => s.Peer is null && IPAddress.IsLoopback(s.Remote!.Address)).ToArray();
        if (outside.Length > 0)
        {
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                $"the tree holds {outside.Length} loopback connection(s) to a process outside it ({Name(outside)}): that end would stay " +
                "on this host and the connection break; migrate the peer's tree too (a common ancestor), or close the connections first");
        }

        var unixOutside = sockets.Where(s => s.HasOutsideUnixPeer).ToArray();
        if (unixOutside.Length > 0 && !options.Criu.ExtUnixSk)
        {
            throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                $"the tree holds {unixOutside.Length} unix socket(s) connected to a process outside it ({Name(unixOutside)}): CRIU dumps " +
                "them only with --ext-unix-sk (and the peer must be there on the target); migrate the peer's tree too, or close the sockets first");
        }

        if (sockets.Count > 0)
        {
            events.Note(MigrationPhase.Preflight, "sockets: " + string.Join(", ", sockets
                .GroupBy(s => s.Family == SocketFamily.Tcp ? (s.IsConnectedTcp ? "tcp connected" : $"tcp {s.State.ToLowerInvariant()}") : s.Family.ToString().ToLowerInvariant())
                .OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => $"{g.Count()} {g.Key}")));
        }

        static string Name(IReadOnlyList<TreeSocket> list) =>
            string.Join("; ", list.Take(SocketsNamed).Select(s => s.ToString())) + (list.Count > SocketsNamed ? $"; {list.Count - SocketsNamed} more in the log" : "");
    }

    /// <summary>
    /// Pipes to a process outside the tree (a captured stdout or stderr) move without their other end: warned of, not
    /// refused, since a tree that never writes to them again is fine; the warning says what will happen.
    /// </summary>
    private void WarnOfOutsidePipes(IReadOnlyList<int> tree, MigrationEvents events)
    {
        foreach (var pipe in TreePipes.Outside(tree))
        {
            LogOutsidePipe(pipe.ToString());
            events.Note(MigrationPhase.Preflight, $"warning: {pipe}; redirect it to a file to keep it");
        }
    }

    private ulong EstimateBytes(int pid) => (ulong)(ProcessTree.ResidentBytes(pid) * options.SpaceHeadroom) + (1UL << 20);

    /// <summary>Removes the staged images (CRIU's logs beside them stay for diagnosis).</summary>
    private void Cleanup(string images, string cpuinfoImage)
    {
        if (options.KeepImages)
        {
            return;
        }

        try
        {
            Directory.Delete(images, recursive: true);
            File.Delete(cpuinfoImage);
        }
        catch (IOException ex)
        {
            // Leftover staging files cost disk space, not correctness; say where they are.
            LogCleanupFailed(images, ex.Message);
        }
    }

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "migration of pid {Pid}: staging in {WorkDir}")]
    private partial void LogWorkDir(int pid, string workDir);

    [LoggerMessage(EventId = 201, Level = LogLevel.Debug, Message = "preflight check {Name}: ok={Ok} {Detail}")]
    private partial void LogPreflightCheck(string name, bool ok, string detail);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "preflight ok: target {Host}, criu {SourceCriu} -> {TargetCriu}, need {Needed} bytes, target free {Free} bytes")]
    private partial void LogPreflightOk(string host, string sourceCriu, string targetCriu, ulong needed, ulong free);

    [LoggerMessage(EventId = 203, Level = LogLevel.Information, Message = "migration {Id} begun on target ({ProvisionedMib} MiB of room made for the pages ahead, {Ms:0} ms)")]
    private partial void LogBegun(string id, ulong provisionedMib, double ms);

    [LoggerMessage(EventId = 219, Level = LogLevel.Warning, Message = "preflight: {Pipe}")]
    private partial void LogOutsidePipe(string pipe);

    [LoggerMessage(EventId = 218, Level = LogLevel.Debug, Message = "preflight: socket {Socket}")]
    private partial void LogSocket(string socket);

    [LoggerMessage(EventId = 211, Level = LogLevel.Warning, Message = "could not abort migration {Id} on the target: {Message}")]
    private partial void LogAbortFailed(string id, string message);

    [LoggerMessage(EventId = 212, Level = LogLevel.Warning, Message = "could not remove staging directory {Dir}: {Message}")]
    private partial void LogCleanupFailed(string dir, string message);
}

using Migration.Engine.Criu;
using Migration.Engine.Processes;
using Migration.Engine.Security;
using Migration.PageServer.Streaming;
using Migration.PageServer.Transport;
using Migration.Source;
using Migration.Source.Agent;
using Migration.Source.Events;
using Migration.Target.Incoming;
using Endpoint = Migration.Engine.Network.Endpoint;

namespace Migration.Target.Outgoing;

/// <summary>
/// The migrations this agent runs as their source (StartMigration): each on the source role
/// (<see cref="SourceMigration"/>), its events kept for watchers, the last <see cref="MaxKept"/> remembered. The agent's
/// token reaches the target agent (same mutual TLS as any source). Owns every run: disposing cancels those not yet
/// committed (they roll back to this host) and waits for all of them, so that the agent never exits mid-cutover.
/// </summary>
public sealed partial class OutgoingMigrations(CriuClient criu, TokenCredentials credentials, TargetOptions agentOptions, ILoggerFactory loggers,
    TimeProvider time) : IAsyncDisposable
{
    /// <summary>Migrations remembered (running and ended): the oldest ended one is forgotten past this.</summary>
    public const int MaxKept = 50;

    /// <summary>Outgoing migrations running at once: each freezes a tree and moves its memory; a host does few at a time.</summary>
    public const int MaxRunning = 4;

    /// <summary>PID_MAX_LIMIT on 64-bit Linux.</summary>
    private const int MaxPid = 4 * 1024 * 1024;

    /// <summary>How long disposing waits for runs to roll back or finish (a commit's retries take up to 2 minutes).</summary>
    private static readonly TimeSpan s_drainTimeout = TimeSpan.FromMinutes(3);

    private readonly Lock _lock = new();
    private readonly List<OutgoingMigration> _kept = []; // oldest first
    private readonly ILogger _logger = loggers.CreateLogger<OutgoingMigrations>();
    private bool _disposed;

    /// <summary>Per-migration event bound (<see cref="MigrationEventLog"/>).</summary>
    public int MaxEventsPerMigration { get; init; } = MigrationEventLog.DefaultMaxEvents;

    /// <summary>Where the source role stages its dumps: a directory of the agent's work root (its CRIU logs stay there).</summary>
    public string WorkRoot => Path.Combine(agentOptions.WorkRoot, "outgoing");

    /// <summary>
    /// Starts migrating the tree of <paramref name="pid"/> to the agent at <paramref name="target"/>, and returns at once.
    /// Refuses (<see cref="TargetRequestException"/>) what cannot start: no such process, the agent's own tree, a tree
    /// already being migrated, too many running.
    /// </summary>
    public OutgoingMigration Start(int pid, Endpoint target, SourceMigrationOptions options, string compress)
    {
        if (pid is <= 1 or > MaxPid)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"pid {pid}: a tree's root is 2..{MaxPid}");
        }

        if (!ProcessTree.IsAlive(pid))
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"process {pid} does not exist on this host (or is a zombie)");
        }

        if (ProcessTree.Enumerate(pid).Contains(Environment.ProcessId))
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"process {pid}'s tree holds this agent (pid {Environment.ProcessId}): an agent cannot migrate itself");
        }

        OutgoingMigration m;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var running = _kept.Where(k => k.Events.Outcome is null).ToArray();
            if (running.Any(k => k.Pid == pid))
            {
                throw new TargetRequestException(TargetError.FailedPrecondition, $"process {pid} is already being migrated");
            }

            if (running.Length >= MaxRunning)
            {
                throw new TargetRequestException(TargetError.ResourceExhausted, $"{running.Length} outgoing migrations already running (at most {MaxRunning})");
            }

            var id = $"out-{time.GetUtcNow():yyyyMMddHHmmss}-{Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4)).ToLowerInvariant()}";
            m = new OutgoingMigration(id, pid, target, time.GetUtcNow(), MaxEventsPerMigration);
            _kept.Add(m);
            Forget();
            m.Completion = RunAsync(m, options with { WorkRoot = WorkRoot, AddressHook = agentOptions.AddressHook }, compress);
        }

        LogStarted(m.Id, pid, target.ToString(), options.Mode);
        return m;
    }

    /// <exception cref="TargetRequestException">NotFound: no such outgoing migration (or forgotten).</exception>
    public OutgoingMigration Get(string id)
    {
        lock (_lock)
        {
            return _kept.FirstOrDefault(m => m.Id == id)
                ?? throw new TargetRequestException(TargetError.NotFound, $"no outgoing migration '{PeerText.Printable(id)}' on this agent (the last {MaxKept} are kept)");
        }
    }

    /// <summary>Every migration remembered, oldest first.</summary>
    public IReadOnlyList<OutgoingMigration> List()
    {
        lock (_lock)
        {
            return _kept.ToArray();
        }
    }

    /// <summary>
    /// Cancels a migration before its commit and waits (bounded by <paramref name="ct"/>) for its rollback: the workload
    /// runs on this host, the target discarded what it held. Returns the outcome, or null if it did not end in time.
    /// </summary>
    /// <exception cref="TargetRequestException">FailedPrecondition: it committed (too late) or already ended.</exception>
    public async Task<MigrationOutcome?> CancelAsync(string id, string reason, CancellationToken ct)
    {
        var m = Get(id);
        if (m.Events.Outcome is { } ended)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, ended.Succeeded
                ? $"migration {m.Id} already completed: too late to cancel (the workload is {ended.Workload})"
                : $"migration {m.Id} already ended ({m.State}): nothing to cancel");
        }

        if (!m.Gate.TryCancel(m.Cancellation))
        {
            throw new TargetRequestException(TargetError.FailedPrecondition,
                $"migration {m.Id} is past its commit: too late to cancel (the source copy is stopped and the target's is being resumed)");
        }

        LogCancelling(m.Id, reason);
        try
        {
            await m.Completion.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return null; // the caller's deadline: the rollback goes on, its outcome comes to the watchers
        }

        return m.Events.Outcome;
    }

    private async Task RunAsync(OutgoingMigration m, SourceMigrationOptions options, string compress)
    {
        await Task.Yield(); // StartMigration answers at once; the run goes on without it
        try
        {
            using var channel = new AgentChannel(m.Target, credentials, TimeSpan.FromSeconds(10));
            var target = new AgentClient(channel, options.CallTimeout);
            bool compression = compress switch
            {
                "always" => true,
                "never" => false,
                _ => !m.Target.IsLoopback,
            };
            var codec = new PageFrameWriterOptions(disableCompression: !compression);
            var migration = new SourceMigration(criu, target, options, loggers.CreateLogger<SourceMigration>(), time,
                (begun, c) => SourcePageTransport.StartAsync(m.Target with { Port = begun.PagePort }, credentials, begun.Id, loggers, c, codec));
            var result = await migration.RunAsync(m.Pid, m, m.Cancellation.Token, m.Gate).ConfigureAwait(false);
            LogDone(m.Id, result.TargetPid, result.Frozen.TotalMilliseconds);
        }
        catch (MigrationException ex)
        {
            // The outcome, with the workload's place, is in the migration's events already.
            LogFailed(m.Id, ex.Phase.ToString(), ex.Outcome.ToString(), ex.Message);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Not a failure the source role classified: where the workload is cannot be said from here; the log has the stack.
            LogUnexpected(m.Id, ex);
            m.Report(new MigrationEvent(MigrationEventKind.Outcome, m.Events.Phase ?? MigrationPhase.Preflight, time.GetUtcNow(), $"failed: {ex.Message}")
            {
                Outcome = new MigrationOutcome
                {
                    Succeeded = false,
                    Workload = "unknown",
                    ExitCode = 1,
                    FailedPhase = m.Events.Phase ?? MigrationPhase.Preflight,
                    Error = $"{ex.GetType().Name}: {ex.Message} (see the agent's log)",
                    Cancelled = m.CancelRequested,
                },
            });
        }
    }

    /// <summary>Past <see cref="MaxKept"/>, the oldest ended migrations are forgotten (a running one never is). Under the lock.</summary>
    private void Forget()
    {
        while (_kept.Count > MaxKept && _kept.FindIndex(k => k.Events.Outcome is not null) is int oldest and >= 0)
        {
            _kept.RemoveAt(oldest);
        }
    }

    public async ValueTask DisposeAsync()
    {
        OutgoingMigration[] runs;
        lock (_lock)
        {
            _disposed = true;
            runs = _kept.Where(k => k.Events.Outcome is null).ToArray();
        }

        foreach (var m in runs)
        {
            if (m.Gate.TryCancel(m.Cancellation))
            {
                LogCancelling(m.Id, "the agent is stopping");
            }
        }

        try
        {
            await Task.WhenAll(runs.Select(r => r.Completion)).WaitAsync(s_drainTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            LogDrainTimeout(runs.Count(r => !r.Completion.IsCompleted), s_drainTimeout.TotalSeconds);
        }
    }

    [LoggerMessage(EventId = 1300, Level = LogLevel.Information, Message = "outgoing migration {Id}: pid {Pid} to {Target} ({Mode})")]
    private partial void LogStarted(string id, int pid, string target, string mode);

    [LoggerMessage(EventId = 1301, Level = LogLevel.Information, Message = "outgoing migration {Id}: cancel requested ({Reason})")]
    private partial void LogCancelling(string id, string reason);

    [LoggerMessage(EventId = 1302, Level = LogLevel.Information, Message = "outgoing migration {Id} committed: target pid {Pid}, frozen {Ms:0} ms")]
    private partial void LogDone(string id, int pid, double ms);

    [LoggerMessage(EventId = 1303, Level = LogLevel.Warning, Message = "outgoing migration {Id} failed in {Phase}, workload {Outcome}: {Message}")]
    private partial void LogFailed(string id, string phase, string outcome, string message);

    [LoggerMessage(EventId = 1304, Level = LogLevel.Error, Message = "outgoing migration {Id} failed unexpectedly")]
    private partial void LogUnexpected(string id, Exception ex);

    [LoggerMessage(EventId = 1305, Level = LogLevel.Error, Message = "{Count} outgoing migrations still running {Seconds:0} s after the agent began stopping")]
    private partial void LogDrainTimeout(int count, double seconds);
}

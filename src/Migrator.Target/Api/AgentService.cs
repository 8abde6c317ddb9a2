using Google.Protobuf;
using Grpc.Core;
using Migration.Control.V1;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Migration.Target.Incoming;
using Migration.Target.Outgoing;
using TaskMemory = Migration.Engine.Processes.TaskMemory;

namespace Migration.Target.Api;

/// <summary>
/// The Agent service (proto/migrate/v1/agent.proto) over <see cref="TargetAgent"/>. Its methods throw what they refuse
/// (<see cref="TargetRequestException"/>); <see cref="CallStatusInterceptor"/> makes that the caller's status.
/// </summary>
public sealed partial class AgentService(TargetAgent agent, PageStreamOptions pageStreams, OutgoingMigrations outgoing, ILogger<AgentService> logger)
    : Agent.AgentBase
{
    /// <summary>Tasks a Begin may name (the source sends its largest 64): a bound on what one request makes the agent walk.</summary>
    public const int MaxTasks = 1024;

    /// <summary>PID_MAX_LIMIT on 64-bit Linux: no task has a larger pid.</summary>
    private const uint MaxPid = 4 * 1024 * 1024;

    public override async Task<PreflightReply> Preflight(PreflightRequest req, ServerCallContext ctx)
    {
        var v = req.SourceCriu ?? new CriuVersion();
        var request = new SourcePreflight(Clip(req.SourceHost), Clip(req.SourceVersion),
            new CriuVersionInfo(v.Major, v.Minor, v.Sublevel, Clip(v.Text)), req.CpuinfoImage.ToByteArray(), req.BytesNeeded, Clip(req.Mode));
        var result = await agent.PreflightAsync(request, ctx.CancellationToken).ConfigureAwait(false);
        var reply = new PreflightReply
        {
            Ok = result.Ok,
            AgentVersion = result.AgentVersion,
            Hostname = result.Hostname,
            FreeBytes = result.FreeBytes,
        };
        if (result.Criu is { } c)
        {
            reply.TargetCriu = new CriuVersion { Major = c.Major, Minor = c.Minor, Sublevel = c.Sublevel, Text = c.Text };
        }

        reply.Checks.AddRange(result.Checks.Select(x => new PreflightCheck { Name = x.Name, Ok = x.Ok, Detail = x.Detail }));
        return reply;
    }

    public override Task<BeginReply> Begin(BeginRequest req, ServerCallContext ctx)
    {
        if (req.Mode is not ("cold" or "precopy"))
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"mode '{Clip(req.Mode)}' is not supported");
        }

        if (req.Tasks.Count > MaxTasks)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"{req.Tasks.Count} tasks named; at most {MaxTasks} are taken");
        }

        var tasks = new List<TaskMemory>(req.Tasks.Count);
        foreach (var t in req.Tasks)
        {
            if (t.Pid is 0 or > MaxPid || t.Bytes == 0)
            {
                throw new TargetRequestException(TargetError.InvalidArgument, $"task pid {t.Pid} with {t.Bytes} bytes: a pid is 1..{MaxPid}, and only tasks with memory are named");
            }

            tasks.Add(new TaskMemory((int)t.Pid, t.Bytes));
        }

        CriuFlags flags;
        try
        {
            flags = CriuFlags.FromNames(req.CriuFlags);
        }
        catch (ArgumentException ex)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, ex.Message);
        }

        if (req.ServiceAddresses.Count > 16)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"{req.ServiceAddresses.Count} service addresses; at most 16 are taken");
        }

        var addresses = new List<Engine.Network.ServiceAddress>();
        foreach (var text in req.ServiceAddresses)
        {
            if (!Engine.Network.ServiceAddress.TryParse(Clip(text), out var a, out var error))
            {
                throw new TargetRequestException(TargetError.InvalidArgument, $"service address: {error}");
            }

            addresses.Add(a);
        }

        var m = agent.Begin(Clip(req.SourceHost), req.SourcePid, req.BytesExpected, req.Mode, tasks, flags, addresses);
        LogBegin(m.Id, ctx.Peer);
        return Task.FromResult(new BeginReply
        {
            MigrationId = m.Id,
            MaxImageBytes = m.MaxBytes,
            MaxImageFiles = (uint)agent.Options.MaxImageFiles,
            PagePort = agent.AcceptsPageStreams ? (uint)pageStreams.Port : 0,
            ProvisionedBytes = m.ProvisionedBytes,
        });
    }

    public override Task<PutImageReply> PutImage(ImageChunk req, ServerCallContext ctx)
    {
        var m = agent.Get(req.MigrationId);
        if (agent.Options.Faults.Contains(Faults.CutTransfer) && m.ChunksReceived >= 1)
        {
            LogFault(m.Id, Faults.CutTransfer);
            ctx.GetHttpContext().Abort();
            throw new OperationCanceledException("connection cut by fault injection");
        }

        var (fileBytes, total) = m.PutChunk(req.Name, req.Offset, req.Data.Span, req.Last);
        return Task.FromResult(new PutImageReply { FileBytes = fileBytes, TotalBytes = total });
    }

    public override Task<PrepareCutoverReply> PrepareCutover(PrepareCutoverRequest req, ServerCallContext ctx)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            agent.Get(req.MigrationId).PrepareCutover(ctx.CancellationToken);
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException or UnauthorizedAccessException)
        {
            throw new TargetRequestException(TargetError.Internal, $"writing the parent image failed: {ex.Message}");
        }

        return Task.FromResult(new PrepareCutoverReply { Ms = (uint)sw.ElapsedMilliseconds });
    }

    public override async Task<RestoreReply> Restore(RestoreRequest req, ServerCallContext ctx)
    {
        var manifest = req.Manifest.Select(f => new Engine.Images.ImageFileInfo(f.Name, f.Size, f.Sha256.ToByteArray())).ToArray();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int pid = await agent.RestoreAsync(req.MigrationId, manifest, req.PagesStreamed, req.LazyPages, ctx.CancellationToken).ConfigureAwait(false);
        return new RestoreReply { Pid = pid, RestoreMs = (uint)sw.ElapsedMilliseconds };
    }

    public override Task<CommitReply> Commit(CommitRequest req, ServerCallContext ctx)
    {
        var (pid, resumed) = agent.Get(req.MigrationId).Commit();
        return Task.FromResult(new CommitReply { Pid = pid, TasksResumed = (uint)resumed });
    }

    public override async Task<AbortReply> Abort(AbortRequest req, ServerCallContext ctx)
    {
        bool killed = await agent.AbortAsync(req.MigrationId, Clip(req.Reason)).ConfigureAwait(false);
        return new AbortReply { KilledRestoredTree = killed };
    }

    public override async Task<MigrationInfo> GetMigration(GetMigrationRequest req, ServerCallContext ctx)
    {
        if (agent.Options.Faults.Contains(Faults.StallGetMigration))
        {
            LogStall(Faults.StallGetMigration, ctx.Deadline);
            await Task.Delay(Timeout.Infinite, ctx.CancellationToken).ConfigureAwait(false);
        }

        var m = agent.Get(req.MigrationId);
        var info = new MigrationInfo
        {
            MigrationId = m.Id,
            State = m.State.ToString().ToLowerInvariant(),
            BytesReceived = m.BytesReceived,
            Pid = m.RestoredPid,
            Error = m.Error ?? "",
        };
        if (m.Pages is PageServer.Store.PageStoreAttachment { Claimed: true } pages)
        {
            info.Pages = pages.Progress.Snapshot();
        }

        return info;
    }

    /// <summary>Peer strings go into logs and messages: bounded and without control characters.</summary>
    private static string Clip(string? s) =>
        s is null ? "" : new string(s.Take(256).Select(c => char.IsControl(c) ? '?' : c).ToArray());

    [LoggerMessage(EventId = 600, Level = LogLevel.Information, Message = "migration {Id} begun by {Peer}")]
    private partial void LogBegin(string id, string peer);

    [LoggerMessage(EventId = 601, Level = LogLevel.Warning, Message = "fault injected in migration {Id}: {Fault}")]
    private partial void LogFault(string id, string fault);

    [LoggerMessage(EventId = 602, Level = LogLevel.Warning, Message = "fault injected: {Fault}: GetMigration answers only once its call is cancelled (deadline {Deadline:o})")]
    private partial void LogStall(string fault, DateTime deadline);
}

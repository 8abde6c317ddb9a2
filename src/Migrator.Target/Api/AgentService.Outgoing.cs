using Grpc.Core;
using Migration.Control.V1;
using Migration.Source;
using Migration.Source.Agent;
using Migration.Target.Incoming;
using Migration.Target.Outgoing;
using Endpoint = Migration.Engine.Network.Endpoint;

namespace Migration.Target.Api;

/// <summary>The source role's calls (StartMigration, WatchMigration, GetOutgoingMigration, CancelMigration) and ListMigrations.</summary>
public sealed partial class AgentService
{
    /// <summary>Longest HOST:PORT taken (a DNS name is at most 253 characters).</summary>
    private const int MaxTargetLength = 300;

    public override Task<StartMigrationReply> StartMigration(StartMigrationRequest req, ServerCallContext ctx)
    {
        if (req.Target.Length > MaxTargetLength)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"target of {req.Target.Length} characters: at most {MaxTargetLength} are taken");
        }

        if (!Endpoint.TryParse(req.Target, out var target, out var error))
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"target '{Clip(req.Target)}': {error}");
        }

        SourceMigrationOptions options;
        string compress;
        try
        {
            (options, compress) = MigrationWire.FromWire(req.Options, new SourceMigrationOptions());
        }
        catch (ArgumentException ex)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"options: {ex.Message}");
        }

        var m = outgoing.Start(req.Pid, target, options, compress);
        LogStartMigration(m.Id, req.Pid, target.ToString(), ctx.Peer);
        return Task.FromResult(new StartMigrationReply { MigrationId = m.Id });
    }

    public override async Task WatchMigration(WatchMigrationRequest req, IServerStreamWriter<MigrationEvent> responseStream, ServerCallContext ctx)
    {
        var m = outgoing.Get(req.MigrationId);
        using var watching = m.TryWatch()
            ?? throw new TargetRequestException(TargetError.ResourceExhausted, $"migration {m.Id} already has {OutgoingMigration.MaxWatchers} watchers");
        await foreach (var (seq, e) in m.Events.ReadAllAsync(ctx.CancellationToken).ConfigureAwait(false))
        {
            await responseStream.WriteAsync(MigrationWire.ToWire(e, seq), ctx.CancellationToken).ConfigureAwait(false);
        }
    }

    public override Task<OutgoingMigrationInfo> GetOutgoingMigration(GetOutgoingMigrationRequest req, ServerCallContext ctx) =>
        Task.FromResult(Info(outgoing.Get(req.MigrationId)));

    public override async Task<CancelMigrationReply> CancelMigration(CancelMigrationRequest req, ServerCallContext ctx)
    {
        var outcome = await outgoing.CancelAsync(req.MigrationId, Clip(req.Reason), ctx.CancellationToken).ConfigureAwait(false);
        var reply = new CancelMigrationReply();
        if (outcome is not null)
        {
            reply.Outcome = MigrationWire.ToWire(outcome);
        }

        return reply;
    }

    public override Task<ListMigrationsReply> ListMigrations(ListMigrationsRequest req, ServerCallContext ctx)
    {
        var reply = new ListMigrationsReply();
        reply.Migrations.AddRange(agent.Migrations.Select(m => new MigrationSummary
        {
            MigrationId = m.Id,
            Direction = "incoming",
            State = m.State.ToString().ToLowerInvariant(),
            Pid = m.RestoredPid,
            Error = m.Error ?? "",
        }));
        reply.Migrations.AddRange(outgoing.List().Select(m => new MigrationSummary
        {
            MigrationId = m.Id,
            Direction = "outgoing",
            State = m.State,
            Pid = m.Pid,
            Peer = m.Target.ToString(),
            Error = m.Events.Outcome?.Error ?? "",
        }));
        return Task.FromResult(reply);
    }

    private static OutgoingMigrationInfo Info(OutgoingMigration m)
    {
        var info = new OutgoingMigrationInfo
        {
            MigrationId = m.Id,
            State = m.State,
            Pid = m.Pid,
            Target = m.Target.ToString(),
            TargetMigrationId = m.TargetMigrationId ?? "",
            Phase = m.Events.Phase is { } p ? MigrationWire.PhaseName(p) : "",
            StartedUnixMicros = (m.StartedAt - DateTimeOffset.UnixEpoch).Ticks / 10,
            Events = (ulong)m.Events.Count,
            DroppedEvents = (ulong)m.Events.Dropped,
            CancelRequested = m.CancelRequested,
        };
        if (m.Events.Outcome is { } o)
        {
            info.Outcome = MigrationWire.ToWire(o);
        }

        return info;
    }

    [LoggerMessage(EventId = 603, Level = LogLevel.Information, Message = "outgoing migration {Id} (pid {Pid} to {Target}) started by {Peer}")]
    private partial void LogStartMigration(string id, int pid, string target, string peer);
}

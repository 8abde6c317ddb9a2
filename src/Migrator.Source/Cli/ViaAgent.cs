using System.Text.Json;
using Grpc.Core;
using Migration.Engine.Network;
using Migration.Engine.Security;
using Migration.Source;
using Migration.Source.Agent;
using Wire = Migration.Control.V1;

/// <summary>
/// <c>migrate --via-agent HOST:PORT</c>: the migration runs on the agent of the source host (StartMigration), and this
/// command renders its events (WatchMigration) as a local run prints them, with the same --json and --events jsonl.
/// A broken watch stream is resumed (the agent replays the history; events already shown are skipped); Ctrl+C asks
/// the agent to cancel (CancelMigration) and waits for the outcome.
/// </summary>
internal static class ViaAgent
{
    /// <summary>Exit code when contact with the agent is lost: the migration goes on there and its outcome is not known here.</summary>
    public const int LostContact = 5;

    /// <summary>Watch streams opened again after one breaks, before giving up.</summary>
    private const int Reconnects = 5;

    private static readonly TimeSpan s_reconnectPause = TimeSpan.FromSeconds(2);

    public static async Task<int> RunAsync(Endpoint agent, Endpoint target, TokenCredentials credentials, int pid, Wire.MigrationOptions options,
        bool asJson, bool jsonl, CancellationToken ct)
    {
        using var channel = new AgentChannel(agent, credentials, TimeSpan.FromSeconds(10));
        var request = new Wire.StartMigrationRequest { Pid = pid, Target = target.ToString(), Options = options };
        string id;
        try
        {
            id = (await channel.CallAsync("StartMigration", (c, o) => c.StartMigrationAsync(request, o), TimeSpan.FromSeconds(30), ct)).MigrationId;
        }
        catch (RpcException ex)
        {
            return Fail(asJson, ex.StatusCode is StatusCode.InvalidArgument ? 2 : 1, "start", "untouched", $"the agent at {agent} did not start the migration: {ex.Status.Detail}");
        }

        Console.Error.WriteLine($"[start] migration {id} running on the agent at {agent}");
        ulong next = 0;
        Wire.MigrationOutcome? outcome = null;
        bool cancelled = false;
        for (int attempt = 0; outcome is null && attempt <= Reconnects; attempt++)
        {
            try
            {
                using var call = channel.Client.WatchMigration(new Wire.WatchMigrationRequest { MigrationId = id }, new CallOptions(cancellationToken: cancelled ? default : ct));
                while (await call.ResponseStream.MoveNext(cancelled ? default : ct))
                {
                    var e = call.ResponseStream.Current;
                    if (e.Seq < next)
                    {
                        continue; // replayed after a reconnect: shown already
                    }

                    next = e.Seq + 1;
                    attempt = 0;
                    Render(e, jsonl);
                    outcome = e.Outcome ?? outcome;
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException || ex is RpcException { StatusCode: StatusCode.Cancelled } && ct.IsCancellationRequested)
            {
                if (!cancelled)
                {
                    cancelled = true;
                    attempt--; // the cancel's own stream is not a reconnect
                    await CancelAsync(channel, id).ConfigureAwait(false);
                }
            }
            catch (RpcException ex) when (ex.StatusCode is StatusCode.NotFound)
            {
                // The agent restarted (it forgets its migrations) or forgot this one: nothing more to watch.
                Console.Error.WriteLine($"migrate: watching migration {id} on {agent}: {ex.Status.Detail}");
                break;
            }
            catch (RpcException ex)
            {
                Console.Error.WriteLine($"migrate: watching migration {id} on {agent}: {ex.Status.Detail}; reconnecting");
                await Task.Delay(s_reconnectPause, CancellationToken.None).ConfigureAwait(false);
            }
        }

        if (outcome is null)
        {
            return Fail(asJson, LostContact, "watch", "unknown",
                $"lost contact with the agent at {agent}: migration {id} goes on there; ask it (GetOutgoingMigration {id}) where the workload is");
        }

        if (!outcome.Succeeded)
        {
            return Fail(asJson, outcome.ExitCode, outcome.FailedPhase, outcome.Workload, outcome.Error);
        }

        Console.Out.WriteLine($"migrated pid {pid} -> {target} pid {outcome.TargetPid} (via the agent at {agent}, migration {id})");
        Console.Out.WriteLine($"  frozen   {outcome.FrozenMs} ms; total {outcome.TotalMs} ms; {outcome.BytesSent / 1048576.0:0.0} MiB on the wire");
        if (asJson)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["status"] = outcome.Workload == "running-on-target" ? "migrated" : "dry-run",
                ["migrationId"] = id,
                ["sourcePid"] = pid,
                ["targetPid"] = outcome.TargetPid,
                ["frozenMs"] = outcome.FrozenMs,
                ["totalMs"] = outcome.TotalMs,
                ["bytesSent"] = outcome.BytesSent,
            }));
        }

        return 0;
    }

    private static void Render(Wire.MigrationEvent e, bool jsonl)
    {
        if (e.Message.Length > 0 && e.Kind != "outcome")
        {
            Console.Error.WriteLine($"[{e.Phase}] {e.Message}");
        }

        if (jsonl)
        {
            Console.Out.WriteLine(Google.Protobuf.JsonFormatter.Default.Format(e));
        }
    }

    private static async Task CancelAsync(AgentChannel channel, string id)
    {
        Console.Error.WriteLine($"[cancel] asking the agent to cancel migration {id}");
        try
        {
            await channel.CallAsync("CancelMigration", (c, o) => c.CancelMigrationAsync(new Wire.CancelMigrationRequest { MigrationId = id, Reason = "migrate interrupted" }, o),
                TimeSpan.FromMinutes(2), CancellationToken.None).ConfigureAwait(false);
        }
        catch (RpcException ex)
        {
            // Too late (committed) or already ended: the watch stream that follows says how it ended.
            Console.Error.WriteLine($"[cancel] {ex.Status.Detail}");
        }
    }

    private static int Fail(bool asJson, int code, string phase, string workload, string message)
    {
        Console.Error.WriteLine($"migrate: {message}");
        if (asJson)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["status"] = "failed",
                ["phase"] = phase,
                ["workload"] = workload,
                ["error"] = message,
            }));
        }

        return code;
    }
}

using System.CommandLine;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Migration.Engine.Criu;
using Migration.Engine.Network;
using Migration.Engine.Security;
using Migration.PageServer.Transport;
using Migration.Source;
using Migration.Source.Agent;
using Migration.Source.Events;
using Migration.Source.Precopy;
using Serilog;
using Serilog.Events;
using Serilog.Extensions.Logging;

var to = new Option<string>("--to") { Description = "The target agent, HOST:PORT (migrate-agent --listen)", Required = true };
var tokenFile = new Option<string>("--token-file") { Description = "File holding the shared secret token (mode 600); the agent uses the same one", Required = true };
var mode = new Option<string>("--mode") { Description = "precopy: copy memory while the workload runs (userfaultfd write-protect dirty tracking), then freeze briefly for the rest; cold: freeze, dump, transfer, restore", DefaultValueFactory = _ => "precopy" };
mode.AcceptOnlyFromAmong("precopy", "cold");
var finalDump = new Option<string>("--final-dump") { Description = "precopy mode, while frozen: lazy: CRIU dumps metadata only and only pages written since the last iteration are read and sent; full: CRIU reads every page once more and only the changed ones are sent (slower; a fallback)", DefaultValueFactory = _ => "lazy" };
finalDump.AcceptOnlyFromAmong("lazy", "full");
var restorePages = new Option<string>("--restore-pages") { Description = "precopy mode with --final-dump lazy, on the target: lazy: the tree resumes before its memory is filled (criu lazy-pages fills it from the target's own copy, first-touched pages first); eager: the restore reads every page before the tree resumes (longer freeze)", DefaultValueFactory = _ => "lazy" };
restorePages.AcceptOnlyFromAmong("lazy", "eager");
var maxIterations = new Option<int>("--max-iterations") { Description = "Pre-copy iterations at most, the full first copy included", DefaultValueFactory = _ => 8 };
var maxDowntime = new Option<int>("--max-downtime") { Description = "Milliseconds the final dirty set may take to move at the measured rate: pre-copy stops once it fits", DefaultValueFactory = _ => 100 };
var autoConverge = new Option<string>("--auto-converge") { Description = "precopy mode: on: when the tree writes faster than the link moves its dirty pages within --max-downtime, throttle it (SIGSTOP/SIGCONT duty cycle: 20% of each 100 ms stopped, +10% per iteration that still does not converge, up to 99%) instead of freezing with its whole hot set; lifted at the freeze and on every failure. off: never slow the tree", DefaultValueFactory = _ => "on" };
autoConverge.AcceptOnlyFromAmong("on", "off");
var json = new Option<bool>("--json") { Description = "Print the result as one JSON object on the last line of stdout" };
var workDir = new Option<string>("--work-dir") { Description = "Staging directory for the dump (removed afterwards; CRIU logs kept)", DefaultValueFactory = _ => "/var/lib/migrate/source" };
var logDir = new Option<string>("--log-dir") { Description = "Directory for this command's log file", DefaultValueFactory = _ => "/var/log/migrate" };
var keepImages = new Option<bool>("--keep-images") { Description = "Keep the staged images after the migration (for debugging)" };
// The CRIU options a user may set, one flag each, from their one table (CriuFlags.All): the dump here and the
// restore on the target both get them.
var criuFlags = CriuFlags.All.Select(f => (f.Name, Option: new Option<bool>("--" + f.Name) { Description = $"CRIU: {f.Help} (dump and restore)" })).ToArray();
var moveAddress = new Option<string[]>("--move-address") { Description = "Service address ADDR/PREFIX (IPv4 or IPv6; repeatable) that moves with the tree: taken off this host while the tree is frozen, brought up on the target's service interface before the restore, neighbours told at once; put back here if the migration fails. Use with --tcp-established to keep its connections", AllowMultipleArgumentsPerToken = false };
var addressHook = new Option<string>("--address-hook") { Description = "Program that takes a service address down here (and back up on a rollback) instead of ip addr: PROGRAM down|up ADDR/PREFIX IFACE, 10 s at most, exit 0 for success" };
var timeout = new Option<int>("--timeout") { Description = "Seconds the target gets to receive and restore while the workload is frozen; past it the source resumes", DefaultValueFactory = _ => 600 };
var compress = new Option<string>("--compress") { Description = "LZ4 on the page stream: auto (on unless the target is on loopback, where the link is not the bottleneck), always, never. Zero pages are elided always", DefaultValueFactory = _ => "auto" };
compress.AcceptOnlyFromAmong("auto", "always", "never");
var dryRun = new Option<bool>("--dry-run") { Description = "Move the memory and images to the target and discard them there; the tree keeps running here. Measures what a migration would move and how fast" };
var events = new Option<string>("--events") { Description = "jsonl: print every event of the migration (phases with timestamps, pre-copy iterations, notes, the outcome last) as one JSON object per line on stdout, in the form the agent's WatchMigration streams them (proto/migrate/v1/agent.proto, protobuf JSON); the progress lines on stderr stay" };
events.AcceptOnlyFromAmong("jsonl");
var viaAgent = new Option<string>("--via-agent") { Description = "Run the migration on the agent of the source host, HOST:PORT (migrate-agent --listen there, same token), and show its events here: StartMigration, then WatchMigration. PID is a process of that host; --to is the target agent as that host reaches it; the agent's own --address-hook and directories apply. Ctrl+C asks the agent to cancel (before the commit the workload resumes on the source). Exit 5: contact with the agent lost, the migration goes on there" };
var verbose = new Option<bool>("--verbose", "-v") { Description = "Debug-level logging on stderr" };
var pidArg = new Argument<int>("PID") { Description = "Root of the process tree to migrate" };

var root = new RootCommand("""
    migrate: move a running process tree to another host.

    The tree is frozen, dumped with CRIU, sent to the target agent, restored there (left stopped), and only
    when the target confirms the restore is the source copy killed and the target copy resumed. On any
    failure before that the workload resumes on the source and migrate exits non-zero.

    Exit codes: 0 migrated; 1 failed, the workload runs on the source (or was never touched);
    2 usage error; 3 the source copy is gone but the target could not confirm resuming its copy;
    4 the source copy is gone and the target refused to resume its copy (it could not get its memory): none runs;
    5 (--via-agent) contact with the agent running the migration was lost: it goes on there.
    """)
{
    to, tokenFile, mode, finalDump, restorePages, maxIterations, maxDowntime, autoConverge, json, workDir, logDir, keepImages, moveAddress, addressHook, timeout, compress, dryRun, events, viaAgent, verbose, pidArg,
};
foreach (var (_, option) in criuFlags)
{
    root.Options.Add(option);
}

root.SetAction(async (parse, ct) =>
{
    bool asJson = parse.GetValue(json);
    int pid = parse.GetValue(pidArg);
    var logs = parse.GetValue(logDir)!;
    var logPath = Path.Combine(logs, $"migrate-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{pid}.log");
    try
    {
        Directory.CreateDirectory(logs);
    }
    catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
    {
        return Fail(asJson, 2, "usage", WorkloadOutcome.Untouched, $"cannot create log directory {logs}: {ex.Message}");
    }

    Log.Logger = new LoggerConfiguration()
        .MinimumLevel.Debug()
        .WriteTo.Console(restrictedToMinimumLevel: parse.GetValue(verbose) ? LogEventLevel.Debug : LogEventLevel.Warning,
            standardErrorFromLevel: LogEventLevel.Verbose, outputTemplate: "{Timestamp:HH:mm:ss.fff} {Level:u3} {Message:lj}{NewLine}{Exception}")
        .WriteTo.File(logPath, outputTemplate: "{Timestamp:o} {Level:u3} [{SourceContext}] {Message:lj}{NewLine}{Exception}")
        .CreateLogger();
    using ILoggerFactory loggers = new SerilogLoggerFactory(Log.Logger);
    try
    {
        if (pid <= 0)
        {
            return Fail(asJson, 2, "usage", WorkloadOutcome.Untouched, $"PID must be positive, got {pid}");
        }

        if (!Endpoint.TryParse(parse.GetValue(to), out var endpoint, out var endpointError))
        {
            return Fail(asJson, 2, "usage", WorkloadOutcome.Untouched, $"--to {endpointError}");
        }

        TokenCredentials credentials;
        try
        {
            credentials = TokenCredentials.FromFile(parse.GetValue(tokenFile)!);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return Fail(asJson, 2, "usage", WorkloadOutcome.Untouched, $"cannot use the token: {ex.Message}");
        }

        var moved = new List<ServiceAddress>();
        foreach (var text in parse.GetValue(moveAddress) ?? [])
        {
            if (!ServiceAddress.TryParse(text, out var a, out var error))
            {
                return Fail(asJson, 2, "usage", WorkloadOutcome.Untouched, $"--move-address: {error}");
            }

            moved.Add(a);
        }

        var options = new SourceMigrationOptions
        {
            WorkRoot = parse.GetValue(workDir)!,
            KeepImages = parse.GetValue(keepImages),
            Criu = CriuFlags.FromNames(criuFlags.Where(f => parse.GetValue(f.Option)).Select(f => f.Name)),
            MoveAddresses = moved,
            AddressHook = parse.GetValue(addressHook),
            Mode = parse.GetValue(mode)!,
            FinalDump = parse.GetValue(finalDump)!,
            LazyRestore = parse.GetValue(restorePages) == "lazy",
            CutoverTimeout = TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(timeout))),
            DryRun = parse.GetValue(dryRun),
            Precopy = new PrecopyPolicy
            {
                MaxIterations = Math.Max(1, parse.GetValue(maxIterations)),
                MaxDowntime = TimeSpan.FromMilliseconds(Math.Max(1, parse.GetValue(maxDowntime))),
                AutoConverge = parse.GetValue(autoConverge) == "on",
            },
        };
        if (parse.GetValue(viaAgent) is { } via)
        {
            if (!Endpoint.TryParse(via, out var agentEndpoint, out var viaError))
            {
                return Fail(asJson, 2, "usage", WorkloadOutcome.Untouched, $"--via-agent {viaError}");
            }

            if (options.AddressHook is not null)
            {
                return Fail(asJson, 2, "usage", WorkloadOutcome.Untouched, "--address-hook with --via-agent: the source agent runs its own --address-hook");
            }

            using (credentials)
            {
                Log.Information("migrating pid {Pid} to {Target} via the agent at {Agent}, log {LogPath}", pid, endpoint.ToString(), agentEndpoint.ToString(), logPath);
                return await ViaAgent.RunAsync(agentEndpoint, endpoint, credentials, pid, MigrationWire.ToWire(options, parse.GetValue(compress)!),
                    asJson, parse.GetValue(events) == "jsonl", ct);
            }
        }

        using (credentials)
        using (var channel = new AgentChannel(endpoint, credentials, TimeSpan.FromSeconds(10)))
        {
            var target = new AgentClient(channel, options.CallTimeout);
            var criu = new CriuClient(new CriuOptions(), loggers.CreateLogger<CriuClient>());
            // Pages go from CRIU to the agent's page store on the page stream (its port comes with Begin).
            var compression = parse.GetValue(compress) switch
            {
                "always" => true,
                "never" => false,
                _ => !endpoint.IsLoopback,
            };
            var codec = new Migration.PageServer.Streaming.PageFrameWriterOptions(disableCompression: !compression);

            // Compiles the page path while the preflight runs, so that it is not compiled inside the freeze.
            var warmup = Migration.PageServer.PageWarmup.TryRunAsync(options.WorkRoot, loggers.CreateLogger("Migration.PageServer.PageWarmup"), ct);
            var migration = new SourceMigration(criu, target, options, loggers.CreateLogger<SourceMigration>(), TimeProvider.System,
                async (begun, c) =>
                {
                    await Task.WhenAny(warmup, Task.Delay(TimeSpan.FromSeconds(5), c));
                    return await SourcePageTransport.StartAsync(endpoint with { Port = begun.PagePort }, credentials, begun.Id, loggers, c, codec);
                });
            bool jsonl = parse.GetValue(events) == "jsonl";
            long seq = 0;
            var progress = new SyncProgress(e =>
            {
                if (e.Message.Length > 0 && e.Kind != MigrationEventKind.Outcome)
                {
                    Console.Error.WriteLine($"[{MigrationWire.PhaseName(e.Phase)}] {e.Message}");
                }

                if (jsonl)
                {
                    Console.Out.WriteLine(Google.Protobuf.JsonFormatter.Default.Format(MigrationWire.ToWire(e, seq++)));
                }
            });
            Log.Information("migrating pid {Pid} to {Target} ({Mode}), log {LogPath}", pid, endpoint.ToString(), options.Mode, logPath);
            MigrationResult r;
            try
            {
                r = await migration.RunAsync(pid, progress, ct);
            }
            catch (MigrationException ex)
            {
                Log.Error("migration failed in {Phase}: {Message}", ex.Phase, ex.Message);
                return Fail(asJson, MigrationOutcome.ExitCodeOf(ex.Outcome), MigrationWire.PhaseName(ex.Phase), ex.Outcome, $"{ex.Message} (log: {logPath})");
            }

            Console.Out.WriteLine(r.DryRun
                ? $"dry run of pid {r.SourcePid} -> {endpoint}: moved and discarded; the workload kept running here"
                : $"migrated pid {r.SourcePid} -> {endpoint} pid {r.TargetPid} ({r.Mode})");
            Console.Out.WriteLine($"  moved    {r.BytesSent / 1048576.0:0.0} MiB on the wire ({r.ImageFiles} metadata images)");
            if (r.Pages is { } p)
            {
                Console.Out.WriteLine($"  pages    {p.Pages} ({p.Pages * 4096 / 1048576.0:0.0} MiB, {p.ZeroPages} zero), {p.WireBytes / 1048576.0:0.0} MiB on the wire, ratio {p.CompressionRatio:0.00}, {p.BytesPerSecond / 1048576.0:0} MiB/s");
            }

            if (r.Iterations.Count > 0)
            {
                Console.Out.WriteLine($"  precopy  {r.Iterations.Count} iterations, {r.Iterations.Sum(i => i.PagesSent)} pages; stopped: {r.PrecopyNote}" +
                    (r.ThrottlePercent > 0 ? $"; auto-converge throttled the tree up to {r.ThrottlePercent}%" : ""));
            }
            else if (r.PrecopyNote is not null)
            {
                Console.Out.WriteLine($"  precopy  not used: {r.PrecopyNote}");
            }

            if (r.FinalRound is { } fr)
            {
                Console.Out.WriteLine($"  final    {fr.MemoryPages + fr.ImagePages} pages sent while frozen ({fr.MemoryPages} written since the last iteration or never copied, {fr.ImagePages} from CRIU's images), {fr.CleanPages} kept from pre-copy, {fr.Elapsed.TotalMilliseconds:0} ms");
            }

            Console.Out.WriteLine($"  frozen   {r.Frozen.TotalMilliseconds:0} ms, {r.BytesFrozen / 1048576.0:0.0} MiB moved while frozen (dump {r.Dump.TotalMilliseconds:0}, transfer {r.Transfer.TotalMilliseconds:0}, restore {r.Restore.TotalMilliseconds:0})");
            Console.Out.WriteLine($"  total    {r.Total.TotalMilliseconds:0} ms");
            if (r.ProvisionedBytes > 0)
            {
                Console.Out.WriteLine($"  begin    {r.Begin.TotalMilliseconds:0} ms before the freeze, the target making room for {r.ProvisionedBytes / 1048576.0:0.0} MiB of pages");
            }

            if (asJson)
            {
                var doc = new Dictionary<string, object>
                {
                    ["status"] = r.DryRun ? "dry-run" : "migrated",
                    ["migrationId"] = r.MigrationId,
                    ["sourcePid"] = r.SourcePid,
                    ["targetPid"] = r.TargetPid,
                    ["mode"] = r.Mode,
                    ["frozenMs"] = Math.Round(r.Frozen.TotalMilliseconds, 1),
                    ["totalMs"] = Math.Round(r.Total.TotalMilliseconds, 1),
                    ["dumpMs"] = Math.Round(r.Dump.TotalMilliseconds, 1),
                    ["transferMs"] = Math.Round(r.Transfer.TotalMilliseconds, 1),
                    ["restoreMs"] = Math.Round(r.Restore.TotalMilliseconds, 1),
                    ["beginMs"] = Math.Round(r.Begin.TotalMilliseconds, 1),
                    ["provisionedBytes"] = r.ProvisionedBytes,
                    ["bytesSent"] = r.BytesSent,
                    ["bytesFrozen"] = r.BytesFrozen,
                    ["imageFiles"] = r.ImageFiles,
                    ["iterations"] = r.Iterations.Count,
                    ["iterationDetails"] = r.Iterations.Select(i => new Dictionary<string, object>
                    {
                        ["pagesSent"] = i.PagesSent,
                        ["wireBytes"] = i.BytesOnWire,
                        ["dirtyPages"] = i.DirtyPagesFound,
                        ["ms"] = Math.Round(i.Elapsed.TotalMilliseconds, 1),
                        ["throttlePercent"] = i.ThrottlePercent,
                    }).ToArray(),
                    ["throttlePercent"] = r.ThrottlePercent,
                };
                if (r.PrecopyNote is not null)
                {
                    doc["precopyStop"] = r.PrecopyNote;
                }

                if (r.FinalRound is { } f)
                {
                    doc["finalDump"] = "lazy";
                    doc["restorePages"] = options.LazyRestore ? "lazy" : "eager";
                    doc["finalPagesFromMemory"] = f.MemoryPages;
                    doc["finalPagesFromImages"] = f.ImagePages;
                    doc["finalPagesKept"] = f.CleanPages;
                    doc["finalRoundMs"] = Math.Round(f.Elapsed.TotalMilliseconds, 1);
                }

                if (r.Pages is { } ps)
                {
                    doc["pages"] = ps.Pages;
                    doc["zeroPages"] = ps.ZeroPages;
                    doc["pageBytes"] = ps.Pages * 4096;
                    doc["pageWireBytes"] = ps.WireBytes;
                    doc["compressionRatio"] = Math.Round(ps.CompressionRatio, 3);
                    doc["pageMs"] = Math.Round(ps.Elapsed.TotalMilliseconds, 1);
                }

                Console.Out.WriteLine(JsonSerializer.Serialize(doc));
            }

            return 0;
        }
    }
    finally
    {
        await Log.CloseAndFlushAsync();
    }
});

// Ctrl+C cancels the migration; it then rolls back (or, with --via-agent, waits for the agent's rollback): the default
// 2 s before the process is ended would cut that short.
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromMinutes(3) });

static int Fail(bool asJson, int code, string phase, WorkloadOutcome outcome, string message)
{
    Console.Error.WriteLine($"migrate: {message}");
    if (asJson)
    {
        var workload = MigrationOutcome.WorkloadName(outcome);
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


/// <summary>Progress reported on the caller's thread (Progress&lt;T&gt; would post to the thread pool and reorder lines).</summary>
internal sealed class SyncProgress(Action<MigrationEvent> report) : IProgress<MigrationEvent>
{
    public void Report(MigrationEvent value) => report(value);
}

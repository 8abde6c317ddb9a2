using System.CommandLine;
using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Network;
using Migration.Engine.Security;
using Migration.PageServer.Store;
using Migration.Target;
using Migration.Target.Api;
using Migration.Target.Incoming;
using Migration.Target.LazyFill;
using Serilog;
using Serilog.Events;
using Endpoint = Migration.Engine.Network.Endpoint;

// The lazy fill of a restored tree runs as this same binary, in a session of its own (LazyFill/FillServer.cs): a hidden
// subcommand only the agent starts, dispatched before anything of the agent is built.
if (args is [FillServer.Command, ..])
{
    return await FillServer.RunAsync(args[1..]);
}

var listen = new Option<string>("--listen") { Description = "Address and port to serve the control API on, e.g. 10.0.0.2:7070", Required = true };
var tokenFile = new Option<string>("--token-file") { Description = "File holding the shared secret token (mode 600); the source uses the same one", Required = true };
var workDir = new Option<string>("--work-dir") { Description = "Per-migration work directories are created here", DefaultValueFactory = _ => "/var/lib/migrate/agent" };
var logDir = new Option<string>("--log-dir") { Description = "Agent log file directory (CRIU logs stay in each migration's work directory)", DefaultValueFactory = _ => "/var/log/migrate" };
var pagePort = new Option<int>("--page-port") { Description = "Port for page streams on the --listen address (0: the --listen port + 1)", DefaultValueFactory = _ => 0 };
var fsyncPages = new Option<bool>("--fsync-pages") { Description = "Acknowledge page rounds only once on disk (fsync); by default once written out of the agent's memory, which is all a migration needs" };
var reserveMib = new Option<int>("--reserve-mib") { Description = "Free disk space (MiB) never used for images", DefaultValueFactory = _ => 256 };
var provisionMib = new Option<int>("--provision-mib") { Description = "Cold migrations: at most this many MiB of room (page cache and disk) made for the pages before the source freezes, so that storing them while the workload is frozen is faster; also bounded by half the available memory, half the usable disk and 10 s. 0: off", DefaultValueFactory = _ => 4096 };
var serviceInterface = new Option<string>("--service-interface") { Description = "Interface that service addresses moved here (migrate --move-address) come up on; default: the interface holding the --listen address" };
var addressHook = new Option<string>("--address-hook") { Description = "Program that brings a service address up or down instead of ip addr (a cloud VIP, a route, BGP): run as PROGRAM up|down ADDR/PREFIX IFACE, 10 s at most, exit 0 for success" };
var metricsListen = new Option<string>("--metrics-listen") { Description = "Serve Prometheus metrics at http://ADDR:PORT/metrics (plain HTTP, no token: put it on a management network); PORT alone means 127.0.0.1:PORT. Off by default" };
var dashboardListen = new Option<string>("--dashboard-listen") { Description = "Serve the web dashboard at http://ADDR:PORT/ (plain HTTP: bind to loopback and tunnel, or a management network); PORT alone means 127.0.0.1:PORT. Login with the token (operator) or --viewer-token-file. Off by default" };
var viewerTokenFile = new Option<string>("--viewer-token-file") { Description = "A second token (mode 600, 24+ bytes) that logs in to the dashboard read-only; it opens nothing else" };
var promptClients = new Option<string>("--prompt-clients") { Description = "on: once a restored tree's connections on a moved service address (migrate --move-address) are here, make each client retransmit at once (RFC 6069 ICMP that undoes its backed-off retransmission timeout) instead of after a timeout that doubled while its packets were dropped during the freeze; a client socket with IP_RECVERR set reads the ICMP as one error. off: clients retransmit on their own timers", DefaultValueFactory = _ => "on" };
promptClients.AcceptOnlyFromAmong("on", "off");
var verbose = new Option<bool>("--verbose", "-v") { Description = "Debug-level logging" };
var faults = new Option<string[]>("--inject-fault") { Description = $"Test only: fault points to hit ({string.Join(", ", Faults.All)})", Hidden = true, AllowMultipleArgumentsPerToken = false };

var root = new RootCommand("migrate-agent: the agent of live process migration, on every host. As the target it receives migrations (from `migrate` or another agent), restores them with CRIU, and resumes the restored tree only when the source confirms its copy is gone; as the source it runs migrations it is asked for (StartMigration, `migrate --via-agent`). Optional: Prometheus metrics and a web dashboard.")
{
    listen, tokenFile, pagePort, workDir, logDir, reserveMib, provisionMib, fsyncPages, serviceInterface, addressHook, promptClients, metricsListen, dashboardListen, viewerTokenFile, verbose, faults,
};

root.SetAction(async (parse, ct) =>
{
    if (!Endpoint.TryParse(parse.GetValue(listen), out var endpoint, out var endpointError))
    {
        Console.Error.WriteLine($"migrate-agent: --listen {endpointError}");
        return 2;
    }

    Endpoint? metricsEndpoint = null;
    if (parse.GetValue(metricsListen) is { } metricsText)
    {
        if (!PlainHttpListen.TryParse(metricsText, out metricsEndpoint, out var metricsError))
        {
            Console.Error.WriteLine($"migrate-agent: --metrics-listen {metricsError}");
            return 2;
        }
    }

    Endpoint? dashboardEndpoint = null;
    if (parse.GetValue(dashboardListen) is { } dashboardText && !PlainHttpListen.TryParse(dashboardText, out dashboardEndpoint, out var dashboardError))
    {
        Console.Error.WriteLine($"migrate-agent: --dashboard-listen {dashboardError}");
        return 2;
    }

    var unknownFaults = (parse.GetValue(faults) ?? []).Except(Faults.All).ToArray();
    if (unknownFaults.Length > 0)
    {
        Console.Error.WriteLine($"migrate-agent: unknown fault point(s): {string.Join(", ", unknownFaults)}");
        return 2;
    }

    var logs = parse.GetValue(logDir)!;
    Directory.CreateDirectory(logs);
    Log.Logger = new LoggerConfiguration()
        .MinimumLevel.Is(parse.GetValue(verbose) ? LogEventLevel.Debug : LogEventLevel.Information)
        .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
        // Grpc.AspNetCore logs every failed call at information level; CallStatusInterceptor logs them once, with their status.
        .MinimumLevel.Override("Grpc", LogEventLevel.Warning)
        .WriteTo.Console(standardErrorFromLevel: LogEventLevel.Verbose, outputTemplate: "{Timestamp:HH:mm:ss.fff} {Level:u3} {Message:lj}{NewLine}{Exception}")
        .WriteTo.File(Path.Combine(logs, "agent.log"), outputTemplate: "{Timestamp:o} {Level:u3} [{SourceContext}] {Message:lj}{NewLine}{Exception}")
        .CreateLogger();

    try
    {
        TokenCredentials credentials;
        try
        {
            credentials = TokenCredentials.FromFile(parse.GetValue(tokenFile)!);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            Log.Error("cannot use the token: {Message}", ex.Message);
            return 2;
        }

        IPAddress[] addresses = IPAddress.TryParse(endpoint.Host, out var ip) ? [ip] : await Dns.GetHostAddressesAsync(endpoint.Host, ct);
        var options = new TargetOptions
        {
            WorkRoot = parse.GetValue(workDir)!,
            ReserveBytes = (ulong)Math.Max(0, parse.GetValue(reserveMib)) << 20,
            ProvisionMaxBytes = (ulong)Math.Max(0, parse.GetValue(provisionMib)) << 20,
            Faults = new HashSet<string>(parse.GetValue(faults) ?? []),
            ServiceInterface = parse.GetValue(serviceInterface) ?? (IPAddress.TryParse(endpoint.Host, out var listenIp)
                ? await Migration.Engine.Network.AddressMover.InterfaceHoldingAsync(listenIp, ct) : null),
            AddressHook = parse.GetValue(addressHook),
            PromptClients = parse.GetValue(promptClients) == "on",
        };
        if (options.AddressHook is { } hookPath && !File.Exists(hookPath))
        {
            Console.Error.WriteLine($"migrate-agent: --address-hook {hookPath} does not exist");
            return 2;
        }

        if (parse.GetValue(serviceInterface) is { } named && !Migration.Engine.Network.AddressMover.InterfaceExists(named))
        {
            Console.Error.WriteLine($"migrate-agent: --service-interface {named}: no such interface on this host");
            return 2;
        }
        Directory.CreateDirectory(options.WorkRoot);
        // The agent's certificate is public: standard TLS clients (grpcurl, grpcio) take it as their trust
        // anchor, and authenticate themselves with the token-derived key (TokenCredentials.ExportPem).
        var certPath = Path.Combine(options.WorkRoot, "agent-cert.pem");
        await File.WriteAllTextAsync(certPath, credentials.Certificate.ExportCertificatePem(), ct);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSerilog(Log.Logger);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            // A request carries one message (each method takes one; WatchMigration streams only its replies): nothing more is buffered for anyone.
            k.Limits.MaxRequestBodySize = ControlApi.MaxMessageBytes + ControlApi.MessagePrefixBytes;
            k.Limits.Http2.MaxStreamsPerConnection = 64;
            // Hostile or broken clients: a bound on connections (a source uses one; watchers and operators a few), a
            // TLS handshake that must end within 10 s (a stranger without the token never gets further), headers within
            // 10 s, and HTTP/2 pings that close a connection whose peer vanished (a half-open one) within a minute.
            k.Limits.MaxConcurrentConnections = ControlApi.MaxConnections;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            k.Limits.KeepAliveTimeout = TimeSpan.FromMinutes(2);
            k.Limits.Http2.KeepAlivePingDelay = TimeSpan.FromSeconds(30);
            k.Limits.Http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(30);
            // Image chunks are megabytes: windows of a few chunks keep a link busy (defaults are 768 KiB / 1 MiB).
            k.Limits.Http2.InitialStreamWindowSize = 16 << 20;
            k.Limits.Http2.InitialConnectionWindowSize = 32 << 20;
            foreach (var address in addresses)
            {
                k.Listen(address, endpoint.Port, l =>
                {
                    l.Protocols = HttpProtocols.Http2;
                    l.UseHttps(new HttpsConnectionAdapterOptions
                    {
                        ServerCertificate = credentials.Certificate,
                        SslProtocols = System.Security.Authentication.SslProtocols.Tls13,
                        ClientCertificateMode = ClientCertificateMode.RequireCertificate,
                        HandshakeTimeout = TimeSpan.FromSeconds(10),
                        // A caller is admitted only if it proves the token-derived key in the handshake.
                        ClientCertificateValidation = (cert, _, _) => credentials.IsPeer(cert),
                    });
                });
            }
        });
        builder.Services.AddSingleton(credentials);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(new CriuOptions());
        builder.Services.AddSingleton<CriuClient>();
        int pages = parse.GetValue(pagePort) is > 0 and <= 65535 and var pp ? pp : endpoint.Port + 1;
        if (pages > 65535)
        {
            Log.Error("--page-port: the --listen port + 1 is not a port; give --page-port");
            return 2;
        }

        bool syncPages = parse.GetValue(fsyncPages);
        builder.Services.AddSingleton(new PageStreamOptions(addresses, pages));
        builder.Services.AddSingleton(sp => new TargetAgent(
            sp.GetRequiredService<CriuClient>(), options, sp.GetRequiredService<ILoggerFactory>(),
            (dir, maxBytes) => new PageStoreAttachment(new PageStore(dir, new PageStoreOptions { MaxBytes = (long)Math.Min(maxBytes, long.MaxValue), SyncToDisk = syncPages },
                sp.GetRequiredService<ILogger<PageStore>>()))));
        // The source role: migrations this agent starts (StartMigration) to other agents, with its own token.
        builder.Services.AddSingleton(sp => new Migration.Target.Outgoing.OutgoingMigrations(sp.GetRequiredService<CriuClient>(), credentials, options,
            sp.GetRequiredService<ILoggerFactory>(), TimeProvider.System));
        builder.Services.AddHostedService<PageStreamListener>();
        builder.Services.AddAgentApi();

        // Disposed on the way out: the agent's migrations then wait for a lazy fill in progress (IncomingMigration).
        await using var app = builder.Build();
        app.MapGrpcService<AgentService>();

        // Before the first call: what an earlier run of the agent left (it was killed mid-migration) is removed.
        app.Services.GetRequiredService<TargetAgent>().SweepLeftovers();
        foreach (var stale in await AddressLock.ListAsync(ct))
        {
            await AddressLock.UnlockAsync(stale, ct); // a killed agent's lock on a service address: nothing restores behind it now
            Log.Warning("removed the address lock {Lock} an earlier run of the agent left", stale);
        }

        TargetMetrics.Observe(app.Services.GetRequiredService<TargetAgent>());
        string? viewerToken = null;
        if (parse.GetValue(viewerTokenFile) is { } viewerPath)
        {
            try
            {
                TokenCredentials.FromFile(viewerPath); // the same checks as the token: mode, length
                viewerToken = File.ReadAllText(viewerPath).Trim();
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
            {
                Log.Error("cannot use the viewer token: {Message}", ex.Message);
                return 2;
            }
        }

        var targetAgent = app.Services.GetRequiredService<TargetAgent>();
        await using var dashboard = dashboardEndpoint is { } de
            ? await Migration.Target.Dashboard.DashboardServer.StartAsync(de, File.ReadAllText(parse.GetValue(tokenFile)!).Trim(), viewerToken,
                canCancel => Migration.Target.Dashboard.DashboardStates.Of(targetAgent, app.Services.GetRequiredService<Migration.Target.Outgoing.OutgoingMigrations>(), canCancel),
                app.Services.GetRequiredService<ILoggerFactory>(), ct)
            : null;
        await using var metricsServer = metricsEndpoint is { } me
            ? await AgentMetrics.StartAsync(me, app.Services.GetRequiredService<CriuClient>(), ct) : null;
        await app.StartAsync(ct);
        if (dashboardEndpoint is { } shown)
        {
            Log.Information("serving the dashboard on http://{Endpoint}/", shown.ToString());
        }

        if (metricsEndpoint is { } served)
        {
            Log.Information("serving Prometheus metrics on http://{Endpoint}/metrics", served.ToString());
        }

        Log.Information("migrate-agent {Version} listening on {Endpoint} (token key id {KeyId}), work directory {WorkDir}, criu {Criu}",
            TargetAgent.Version, endpoint.ToString(), credentials.KeyId, options.WorkRoot, app.Services.GetRequiredService<CriuOptions>().CriuPath);
        if (options.Faults.Count > 0)
        {
            Log.Warning("fault injection enabled: {Faults}", string.Join(", ", options.Faults));
        }

        // Compiles the page path now rather than in the first migration's frozen page transfer.
        var warmup = Migration.PageServer.PageWarmup.TryRunAsync(options.WorkRoot,
            app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Migration.PageServer.PageWarmup"), ct);

        await app.WaitForShutdownAsync(ct);
        await warmup;
        return 0;
    }
    catch (IOException ex)
    {
        Log.Fatal("migrate-agent cannot start: {Message}", ex.Message);
        return 1;
    }
    finally
    {
        await Log.CloseAndFlushAsync();
    }
});

// SIGTERM cancels the agent, which then stops cleanly. A committed tree still being filled does not keep it: its fill
// process goes on without the agent. The grace covers a restore or commit in progress.
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(30) });

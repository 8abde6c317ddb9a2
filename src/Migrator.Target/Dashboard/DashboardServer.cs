using System.Collections.Concurrent;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Endpoint = Migration.Engine.Network.Endpoint;

namespace Migration.Target.Dashboard;

/// <summary>
/// The agent's web dashboard (<c>--dashboard-listen</c>): static files shipped inside the agent (no CDN), a login that
/// takes the agent's token (operator) or the viewer token (read-only), and the host's migrations as JSON, polled or
/// pushed as server-sent events whenever they change. Its own Kestrel server, plain HTTP: bind it to loopback (the
/// default) and reach it through an SSH tunnel, or put it on a management network.
/// </summary>
public sealed class DashboardServer : IAsyncDisposable
{
    public const string SessionCookie = "migrate_dashboard";

    /// <summary>Sessions held at once; the oldest goes when a new one would exceed it.</summary>
    public const int MaxSessions = 64;

    public static readonly TimeSpan SessionLifetime = TimeSpan.FromHours(12);

    /// <summary>How often a server-sent event stream looks for a change.</summary>
    public static readonly TimeSpan PushInterval = TimeSpan.FromMilliseconds(250);

    private readonly WebApplication _app;
    private readonly byte[] _operatorToken;
    private readonly byte[]? _viewerToken;
    private readonly Func<bool, DashboardState> _state;
    private readonly ConcurrentDictionary<string, Session> _sessions = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _loginGate = new(1, 1);

    private sealed record Session(bool Operator, DateTimeOffset Expires, DateTimeOffset Created);

    private DashboardServer(WebApplication app, string operatorToken, string? viewerToken, Func<bool, DashboardState> state)
    {
        _app = app;
        _operatorToken = Encoding.UTF8.GetBytes(operatorToken);
        _viewerToken = viewerToken is null ? null : Encoding.UTF8.GetBytes(viewerToken);
        _state = state;
    }

    /// <summary>
    /// Starts serving on <paramref name="endpoint"/>. <paramref name="state"/> gives the host's migrations (its argument:
    /// whether the caller may cancel them).
    /// </summary>
    public static async Task<DashboardServer> StartAsync(Endpoint endpoint, string operatorToken, string? viewerToken,
        Func<bool, DashboardState> state, ILoggerFactory loggers, CancellationToken ct)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(loggers);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxConcurrentConnections = 64;
            k.Limits.MaxRequestBodySize = 4096;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            k.Listen(System.Net.IPAddress.Parse(endpoint.Host), endpoint.Port, l => l.Protocols = HttpProtocols.Http1);
        });
        var app = builder.Build();
        var server = new DashboardServer(app, operatorToken, viewerToken, state);
        server.Map(app);
        await app.StartAsync(ct).ConfigureAwait(false);
        return server;
    }

    private void Map(WebApplication app)
    {
        app.Use(async (ctx, next) =>
        {
            var h = ctx.Response.Headers;
            h["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";
            h["X-Content-Type-Options"] = "nosniff";
            h["Referrer-Policy"] = "no-referrer";
            h["Cache-Control"] = "no-store";
            await next(ctx).ConfigureAwait(false);
        });
        app.MapGet("/", () => Asset("index.html", "text/html; charset=utf-8"));
        app.MapGet("/app.js", () => Asset("app.js", "text/javascript; charset=utf-8"));
        app.MapGet("/app.css", () => Asset("app.css", "text/css; charset=utf-8"));
        app.MapPost("/api/login", (Delegate)LoginAsync);
        app.MapPost("/api/logout", (HttpContext ctx) =>
        {
            if (ctx.Request.Cookies.TryGetValue(SessionCookie, out var id))
            {
                _sessions.TryRemove(id, out _);
            }

            ctx.Response.Cookies.Delete(SessionCookie);
            return Results.NoContent();
        });
        app.MapGet("/api/state", (HttpContext ctx) =>
            SessionOf(ctx) is { } s ? Results.Text(Serialize(_state(s.Operator)), "application/json; charset=utf-8") : Results.Unauthorized());
        app.MapGet("/api/events", (Delegate)StreamAsync);
    }

    private async Task<IResult> LoginAsync(HttpContext ctx)
    {
        LoginRequest? request;
        try
        {
            request = await JsonSerializer.DeserializeAsync(ctx.Request.Body, DashboardJson.Default.LoginRequest, ctx.RequestAborted).ConfigureAwait(false);
        }
        catch (JsonException)
        {
            return Results.BadRequest("expected {\"token\": \"...\"}");
        }

        var given = Encoding.UTF8.GetBytes((request?.Token ?? "").Trim());
        bool op = CryptographicOperations.FixedTimeEquals(given, _operatorToken);
        bool viewer = !op && _viewerToken is not null && CryptographicOperations.FixedTimeEquals(given, _viewerToken);
        if (!op && !viewer)
        {
            // One guess at a time, each a second: a token cannot be guessed through the login.
            await _loginGate.WaitAsync(ctx.RequestAborted).ConfigureAwait(false);
            try
            {
                await Task.Delay(1000, ctx.RequestAborted).ConfigureAwait(false);
            }
            finally
            {
                _loginGate.Release();
            }

            return Results.Unauthorized();
        }

        var now = DateTimeOffset.UtcNow;
        foreach (var (key, old) in _sessions)
        {
            if (old.Expires < now)
            {
                _sessions.TryRemove(key, out _);
            }
        }

        while (_sessions.Count >= MaxSessions && _sessions.OrderBy(s => s.Value.Created).FirstOrDefault() is { Key: { } oldest })
        {
            _sessions.TryRemove(oldest, out _);
        }

        var id = Convert.ToHexString(RandomNumberGenerator.GetBytes(32));
        _sessions[id] = new Session(op, now + SessionLifetime, now);
        ctx.Response.Cookies.Append(SessionCookie, id, new CookieOptions
        {
            HttpOnly = true,
            SameSite = SameSiteMode.Strict,
            Path = "/",
            MaxAge = SessionLifetime,
        });
        return Results.Text($"{{\"role\":\"{(op ? "operator" : "viewer")}\"}}", "application/json");
    }

    /// <summary>Server-sent events: the state at once, then again whenever it changed (every <see cref="PushInterval"/> at most).</summary>
    private async Task StreamAsync(HttpContext ctx)
    {
        if (SessionOf(ctx) is not { } session)
        {
            ctx.Response.StatusCode = StatusCodes.Status401Unauthorized;
            return;
        }

        ctx.Response.ContentType = "text/event-stream";
        string? last = null;
        var ct = ctx.RequestAborted;
        try
        {
            while (!ct.IsCancellationRequested && SessionOf(ctx) is not null)
            {
                var json = Serialize(_state(session.Operator));
                // The timestamp changes every time; what matters is whether the migrations did.
                var body = json[json.IndexOf(",\"canCancel\"", StringComparison.Ordinal)..];
                if (body != last)
                {
                    last = body;
                    await ctx.Response.WriteAsync($"data: {json}\n\n", ct).ConfigureAwait(false);
                    await ctx.Response.Body.FlushAsync(ct).ConfigureAwait(false);
                }

                await Task.Delay(PushInterval, ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The page went away.
        }
    }

    private Session? SessionOf(HttpContext ctx) =>
        ctx.Request.Cookies.TryGetValue(SessionCookie, out var id) && id.Length == 64 && _sessions.TryGetValue(id, out var s) && s.Expires > DateTimeOffset.UtcNow
            ? s : null;

    private static string Serialize(DashboardState state) => JsonSerializer.Serialize(state, DashboardJson.Default.DashboardState);

    private static IResult Asset(string name, string contentType)
    {
        var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream($"dashboard/{name}");
        return stream is null ? Results.NotFound() : Results.Stream(stream, contentType);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        _loginGate.Dispose();
    }
}

using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Target;
using Migration.Target.Api;
using Migration.Target.Incoming;

namespace Migration.Fuzz.Targets;

/// <summary>
/// A real <see cref="TargetAgent"/> and <see cref="AgentService"/> in a work root of their own (on tmpfs where there is
/// one), no CRIU run and no page store: what the control API's handlers do with a request up to the point where CRIU
/// would be called.
/// </summary>
internal sealed class AgentHarness : IDisposable
{
    private static readonly CriuClient s_criu = new(new CriuOptions(), NullLogger<CriuClient>.Instance);
    private readonly string _root;

    /// <summary>The source role's side of the service: no request here starts a migration, so it holds none.</summary>
    private static readonly Migration.Target.Outgoing.OutgoingMigrations Outgoing = new(s_criu,
        Migration.Engine.Security.TokenCredentials.FromToken(Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32))),
        new TargetOptions { WorkRoot = Path.GetTempPath() }, NullLoggerFactory.Instance, TimeProvider.System);

    public AgentHarness(TargetOptions options)
    {
        string parent = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        _root = Directory.CreateDirectory(Path.Combine(parent, $"migrate-fuzz-{Environment.ProcessId}-{Guid.NewGuid():N}")).FullName;
        Options = options with { WorkRoot = _root, ReserveBytes = 0 };
        Agent = new TargetAgent(s_criu, Options, NullLoggerFactory.Instance);
        Service = new AgentService(Agent, new PageStreamOptions([], 0), Outgoing, NullLogger<AgentService>.Instance);
    }

    public TargetOptions Options { get; }

    public TargetAgent Agent { get; private set; }

    public AgentService Service { get; private set; }

    public ServerCallContext Context { get; } = new FuzzCallContext();

    /// <summary>A new agent in place of the current one, its migrations' directories removed.</summary>
    public void Reset()
    {
        Agent.Dispose();
        foreach (var dir in Directory.EnumerateDirectories(_root))
        {
            Directory.Delete(dir, recursive: true);
        }

        Agent = new TargetAgent(s_criu, Options, NullLoggerFactory.Instance);
        Service = new AgentService(Agent, new PageStreamOptions([], 0), Outgoing, NullLogger<AgentService>.Instance);
    }

    public void Dispose()
    {
        Agent.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    /// <summary>A call context with nothing behind it: the handlers read only its peer and cancellation.</summary>
    private sealed class FuzzCallContext : ServerCallContext
    {
        protected override string MethodCore => "/migrate.v1.Agent/Fuzz";

        protected override string HostCore => "localhost";

        protected override string PeerCore => "ipv4:127.0.0.1:1";

        protected override DateTime DeadlineCore => DateTime.MaxValue;

        protected override Metadata RequestHeadersCore { get; } = [];

        protected override CancellationToken CancellationTokenCore => CancellationToken.None;

        protected override Metadata ResponseTrailersCore { get; } = [];

        protected override Status StatusCore { get; set; }

        protected override WriteOptions? WriteOptionsCore { get; set; }

        protected override AuthContext AuthContextCore { get; } = new(null, []);

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) =>
            throw new NotSupportedException("the fuzzer's calls propagate nothing");

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}

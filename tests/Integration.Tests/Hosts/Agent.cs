namespace Migration.Integration.Tests.Hosts;

/// <summary>A migrate-agent running on a test host.</summary>
public sealed class Agent : IAsyncDisposable
{
    public const int Port = 7070;

    private readonly BackgroundProcess _process;

    private Agent(BackgroundProcess process, string workDir, string address, int port = Port)
    {
        _process = process;
        WorkDir = workDir;
        Address = address;
        ListenPort = port;
    }

    public int ListenPort { get; }

    public string WorkDir { get; }

    public string Address { get; }

    public string Endpoint => $"{Address}:{ListenPort}";

    public string Output => _process.Output;

    public bool HasExited => _process.HasExited;

    /// <inheritdoc cref="BackgroundProcess.WaitForExitAsync"/>
    public Task<bool> WaitForExitAsync(TimeSpan timeout) => _process.WaitForExitAsync(timeout);

    /// <summary>The agent's own pid (nsenter execs it).</summary>
    public int Pid => _process.Pid;

    public static Task<Agent> StartAsync(TestHosts hosts, string tokenFile, params string[] extraArgs) =>
        StartOnAsync(hosts, hosts.Target, hosts.TargetAddress, "agent", tokenFile, extraArgs);

    /// <summary>An agent on host <paramref name="netns"/> listening on <paramref name="address"/>; <paramref name="name"/> names its directories under the test's root.</summary>
    public static async Task<Agent> StartOnAsync(TestHosts hosts, string netns, string address, string name, string tokenFile, params string[] extraArgs)
    {
        var work = Path.Combine(hosts.Root, $"{name}-work");
        var args = new List<string>(TestHosts.On(netns))
        {
            Binaries.Agent, "--listen", $"{address}:{Port}", "--token-file", tokenFile,
            "--work-dir", work, "--log-dir", Path.Combine(hosts.Root, $"{name}-logs"),
        };
        args.AddRange(extraArgs);
        var process = new BackgroundProcess("nsenter", args);
        var agent = new Agent(process, work, address);
        try
        {
            await process.WaitForOutputAsync("listening on", TimeSpan.FromSeconds(30), "migrate-agent start");
        }
        catch
        {
            await agent.DisposeAsync();
            throw;
        }

        return agent;
    }

    /// <summary>
    /// An agent on the source host (its own work and log directories): it starts migrations from there (StartMigration),
    /// as the source role, to the target host's agent.
    /// </summary>
    public static Task<Agent> StartOnSourceAsync(TestHosts hosts, string tokenFile, params string[] extraArgs) =>
        StartOnAsync(hosts, hosts.Source, hosts.SourceAddress, "source-agent", tokenFile, extraArgs);

    /// <summary>An agent on 127.0.0.1 of this (the root) namespace, for tests that call its API from the test process.</summary>
    public static async Task<Agent> StartOnLoopbackAsync(string root, string tokenFile, int port)
    {
        var work = Path.Combine(root, "agent-work");
        var process = new BackgroundProcess(Binaries.Agent,
        [
            "--listen", $"127.0.0.1:{port}", "--token-file", tokenFile, "--work-dir", work, "--log-dir", Path.Combine(root, "agent-logs"),
        ]);
        var agent = new Agent(process, work, "127.0.0.1", port);
        try
        {
            await process.WaitForOutputAsync("listening on", TimeSpan.FromSeconds(30), "migrate-agent start");
        }
        catch
        {
            await agent.DisposeAsync();
            throw;
        }

        return agent;
    }

    public ValueTask DisposeAsync() => _process.DisposeAsync();
}

namespace Migration.Integration.Tests.Hosts;

/// <summary>A migrate-agent running on a test host.</summary>
public sealed class Agent : IAsyncDisposable
{
    public const int Port = 7070;

    private readonly BackgroundProcess _process;

    private Agent(BackgroundProcess process, string workDir, string address)
    {
        _process = process;
        WorkDir = workDir;
        Address = address;
    }

    public string WorkDir { get; }

    public string Address { get; }

    public string Endpoint => $"{Address}:{Port}";

    public string Output => _process.Output;

    public bool HasExited => _process.HasExited;

    public static async Task<Agent> StartAsync(TestHosts hosts, string tokenFile, params string[] extraArgs)
    {
        var work = Path.Combine(hosts.Root, "agent-work");
        var args = new List<string>(TestHosts.On(hosts.Target))
        {
            Binaries.Agent, "--listen", $"{hosts.TargetAddress}:{Port}", "--token-file", tokenFile,
            "--work-dir", work, "--log-dir", Path.Combine(hosts.Root, "agent-logs"),
        };
        args.AddRange(extraArgs);
        var process = new BackgroundProcess("nsenter", args);
        var agent = new Agent(process, work, hosts.TargetAddress);
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

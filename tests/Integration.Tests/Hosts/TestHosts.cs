namespace Migration.Integration.Tests.Hosts;

/// <summary>
/// Two hosts on this machine: network namespaces "source" and "target" joined by a veth pair, each with
/// its own address. With a client (<see cref="CreateAsync(bool)"/>), three hosts on one switch instead: a bridge in a
/// namespace of its own joins source, target and client, each with an IPv4 and an IPv6 address on the one link, as
/// a service's clients would reach it. Names and subnet are unique per instance; everything is removed on dispose,
/// also when creation failed half way.
/// </summary>
public sealed class TestHosts : IAsyncDisposable
{
    private TestHosts(string tag, int subnet, bool withClient)
    {
        Source = $"mgs-{tag}";
        Target = $"mgt-{tag}";
        SourceAddress = $"10.213.{subnet}.1";
        TargetAddress = $"10.213.{subnet}.2";
        SourceInterface = $"vs{tag}";
        TargetInterface = $"vt{tag}";
        if (withClient)
        {
            Client = $"mgc-{tag}";
            Switch = $"mgb-{tag}";
            ClientAddress = $"10.213.{subnet}.3";
            ServiceAddress = $"10.213.{subnet}.100/24";
            ServiceAddress6 = $"fd13:{subnet:x}::100/64";
        }

        _subnet = subnet;
        Root = Directory.CreateTempSubdirectory("migrate-test-").FullName;
    }

    private readonly int _subnet;

    /// <summary>The client host (three-host topology only).</summary>
    public string? Client { get; }

    /// <summary>The namespace holding the bridge that joins the three hosts (three-host topology only).</summary>
    public string? Switch { get; }

    public string? ClientAddress { get; }

    /// <summary>A free address on the link for a service to move: on no host yet (three-host topology only).</summary>
    public string? ServiceAddress { get; }

    /// <summary>The same for IPv6.</summary>
    public string? ServiceAddress6 { get; }

    /// <summary>Each host's interface on the link.</summary>
    public string SourceInterface { get; }

    public string TargetInterface { get; }

    public string Source { get; }

    public string Target { get; }

    public string SourceAddress { get; }

    public string TargetAddress { get; }

    /// <summary>A scratch directory for this test: tokens, work dirs, logs, workload files.</summary>
    public string Root { get; }

    public string SourceNetns { get; private set; } = "";

    public string TargetNetns { get; private set; } = "";

    public static async Task<TestHosts> CreateAsync(bool withClient = false)
    {
        var tag = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(3)).ToLowerInvariant();
        var hosts = new TestHosts(tag, Random.Shared.Next(1, 250), withClient);
        try
        {
            if (withClient)
            {
                await hosts.SetUpSwitchedAsync(tag);
            }
            else
            {
                await hosts.SetUpAsync(tag);
            }

            return hosts;
        }
        catch
        {
            await hosts.DisposeAsync();
            throw;
        }
    }

    private async Task SetUpAsync(string tag)
    {
        string vs = $"vs{tag}", vt = $"vt{tag}";
        await Run.CheckedAsync("ip", "netns", "add", Source);
        await Run.CheckedAsync("ip", "netns", "add", Target);
        await Run.CheckedAsync("ip", "link", "add", vs, "type", "veth", "peer", "name", vt);
        await Run.CheckedAsync("ip", "link", "set", vs, "netns", Source);
        await Run.CheckedAsync("ip", "link", "set", vt, "netns", Target);
        await Run.CheckedAsync("ip", "-n", Source, "addr", "add", $"{SourceAddress}/24", "dev", vs);
        await Run.CheckedAsync("ip", "-n", Target, "addr", "add", $"{TargetAddress}/24", "dev", vt);
        foreach (var (ns, dev) in new[] { (Source, vs), (Target, vt) })
        {
            await Run.CheckedAsync("ip", "-n", ns, "link", "set", dev, "up");
            await Run.CheckedAsync("ip", "-n", ns, "link", "set", "lo", "up");
        }

        SourceNetns = (await Run.CheckedAsync("nsenter", $"--net=/run/netns/{Source}", "readlink", "/proc/self/ns/net")).Trim();
        TargetNetns = (await Run.CheckedAsync("nsenter", $"--net=/run/netns/{Target}", "readlink", "/proc/self/ns/net")).Trim();
    }

    private async Task SetUpSwitchedAsync(string tag)
    {
        await Run.CheckedAsync("ip", "netns", "add", Switch!);
        await Run.CheckedAsync("ip", "-n", Switch!, "link", "add", "name", "br0", "type", "bridge");
        await Run.CheckedAsync("ip", "-n", Switch!, "link", "set", "br0", "up");
        int host = 1;
        foreach (var (ns, dev, address) in new[] { (Source, SourceInterface, SourceAddress), (Target, TargetInterface, TargetAddress), (Client!, $"vc{tag}", ClientAddress!) })
        {
            string port = $"b{host}{tag}";
            await Run.CheckedAsync("ip", "netns", "add", ns);
            await Run.CheckedAsync("ip", "link", "add", "name", dev, "type", "veth", "peer", "name", port);
            await Run.CheckedAsync("ip", "link", "set", dev, "netns", ns);
            await Run.CheckedAsync("ip", "link", "set", port, "netns", Switch!);
            await Run.CheckedAsync("ip", "-n", Switch!, "link", "set", port, "master", "br0");
            await Run.CheckedAsync("ip", "-n", Switch!, "link", "set", port, "up");
            await Run.CheckedAsync("ip", "-n", ns, "addr", "add", $"{address}/24", "dev", dev);
            await Run.CheckedAsync("ip", "-n", ns, "addr", "add", $"fd13:{_subnet:x}::{host}/64", "dev", dev, "nodad");
            await Run.CheckedAsync("ip", "-n", ns, "link", "set", dev, "up");
            await Run.CheckedAsync("ip", "-n", ns, "link", "set", "lo", "up");
            host++;
        }

        SourceNetns = (await Run.CheckedAsync("nsenter", $"--net=/run/netns/{Source}", "readlink", "/proc/self/ns/net")).Trim();
        TargetNetns = (await Run.CheckedAsync("nsenter", $"--net=/run/netns/{Target}", "readlink", "/proc/self/ns/net")).Trim();
    }

    /// <summary>Gives the source's link a real bandwidth (tc tbf, e.g. "1gbit"); removed with the namespace.</summary>
    public Task LimitSourceLinkAsync(string rate) =>
        Run.CheckedAsync("tc", "-n", Source, "qdisc", "replace", "dev", SourceInterface, "root", "tbf", "rate", rate, "burst", "256k", "latency", "50ms");

    /// <summary>Writes a fresh random token file (mode 600) and returns its path.</summary>
    public string NewToken(string name = "token")
    {
        var path = Path.Combine(Root, name);
        File.WriteAllText(path, Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)) + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    /// <summary>Command prefix that runs a program on a host (nsenter into its network namespace only).</summary>
    public static IEnumerable<string> On(string netns) => [$"--net=/run/netns/{netns}"];

    public async ValueTask DisposeAsync()
    {
        // Removing a namespace removes its end of the veth pair, and with it the peer.
        foreach (var ns in new[] { Source, Target, Client, Switch }.OfType<string>())
        {
            await Run.CommandAsync("ip", ["netns", "del", ns], TimeSpan.FromSeconds(30), "remove netns");
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // A file held open by a process the test already killed: the temp dir is removed with the machine.
        }
    }
}

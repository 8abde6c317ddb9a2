namespace Migration.Integration.Tests.Hosts;

/// <summary>
/// Two hosts on this machine: network namespaces "source" and "target" joined by a veth pair, each with
/// its own address. Names and subnet are unique per instance; everything is removed on dispose, also when
/// creation failed half way.
/// </summary>
public sealed class TestHosts : IAsyncDisposable
{
    private TestHosts(string tag, int subnet)
    {
        Source = $"mgs-{tag}";
        Target = $"mgt-{tag}";
        SourceAddress = $"10.213.{subnet}.1";
        TargetAddress = $"10.213.{subnet}.2";
        Root = Directory.CreateTempSubdirectory("migrate-test-").FullName;
    }

    public string Source { get; }

    public string Target { get; }

    public string SourceAddress { get; }

    public string TargetAddress { get; }

    /// <summary>A scratch directory for this test: tokens, work dirs, logs, workload files.</summary>
    public string Root { get; }

    public string SourceNetns { get; private set; } = "";

    public string TargetNetns { get; private set; } = "";

    public static async Task<TestHosts> CreateAsync()
    {
        var tag = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(3)).ToLowerInvariant();
        var hosts = new TestHosts(tag, Random.Shared.Next(1, 250));
        try
        {
            await hosts.SetUpAsync(tag);
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
        foreach (var ns in new[] { Source, Target })
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

using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Network;
using Migration.Engine.Processes;
using Migration.Tests.Common;
#pragma warning disable CA1849 // synchronous waits on purpose: the work must stay on the thread inside the namespace
using Xunit;

namespace Migration.Engine.Tests.Network;

/// <summary>Service addresses: what is accepted, and moving one between two real hosts (network namespaces) whose neighbour learns it.</summary>
public sealed class ServiceAddressTests
{
    [Theory]
    [InlineData("10.0.0.100/24", "10.0.0.100/24")]
    [InlineData("fd00::100/64", "fd00::100/64")]
    [InlineData("192.168.1.7/32", "192.168.1.7/32")]
    public void Parses(string text, string back) => Assert.Equal(back, ServiceAddress.Parse(text).ToString());

    [Theory]
    [InlineData("10.0.0.100", "ADDRESS/PREFIX")]
    [InlineData("10.0.0.100/33", "1 to 32")]
    [InlineData("10.0.0.100/0", "1 to 32")]
    [InlineData("fd00::1/129", "1 to 128")]
    [InlineData("10.0.0.x/24", "not an IPv4 or IPv6 address")]
    [InlineData("127.0.0.1/8", "cannot be a service address")]
    [InlineData("0.0.0.0/8", "cannot be a service address")]
    [InlineData("fe80::1/64", "cannot be a service address")]
    [InlineData("fe80::1%2/64", "not an IPv4 or IPv6 address")]
    [InlineData("224.0.0.1/24", "cannot be a service address")]
    [InlineData("ff02::1/64", "cannot be a service address")]
    [InlineData(null, "ADDRESS/PREFIX")]
    public void RefusesWithAReason(string? text, string reason)
    {
        Assert.False(ServiceAddress.TryParse(text, out _, out var error));
        Assert.Contains(reason, error, StringComparison.Ordinal);
    }

    [Fact]
    public void FindsTheInterfaceHoldingAnAddress()
    {
        const string json = """
            [{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
             {"ifindex":5,"ifname":"vs1","addr_info":[{"family":"inet","local":"10.0.0.1","prefixlen":24},{"family":"inet6","local":"fd00::100","prefixlen":64}]},
             {"ifindex":6,"ifname":"down0"}]
            """;
        Assert.Equal("vs1", AddressMover.InterfaceHolding(json, IPAddress.Parse("fd00::100")));
        Assert.Equal("vs1", AddressMover.InterfaceHolding(json, IPAddress.Parse("10.0.0.1")));
        Assert.Null(AddressMover.InterfaceHolding(json, IPAddress.Parse("10.0.0.2")));
    }

    [Fact]
    public void GratuitousArpIsARequestFromAndForTheAddress()
    {
        byte[] mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        var f = NeighbourAnnouncer.GratuitousArpFrame(IPAddress.Parse("10.0.0.100"), mac);
        Assert.Equal(42, f.Length);
        Assert.Equal(Enumerable.Repeat((byte)0xff, 6), f[..6]);
        Assert.Equal(mac, f[6..12]);
        Assert.Equal(new byte[] { 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1 }, f[12..22]);
        Assert.Equal(mac, f[22..28]);
        Assert.Equal(new byte[] { 10, 0, 0, 100 }, f[28..32]);
        Assert.Equal(new byte[6], f[32..38]);
        Assert.Equal(new byte[] { 10, 0, 0, 100 }, f[38..42]);
    }

    [Fact]
    public void AdvertisementOverridesAndCarriesTheLinkLayerAddress()
    {
        byte[] mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        var m = NeighbourAnnouncer.AdvertisementMessage(IPAddress.Parse("fd00::100"), mac);
        Assert.Equal(136, m[0]);
        Assert.Equal(0x20, m[4]); // override, not solicited, not a router
        Assert.Equal(IPAddress.Parse("fd00::100").GetAddressBytes(), m[8..24]);
        Assert.Equal(new byte[] { 2, 1 }, m[24..26]);
        Assert.Equal(mac, m[26..32]);
    }

    /// <summary>
    /// Two hosts on one link; the client's neighbour entry for the service address points at a stale hardware address.
    /// The address comes up on the other host: the client's entry moves there at once (ARP for IPv4, NA for IPv6),
    /// and an unknown interface is refused.
    /// </summary>
    [RequiresRootTheory]
    [InlineData("10.77.0.100/24", "10.77.0.1/24", "10.77.0.2/24")]
    [InlineData("fd77::100/64", "fd77::1/64", "fd77::2/64")]
    public async Task AnAddressBroughtUpIsLearnedByTheNeighbourAtOnce(string service, string clientAddress, string hostAddress)
    {
        string tag = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(3)).ToLowerInvariant();
        string client = $"sac-{tag}", host = $"sah-{tag}", vc = $"vc{tag}", vh = $"vh{tag}";
        try
        {
            await Ip("netns", "add", client);
            await Ip("netns", "add", host);
            await Ip("link", "add", "name", vc, "type", "veth", "peer", "name", vh);
            await Ip("link", "set", vc, "netns", client);
            await Ip("link", "set", vh, "netns", host);
            await Ip("-n", client, "addr", "add", clientAddress, "dev", vc, "nodad");
            await Ip("-n", host, "addr", "add", hostAddress, "dev", vh, "nodad");
            await Ip("-n", client, "link", "set", vc, "up");
            await Ip("-n", host, "link", "set", vh, "up");
            var addr = ServiceAddress.Parse(service);
            await Ip("-n", client, "neigh", "replace", addr.Address.ToString(), "lladdr", "02:00:00:00:00:01", "dev", vc, "nud", "stale");
            string hostMac = (await Ip("-n", host, "-j", "link", "show", vh)).Split("\"address\":\"")[1].Split('"')[0];
            await Ip("-n", host, "addr", "add", addr.ToString(), "dev", vh, "nodad");

            // One announcement, sent synchronously on a thread inside the host (an await would leave the namespace).
            InNetns.Run(host, () => NeighbourAnnouncer.AnnounceAsync(addr.Address, vh, count: 1).GetAwaiter().GetResult());

            Assert.Equal(vh, AddressMover.InterfaceHolding(await Ip("-n", host, "-j", "addr", "show"), addr.Address));
            string neigh = await Ip("-n", client, "neigh", "show", addr.Address.ToString(), "dev", vc);
            Assert.Contains(hostMac, neigh, StringComparison.OrdinalIgnoreCase);
            var missing = Assert.Throws<IOException>(() => InNetns.Run(host, () => NeighbourAnnouncer.AnnounceAsync(addr.Address, "nosuch0", count: 1).GetAwaiter().GetResult()));
            Assert.Contains("no interface nosuch0", missing.Message, StringComparison.Ordinal);
        }
        finally
        {
            await Command.RunAsync("ip", ["netns", "del", client], TimeSpan.FromSeconds(10));
            await Command.RunAsync("ip", ["netns", "del", host], TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>The hook replaces the built-in move: called with its arguments, its failure reported with its output.</summary>
    [Fact]
    public async Task TheHookIsCalledAndItsFailureSaysWhatItPrinted()
    {
        var dir = Directory.CreateTempSubdirectory("hook-").FullName;
        try
        {
            var hook = Path.Combine(dir, "hook.sh");
            var calls = Path.Combine(dir, "calls");
            await File.WriteAllTextAsync(hook, $"#!/bin/sh\necho \"$@\" >> {calls}\n[ \"$1\" = up ] || {{ echo 'vip api said no' >&2; exit 3; }}\n");
            File.SetUnixFileMode(hook, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var mover = new AddressMover(NullLogger.Instance, hook);
            var addr = ServiceAddress.Parse("203.0.113.7/32");

            await mover.UpAsync(addr, "eth9");
            var failed = await Assert.ThrowsAsync<IOException>(() => mover.DownAsync(addr, "eth9"));

            Assert.Equal(["up 203.0.113.7/32 eth9", "down 203.0.113.7/32 eth9"], await File.ReadAllLinesAsync(calls));
            Assert.Contains("exit 3", failed.Message, StringComparison.Ordinal);
            Assert.Contains("vip api said no", failed.Message, StringComparison.Ordinal);

            await File.WriteAllTextAsync(hook, "#!/bin/sh\nsleep 30\n");
            var slow = new AddressMover(NullLogger.Instance, hook, TimeSpan.FromMilliseconds(300));
            var timedOut = await Assert.ThrowsAsync<IOException>(() => slow.UpAsync(addr, "eth9"));
            Assert.Contains("killed", timedOut.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task<string> Ip(params string[] args)
    {
        var r = await Command.RunAsync("ip", args, TimeSpan.FromSeconds(10));
        return r.Succeeded ? r.Stdout : throw new InvalidOperationException(r.ToString());
    }
}

using Migration.Engine.Network;
using Migration.Engine.Processes;
using Migration.Tests.Common;
using Xunit;

namespace Migration.Engine.Tests.Network;

/// <summary>CRIU's nftables lock tables, as the source finds and removes them after a commit.</summary>
public sealed class CriuNetworkLockTests
{
    [Fact]
    public void ParsesOnlyCriusInetTables()
    {
        const string json = """
            {"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "CRIU-1a2b", "handle": 1}},
             {"table": {"family": "ip", "name": "CRIU-ip", "handle": 2}}, {"table": {"family": "inet", "name": "filter", "handle": 3}}]}
            """;
        Assert.Equal(["CRIU-1a2b"], CriuNetworkLock.Parse(json));
        Assert.Empty(CriuNetworkLock.Parse(""));
    }

    [Fact]
    public void ALogsRunIdsNameItsTables_OthersStay()
    {
        const string log = """
            (00.000000) CRIU run id = fe66378f-b498-496f-b201-ab30127be902
            (00.000000) CRIU run id = ad9d721d-225c-485c-a9db-cba162d104aa
            (00.071117) net: Lock network
            (00.080000) CRIU run id = not-an-id; rm -rf
            """;
        var ids = CriuNetworkLock.RunIds(log);
        Assert.Equal(["fe66378f-b498-496f-b201-ab30127be902", "ad9d721d-225c-485c-a9db-cba162d104aa"], ids);
        // The name CRIU gave it (cut to its buffer), another migration's lock, and a name too short to trust.
        Assert.Equal(["CRIU-ad9d721d-225c-485c-a9"], CriuNetworkLock.OfRuns(["CRIU-ad9d721d-225c-485c-a9", "CRIU-0123abcd-0000-0000-00", "CRIU-ad"], ids));
    }

    [Theory]
    [InlineData("filter")]
    [InlineData("CRIU-x; flush ruleset")]
    public async Task RefusesToRemoveAnythingElse(string name) =>
        await Assert.ThrowsAsync<ArgumentException>(() => CriuNetworkLock.RemoveAsync(name));

    [RequiresRootFact]
    public async Task FindsAndRemovesALockTableInANamespace()
    {
        string ns = $"nlk-{Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(3)).ToLowerInvariant()}";
        await Command.RunAsync("ip", ["netns", "add", ns], TimeSpan.FromSeconds(10));
        try
        {
            var made = await Command.RunAsync("ip", ["netns", "exec", ns, "nft", "add", "table", "inet", "CRIU-test1"], TimeSpan.FromSeconds(10));
            Assert.True(made.Succeeded, made.ToString());
            await Command.RunAsync("ip", ["netns", "exec", ns, "nft", "add", "table", "inet", "keepme"], TimeSpan.FromSeconds(10));

            Assert.Equal(["CRIU-test1"], InNetns.Run(ns, () => CriuNetworkLock.ListAsync().GetAwaiter().GetResult()));
            InNetns.Run(ns, () => CriuNetworkLock.RemoveAsync("CRIU-test1").GetAwaiter().GetResult());

            Assert.Empty(InNetns.Run(ns, () => CriuNetworkLock.ListAsync().GetAwaiter().GetResult()));
            var left = await Command.RunAsync("ip", ["netns", "exec", ns, "nft", "list", "tables"], TimeSpan.FromSeconds(10));
            Assert.Contains("keepme", left.Stdout, StringComparison.Ordinal);
        }
        finally
        {
            await Command.RunAsync("ip", ["netns", "del", ns], TimeSpan.FromSeconds(10));
        }
    }
}

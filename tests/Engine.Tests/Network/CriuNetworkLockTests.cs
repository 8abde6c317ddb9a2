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

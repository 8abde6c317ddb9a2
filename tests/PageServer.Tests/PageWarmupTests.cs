using Xunit;

namespace Migration.PageServer.Tests;

/// <summary>The warm-up runs the real page path (CRIU session, stream both codecs, receiver, store, images) and keeps nothing.</summary>
public sealed class PageWarmupTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("migrate-warmup-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Runs_AndLeavesNothingBehind()
    {
        var took = await PageWarmup.RunAsync(_dir, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.True(took > TimeSpan.Zero);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));
    }

    [Fact]
    public async Task RemovesTheScratchOfAWarmupWhoseProcessIsGone_ButNotOthers()
    {
        // pid_max is at most 2^22: this pid cannot be running.
        var stale = Directory.CreateDirectory(Path.Combine(_dir, ".warmup-99999999-0123")).FullName;
        await File.WriteAllTextAsync(Path.Combine(stale, "pages"), "x");
        var live = Directory.CreateDirectory(Path.Combine(_dir, ".warmup-1-0123")).FullName; // pid 1 runs
        var other = Directory.CreateDirectory(Path.Combine(_dir, "20261122-migration")).FullName;

        await PageWarmup.RunAsync(_dir, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.False(Directory.Exists(stale));
        Assert.True(Directory.Exists(live));
        Assert.True(Directory.Exists(other));
    }
}

using Migration.Engine.Processes;
using Migration.Engine.Tests.Tracking;
using Xunit;

namespace Migration.Engine.Tests.Processes;

/// <summary>What a cold migration tells its target about the tree's memory, read from a real process.</summary>
public sealed class ProcessTreeTests
{
    [Fact]
    public async Task TaskMemory_NamesEachTaskWithItsResidentAnonymousMemory()
    {
        await using var trackee = await Trackee.StartAsync("--mode", "sleep", "--mib", "16");
        await trackee.CommandAsync($"WS 0 {trackee.Pages} 1"); // every page of its 16 MiB buffer written
        var full = Assert.Single(ProcessTree.TaskMemory(trackee.Pid, 64));
        Assert.Equal(trackee.Pid, full.Pid); // not in a pid namespace of its own: CRIU names it by this pid
        Assert.InRange(full.Bytes, 16UL << 20, 24UL << 20);

        await trackee.CommandAsync($"DN 0 {trackee.Pages / 2}"); // half of it given back
        var half = Assert.Single(ProcessTree.TaskMemory(trackee.Pid, 64));
        Assert.InRange(full.Bytes - half.Bytes, 7UL << 20, 9UL << 20);
        Assert.Empty(ProcessTree.TaskMemory(trackee.Pid, 0));
        Assert.Empty(ProcessTree.TaskMemory(int.MaxValue, 64)); // no such process
    }
}

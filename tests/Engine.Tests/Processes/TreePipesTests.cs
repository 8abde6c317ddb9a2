using System.Diagnostics;
using Migration.Engine.Processes;
using Migration.Tests.Common;
using Xunit;

namespace Migration.Engine.Tests.Processes;

/// <summary>Pipes that join a tree to a process outside it, read from real processes.</summary>
public sealed class TreePipesTests
{
    [Theory]
    [InlineData("flags:\t0100000", 0)]
    [InlineData("flags:\t0100001", 1)]
    [InlineData("flags:\t02", 2)]
    [InlineData("flags:\t", null)]
    [InlineData("flags:\t09", null)]
    public void AccessMode_IsTheLowBitsOfTheOctalFlags(string line, int? mode) => Assert.Equal(mode, TreePipes.ParseAccessMode(line));

    [RequiresRootFact]
    public async Task CapturedStdoutIsNamed_APipeInsideTheTreeIsNot()
    {
        // stdout and stderr captured by us (outside), stdin from /dev/null, and a pipe of its own (both ends inside).
        var script = "import os, time; r, w = os.pipe(); print(r, w, flush=True); time.sleep(60)";
        using var p = Process.Start(new ProcessStartInfo("python3", ["-c", script]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        try
        {
            var own = (await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(20)))!.Split(' ').Select(int.Parse).ToArray();

            var outside = TreePipes.Outside([p.Id]);

            // (Whatever else it inherited from this test process is named too, rightly.)
            var stdout = Assert.Single(outside, e => e.Fd == 1);
            Assert.True(stdout.Writes);
            Assert.Contains("writes fail (EPIPE)", stdout.ToString(), StringComparison.Ordinal);
            Assert.Single(outside, e => e.Fd == 2 && e.Writes);
            Assert.DoesNotContain(outside, e => own.Contains(e.Fd));
        }
        finally
        {
            p.Kill();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));
        }
    }

    [Fact]
    public void GoneProcess_HoldsNothing() => Assert.Empty(TreePipes.Outside([int.MaxValue]));
}

using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Tests.Common;
using Xunit;

namespace Migration.Integration.Tests.Criu;

/// <summary>The CRIU driver against the real criu binary (swrk RPC).</summary>
public sealed class CriuClientTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("migrate-criu-").FullName;
    private readonly CriuClient _criu = new(new CriuOptions(), NullLogger<CriuClient>.Instance);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [RequiresRootFact]
    public async Task VersionIsAtLeastTheMinimum()
    {
        var v = await _criu.GetVersionAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(v.AsVersion >= CriuOptions.MinimumVersion, $"criu {v}");
        Assert.StartsWith($"{v.Major}.{v.Minor}", v.Text, StringComparison.Ordinal);
    }

    [RequiresRootFact]
    public async Task CheckPassesAndFeaturesAnswer()
    {
        await _criu.CheckAsync(_dir, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(60));
        var features = await _criu.CheckFeaturesAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        // This kernel has userfaultfd (lazy pages) but no soft-dirty (mem_track): the answer must say so.
        bool softDirty = KernelHasSoftDirty();
        Assert.Equal(softDirty, features.MemTrack);
        Assert.True(features.LazyPages);
    }

    [RequiresRootFact]
    public async Task CpuInfoDumpedHereChecksHere()
    {
        await _criu.CpuInfoDumpAsync(_dir, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        var image = Path.Combine(_dir, "cpuinfo.img");
        Assert.True(new FileInfo(image).Length > 8);
        await _criu.CpuInfoCheckAsync(_dir, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
    }

    [RequiresRootFact]
    public async Task CpuInfoCheckOfGarbageFailsWithCriusReason()
    {
        await File.WriteAllBytesAsync(Path.Combine(_dir, "cpuinfo.img"), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        var ex = await Assert.ThrowsAsync<CriuException>(() => _criu.CpuInfoCheckAsync(_dir, CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("cpuinfo check", ex.Operation);
        Assert.NotEmpty(ex.CriuErrors);
    }

    [RequiresRootFact]
    public async Task FailedDumpCarriesCriusErrorLines()
    {
        var images = Directory.CreateDirectory(Path.Combine(_dir, "images")).FullName;
        var spec = new DumpSpec { Pid = FindUnusedPid(), ImagesDir = images, WorkDir = _dir };

        var ex = await Assert.ThrowsAsync<CriuException>(() => _criu.DumpAsync(spec, (_, _) => Task.FromResult(true), CancellationToken.None))
            .WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal("dump", ex.Operation);
        Assert.NotEmpty(ex.CriuErrors);
        Assert.Contains("criu:", ex.Message, StringComparison.Ordinal);
        Assert.Equal(Path.Combine(_dir, "dump.log"), ex.LogPath);
        Assert.True(File.Exists(ex.LogPath));
    }

    /// <summary>
    /// Soft-dirty probe: a page written just now carries bit 55 in /proc/self/pagemap on kernels with
    /// CONFIG_MEM_SOFT_DIRTY, and never on kernels without it.
    /// </summary>
    private static unsafe bool KernelHasSoftDirty()
    {
        const int page = 4096;
        byte* mem = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(page, page);
        try
        {
            mem[0] = 1;
            using var pagemap = File.OpenRead("/proc/self/pagemap");
            pagemap.Position = (long)((ulong)mem / page * 8);
            Span<byte> entry = stackalloc byte[8];
            pagemap.ReadExactly(entry);
            return (BitConverter.ToUInt64(entry) & (1UL << 55)) != 0;
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(mem);
        }
    }

    private static int FindUnusedPid()
    {
        for (int pid = 4_000_000; pid > 1000; pid -= 7)
        {
            if (!Directory.Exists($"/proc/{pid}"))
            {
                return pid;
            }
        }

        throw new InvalidOperationException("no unused pid");
    }
}

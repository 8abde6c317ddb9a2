using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;
using static Migration.PageServer.Tests.Criu.CriuWire;

namespace Migration.PageServer.Tests.Criu;

/// <summary>The receiving page server against the real <c>criu dump --page-server</c>.</summary>
public sealed class CriuPageServerRealCriuTests(ITestOutputHelper output) : IDisposable
{
    private const int Mib = 32;
    private const ulong Seed = 1; // memwork's default

    private readonly string _dir = Directory.CreateTempSubdirectory("migrate-ps-criu-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Over TCP (CRIU connects to our listener) and over a socket pair whose end CRIU's swrk inherits (ps.fd).</summary>
    [RequiresRootTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task CriuDump_SendsMemworksPagesToOurPageServer_NotToPagesImages(bool socketPair)
    {
        var images = Directory.CreateDirectory(Path.Combine(_dir, "images")).FullName;
        await using var memwork = await Within.Await(
            MemworkProcess.StartAsync(Path.Combine(_dir, $"memwork-{Guid.NewGuid():N}.dat"), Mib), "memwork to start", TimeSpan.FromSeconds(60));
        var bufferStart = memwork.FindBuffer(Mib << 20);
        long residentPages = memwork.ResidentBytes() / Page;
        var target = Pid(memwork.VirtualPid());

        await using var listener = CriuPageServerListener.Start(new IPEndPoint(IPAddress.Loopback, 0));
        var sink = new RecordingPageSink { KeepPages = true };
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var criu = new CriuClient(new CriuOptions(), NullLogger<CriuClient>.Instance);
        Task<PageServerResult> serving;
        DumpSpec spec;
        if (socketPair)
        {
            var (ours, theirs) = Migration.Engine.Native.SocketPair.Connected();
            serving = CriuPageServerConnection.ServeAsync(ours, sink, ct: cts.Token);
            spec = new DumpSpec { Pid = memwork.Pid, ImagesDir = images, WorkDir = _dir, LeaveRunning = true, PageServerConnection = theirs };
        }
        else
        {
            serving = listener.ServeAsync(sink, cts.Token);
            spec = new DumpSpec
            {
                Pid = memwork.Pid,
                ImagesDir = images,
                WorkDir = _dir,
                LeaveRunning = true,
                PageServerAddress = "127.0.0.1",
                PageServerPort = listener.Port,
            };
        }

        CriuException? dumpFailed = null;
        try
        {
            await Within.Await(criu.DumpAsync(spec, (_, _) => Task.FromResult(true), cts.Token), "criu dump", TimeSpan.FromMinutes(2));
        }
        catch (CriuException ex)
        {
            dumpFailed = ex;
        }

        var result = await Within.Await(serving, "the page-server session", TimeSpan.FromMinutes(2));
        Assert.True(dumpFailed is null, $"criu dump failed: {dumpFailed}\nsession: {result}");
        Assert.True(result.IsCompleted, result.ToString());
        Assert.Empty(sink.Violations);
        Assert.Equal(SinkCall.Complete, sink.Calls[^1]);

        // memwork is init of its pid namespace: CRIU names its pagemap by that vpid.
        Assert.Contains(SinkCall.Open(target), sink.Calls);

        // Present pages: memwork's RSS minus file-backed pages CRIU does not copy (its binary, libc), plus nothing
        // CRIU invents. The buffer alone is 2/3 of 32 MiB resident (every third page is never touched).
        long present = sink.PresentPages(target);
        output.WriteLine($"memwork pid {memwork.Pid} (vpid {target.Id}), buffer at 0x{bufferStart:x}, {residentPages} pages resident; session: {result}");
        output.WriteLine($"targets: {string.Join(", ", sink.Calls.Where(c => c.Kind == "open").Select(c => c.Target))}; {sink.Calls.Count} sink calls");
        long bufferResident = (Mib << 20) / Page / 3 * 2;
        Assert.InRange(present, bufferResident, residentPages + 64);
        Assert.InRange(present, residentPages * 3 / 4, residentPages + 64);

        // Contents: random and text pages of the buffer match memwork's pattern exactly; zero pages were not sent.
        var rng = new Random(12345);
        int checkedRandom = 0;
        for (int i = 0; i < 200; i++)
        {
            long page = rng.NextInt64(0, (Mib << 20) / Page);
            ulong vaddr = bufferStart + ((ulong)page * Page);
            var expected = MemworkProcess.ExpectedPage(page, Seed);
            if (expected is null)
            {
                Assert.False(sink.Pages.ContainsKey((target, vaddr)), $"untouched page {page} at 0x{vaddr:x} was sent as present");
                continue;
            }

            Assert.True(sink.Pages.TryGetValue((target, vaddr), out var got), $"page {page} at 0x{vaddr:x} was not received");
            Assert.True(expected.AsSpan().SequenceEqual(got), $"page {page} at 0x{vaddr:x} differs from memwork's pattern");
            checkedRandom += page % 3 == 2 ? 1 : 0;
        }

        Assert.True(checkedRandom > 20, $"only {checkedRandom} random-pattern pages checked");

        // The pages came to us: CRIU wrote no pages image of its own.
        Assert.Empty(Directory.GetFiles(images, "pages-*.img"));
        if (socketPair)
        {
            // Over the inherited socket: CRIU says so, and never connected anywhere.
            var log = await File.ReadAllTextAsync(Path.Combine(_dir, spec.LogFile));
            Assert.Contains("Reusing ps socket", log, StringComparison.Ordinal);
        }

        Assert.True(memwork.ResidentBytes() > 0, "memwork should still run (--leave-running)");
    }
}

using System.Buffers;
using System.Net.Sockets;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;
using Migration.PageServer.Tests.Store;
using Migration.PageServer.Transport;
using Xunit;

namespace Migration.PageServer.Tests.Transport;

/// <summary>The source end of the page stream over a real socket pair, into a real receiver and store or against a target that goes away.</summary>
public sealed class PageStreamSenderTests : IDisposable
{
    private readonly TempDirectory _tmp = new("sender");

    public void Dispose() => _tmp.Dispose();

    [Theory]
    [InlineData(1000)] // every page straddles segments
    [InlineData(4096 * 3)] // pages lie whole in segments
    public async Task Raw_PagesAcrossSegments_ArriveExactlyAsTheyWere(int segmentBytes)
    {
        var (a, b) = Engine.Native.SocketPair.Connected();
        using var store = new Migration.PageServer.Store.PageStore(_tmp.Sub($"store-{segmentBytes}"));
        var receiving = PageStreamReceiver.RunAsync(new NetworkStream(b, ownsSocket: true), _ => store, CancellationToken.None);
        const int nr = 600; // three batches, the last partial
        var run = PageData.Make(Base, nr, 1);
        int zero = 0;
        for (int i = 0; i < nr; i++)
        {
            if (i % 3 == 0 || (i >= 300 && i < 340))
            {
                Array.Clear(run, i * PageFacts.PageSize, PageFacts.PageSize);
                zero++;
            }
        }

        PageStreamStats stats;
        await using (var sender = new PageStreamSender(new NetworkStream(a, ownsSocket: true), "m-2", new PageFrameWriterOptions(disableCompression: true)))
        {
            await sender.OpenAsync(Pid1, CancellationToken.None).AsTask().WaitAsync(Limit);
            await sender.WritePagesAsync(Pid1, Base, nr, PagemapFlags.Present, PageData.Segmented(run, segmentBytes), CancellationToken.None).AsTask().WaitAsync(Limit);
            await sender.WritePagesAsync(Pid1, Base + (1000UL * PageFacts.PageSize), 5, PagemapFlags.Lazy, ReadOnlySequence<byte>.Empty, CancellationToken.None).AsTask().WaitAsync(Limit);
            await sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit);
            await sender.FinishAsync(CancellationToken.None).WaitAsync(Limit);
            stats = sender.Stats;
        }

        var result = await receiving.WaitAsync(Limit);
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal(((ulong)nr, 1), (result.Pages, result.Rounds)); // pages with data
        Assert.Equal((nr, zero, 3), (stats.Pages, stats.ZeroPages, stats.Batches));
        Assert.InRange(stats.WireBytes, (nr - zero) * (long)PageFacts.PageSize, ((nr - zero) * (long)PageFacts.PageSize) + 400);
        var dest = new byte[nr * PageFacts.PageSize];
        Assert.Equal(nr, store.ReadPages(Pid1, Base, nr, dest));
        Assert.Equal(run, dest);
        Assert.Equal(0, store.ReadPages(Pid1, Base + (1000UL * PageFacts.PageSize), 5, dest)); // lazy: marked, no data
    }

    /// <summary>
    /// A target that is there but takes nothing (stopped: its socket stays open, its buffers fill): the sender fails
    /// the stream after the stall timeout, with a reason, whether it waits on a write or on a round's acknowledgement.
    /// A sender with nothing outstanding is never failed, however long it is idle.
    /// </summary>
    [Theory]
    [InlineData(64)] // fits the socket buffers: the wait is for the acknowledgement
    [InlineData(16384)] // 64 MiB does not: the wait is on a write
    public async Task TargetThatTakesNothing_FailsTheStreamAfterTheStallTimeout(int pages)
    {
        var (a, b) = Engine.Native.SocketPair.Connected();
        using var stalled = b; // never read, never closed until the end
        await using var sender = new PageStreamSender(new NetworkStream(a, ownsSocket: true), "m-9", new PageFrameWriterOptions(disableCompression: true),
            stallTimeout: TimeSpan.FromMilliseconds(400));
        await Task.Delay(800); // idle, nothing outstanding: no failure
        await sender.OpenAsync(Pid1, CancellationToken.None);
        var run = PageData.Make(Base, pages, 7);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var failed = await Assert.ThrowsAsync<IOException>(async () =>
        {
            await sender.WritePagesAsync(Pid1, Base, (uint)pages, PagemapFlags.Present, new ReadOnlySequence<byte>(run), CancellationToken.None);
            await sender.CompleteRoundAsync(CancellationToken.None);
        }).WaitAsync(Limit);

        Assert.Contains("stalled", failed.Message, StringComparison.Ordinal);
        Assert.InRange(clock.Elapsed, TimeSpan.FromMilliseconds(300), TimeSpan.FromSeconds(20));
    }

    private const ulong Base = 0x7f0000000000;
    private static readonly PageTarget Pid1 = new(1, PageImageType.Pid);
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(true)] // raw: the caller writes to the connection itself
    [InlineData(false)] // LZ4: an encoder and a send loop behind a queue
    public async Task TargetClosingMidStream_FailsTheNextCalls_WithTheReason_AndNeverHangs(bool raw)
    {
        var (a, b) = Engine.Native.SocketPair.Connected();
        using var target = b;
        await using var sender = new PageStreamSender(new NetworkStream(a, ownsSocket: true), "m-1", new PageFrameWriterOptions(disableCompression: raw));
        await sender.OpenAsync(Pid1, CancellationToken.None);

        // The target reads the first 64 KiB, then closes without a word.
        var first = new byte[64 << 10];
        var reading = Task.Run(async () =>
        {
            int got = 0;
            while (got < first.Length)
            {
                int n = await target.ReceiveAsync(first.AsMemory(got), SocketFlags.None);
                if (n == 0)
                {
                    break;
                }

                got += n;
            }

            target.Close();
        });

        var failure = await Assert.ThrowsAsync<IOException>(async () =>
        {
            for (int i = 0; i < 10_000; i++)
            {
                ulong va = Base + ((ulong)i * 64 * PageFacts.PageSize);
                await sender.WritePagesAsync(Pid1, va, 64, PagemapFlags.Present, new ReadOnlySequence<byte>(PageData.Make(va, 64, 1)), CancellationToken.None).AsTask().WaitAsync(Limit);
            }

            await sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit);
        });

        await reading.WaitAsync(Limit);
        Assert.Contains("target", failure.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<IOException>(() => sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit));
    }
}

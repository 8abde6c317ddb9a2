using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Migration.PageServer.Streaming;
using Migration.PageServer.Tests.Store;
using Migration.PageServer.Transport;
using Xunit;
using Frames = Migration.PageServer.Tests.Streaming.Frames;

namespace Migration.PageServer.Tests.Transport;

/// <summary>
/// The target end of the page stream over a real socket pair: frames from the real sender or written by hand, into a
/// real page store or a sink that records, slows down or refuses.
/// </summary>
public sealed class PageStreamReceiverTests : IDisposable
{
    private const int Page = PageFacts.PageSize;
    private const ulong Base = 0x7f0000000000;
    private static readonly PageTarget Pid1 = new(1, PageImageType.Pid);
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    private readonly TempDirectory _tmp = new("receiver");

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task Rounds_FromTheSender_AreStoredInOrder_AndAcknowledgedOnlyOnceDurable()
    {
        var (source, target) = Pair();
        using var store = new PageStore(_tmp.Sub("store"));
        var sink = new SlowSink(store, writeDelay: TimeSpan.FromMilliseconds(2), completeDelay: TimeSpan.FromMilliseconds(300));
        var receiving = PageStreamReceiver.RunAsync(target, _ => sink, CancellationToken.None);

        await using (var sender = new PageStreamSender(source, "m-1", new PageFrameWriterOptions(disableCompression: true)))
        {
            await sender.OpenAsync(Pid1, CancellationToken.None);
            for (int round = 1; round <= 2; round++)
            {
                // 40 batches of 64 pages: more than the receiver holds decoded, so decoding waits on the slow store.
                for (int b = 0; b < 40; b++)
                {
                    ulong va = Base + ((ulong)b * 64 * Page);
                    await sender.WritePagesAsync(Pid1, va, 64, PagemapFlags.Present, new ReadOnlySequence<byte>(PageData.Make(va, 64, round)), CancellationToken.None);
                }

                long before = sink.Completed;
                await sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit);
                Assert.Equal(before + 1, sink.Completed); // the acknowledgement came after the sink's CompleteRoundAsync returned
                Assert.Equal(round, sender.RoundsAcknowledged);
            }

            await sender.FinishAsync(CancellationToken.None).WaitAsync(Limit);
        }

        var result = await receiving.WaitAsync(Limit);
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal(("m-1", 2 * 40 * 64UL, 2), (result.MigrationId, result.Pages, result.Rounds));
        Assert.Empty(sink.Violations);
        Assert.Equal(Enumerable.Range(0, 40).Select(b => Base + ((ulong)b * 64 * Page)).Concat(Enumerable.Range(0, 40).Select(b => Base + ((ulong)b * 64 * Page))), sink.Writes);

        var dest = new byte[40 * 64 * Page];
        Assert.Equal(40 * 64, store.ReadPages(Pid1, Base, 40 * 64, dest));
        PageData.AssertPages(dest, Base, [.. Enumerable.Repeat(2, 40 * 64)]);

        // What the agent reports: every page, both rounds, and the raw stream's headers on top of the pages.
        var p = sink.Progress!.Snapshot();
        Assert.Equal((5120UL, 0UL, 5120UL * Page, 2U, true), (p.Pages, p.ZeroPages, p.PageBytes, p.RoundsAcknowledged, p.Ended));
        Assert.InRange(p.WireBytes, p.PageBytes, p.PageBytes + (100 * 1024));
        Assert.InRange(p.CompressionRatio, 0.99, 1.0);
        Assert.Equal(new ulong[] { 1, 2 }, p.Rounds.Select(r => r.Round));
        Assert.All(p.Rounds, r => Assert.Equal(2560UL, r.Pages));
        Assert.InRange(p.Rounds.Aggregate(0UL, (a, r) => a + r.WireBytes), p.PageBytes, p.WireBytes); // END is in no round
        Assert.True(p.Rounds.All(r => r.Ms >= 300), "each round took the sink's 300 ms to become durable");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task MixedPages_RawOrLz4_ReachTheStoreExactly_NewestCopyWinning(bool compress)
    {
        // Straight into a real store (its packed path): zero pages, text-like pages (which LZ4 shrinks), random ones,
        // an all-zero batch, a one-page batch that compresses to a few bytes, and a second round over part of the first.
        var (source, target) = Pair();
        using var store = new PageStore(_tmp.Sub("store"));
        var receiving = PageStreamReceiver.RunAsync(target, _ => store, CancellationToken.None);
        var random = new Random(7);
        byte[] Mixed(ulong va, int nr, int version)
        {
            var run = PageData.Make(va, nr, version);
            for (int i = 0; i < nr; i++)
            {
                var page = run.AsSpan(i * Page, Page);
                switch ((i + version) % 4)
                {
                    case 0:
                        page.Clear();
                        break;
                    case 1:
                        "the quick brown fox jumps over the lazy dog "u8.ToArray().AsSpan().CopyTo(page[16..]);
                        page[60..].Fill((byte)'x');
                        break;
                    case 2:
                        random.NextBytes(page[16..]);
                        break;
                }
            }

            return run;
        }

        var expected = new byte[600 * Page];
        await using (var sender = new PageStreamSender(source, "m-7", new PageFrameWriterOptions(disableCompression: !compress)))
        {
            await sender.OpenAsync(Pid1, CancellationToken.None).AsTask().WaitAsync(Limit);
            async Task Send(int first, int nr, int version, bool zero = false)
            {
                ulong va = Base + ((ulong)first * Page);
                var run = zero ? new byte[nr * Page] : Mixed(va, nr, version);
                run.CopyTo(expected, first * Page);
                await sender.WritePagesAsync(Pid1, va, (uint)nr, PagemapFlags.Present, new ReadOnlySequence<byte>(run), CancellationToken.None).AsTask().WaitAsync(Limit);
            }

            await Send(0, 500, 1);
            await Send(500, 40, 1, zero: true);
            var tiny = new byte[Page];
            tiny[100] = 1;
            tiny.CopyTo(expected, 540 * Page);
            await sender.WritePagesAsync(Pid1, Base + (540UL * Page), 1, PagemapFlags.Present, new ReadOnlySequence<byte>(tiny), CancellationToken.None).AsTask().WaitAsync(Limit);
            await Send(541, 59, 1);
            await sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit);
            await Send(100, 300, 2);
            await sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit);
            await sender.FinishAsync(CancellationToken.None).WaitAsync(Limit);
            Assert.Equal(compress, sender.Stats.CompressedBatches > 0);
        }

        var result = await receiving.WaitAsync(Limit);
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal((900UL, 2), (result.Pages, result.Rounds));
        var dest = new byte[600 * Page];
        Assert.Equal(600, store.ReadPages(Pid1, Base, 600, dest));
        for (int i = 0; i < 600; i++)
        {
            Assert.True(dest.AsSpan(i * Page, Page).SequenceEqual(expected.AsSpan(i * Page, Page)), $"page {i} differs");
        }
    }

    [Fact]
    public async Task Progress_CountsZeroPagesAndCompression_PerRound()
    {
        var (source, target) = Pair();
        var sink = new SlowSink(null);
        var receiving = PageStreamReceiver.RunAsync(target, _ => sink, CancellationToken.None);

        await using (var sender = new PageStreamSender(source, "m-6"))
        {
            await sender.OpenAsync(Pid1, CancellationToken.None);
            // Round 1: 64 pages, every other one zero. Round 2: 8 pages, none zero. (These pages do not compress.)
            var mixed = PageData.Make(Base, 64, 1);
            for (int i = 0; i < 64; i += 2)
            {
                Array.Clear(mixed, i * Page, Page);
            }

            await sender.WritePagesAsync(Pid1, Base, 64, PagemapFlags.Present, new ReadOnlySequence<byte>(mixed), CancellationToken.None);
            await sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit);
            await sender.WritePagesAsync(Pid1, Base, 8, PagemapFlags.Present, new ReadOnlySequence<byte>(PageData.Make(Base, 8, 2)), CancellationToken.None);
            await sender.CompleteRoundAsync(CancellationToken.None).AsTask().WaitAsync(Limit);
            await sender.FinishAsync(CancellationToken.None).WaitAsync(Limit);
        }

        Assert.True((await receiving.WaitAsync(Limit)).Succeeded);
        var p = sink.Progress!.Snapshot();
        Assert.Equal((72UL, 32UL, 2U), (p.Pages, p.ZeroPages, p.RoundsAcknowledged));
        Assert.True(p.CompressionRatio > 1.6, $"ratio {p.CompressionRatio}: 32 of the 72 pages are zero, sent as bits");
        Assert.Equal((64UL, 32UL), (p.Rounds[0].Pages, p.Rounds[0].ZeroPages));
        Assert.Equal((8UL, 0UL), (p.Rounds[1].Pages, p.Rounds[1].ZeroPages));
        Assert.InRange(p.Rounds[0].WireBytes, 32UL * Page, 33UL * Page); // the 32 non-zero pages and the frames' headers
    }

    [Fact]
    public async Task BadChecksum_EndsTheStream_WithAnErrorFrame_AndNothingAfterItIsStored()
    {
        var (source, target) = Pair();
        var sink = new SlowSink(null);
        var receiving = PageStreamReceiver.RunAsync(target, _ => sink, CancellationToken.None);

        var good = Batch(Base, 4);
        var bad = Batch(Base + (4 * Page), 4);
        bad[^1] ^= 0x5a; // a payload byte: the checksum no longer matches
        await source.WriteAsync(Concat(Hello("m-2"), Open(), good, bad, Batch(Base + (8 * Page), 4)));

        var result = await receiving.WaitAsync(Limit);
        Assert.False(result.Succeeded);
        Assert.Contains("invalid batch", result.Error, StringComparison.Ordinal);
        Assert.True(sink.Writes.All(v => v == Base), $"stored after the bad batch: {string.Join(", ", sink.Writes.Select(v => $"0x{v:x}"))}");
        Assert.Contains("invalid batch", await ReadErrorFrameAsync(source), StringComparison.Ordinal);
    }

    [Fact]
    public async Task StoreRefusingARun_EndsTheStream_NamingTheLimit()
    {
        var (source, target) = Pair();
        using var store = new PageStore(_tmp.Sub("store"), new PageStoreOptions { MaxBytes = 8 * Page });
        var receiving = PageStreamReceiver.RunAsync(target, _ => store, CancellationToken.None);

        await source.WriteAsync(Concat(Hello("m-3"), Open(), Batch(Base, 4), Batch(Base + (4 * Page), 8), Batch(Base + (12 * Page), 1), RoundEnd(1)));

        var result = await receiving.WaitAsync(Limit);
        Assert.False(result.Succeeded);
        Assert.Equal(4UL, result.Pages);
        Assert.Equal(0, result.Rounds);
        string error = await ReadErrorFrameAsync(source);
        Assert.Equal(result.Error, error);
        Assert.Contains("bytes", error, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(4, store.ReadPages(Pid1, Base, 16, new byte[16 * Page]));
    }

    [Fact]
    public async Task ConnectionClosedInsideAFrame_IsAFailure_NotAHang()
    {
        var (source, target) = Pair();
        var sink = new SlowSink(null);
        var receiving = PageStreamReceiver.RunAsync(target, _ => sink, CancellationToken.None);

        var batch = Batch(Base, 4);
        await source.WriteAsync(Concat(Hello("m-4"), Open(), batch.AsSpan(0, batch.Length - 100).ToArray()));
        source.Socket.Shutdown(SocketShutdown.Send);

        var result = await receiving.WaitAsync(Limit);
        Assert.False(result.Succeeded);
        Assert.Contains("connection closed inside a frame", result.Error, StringComparison.Ordinal);
        Assert.Empty(sink.Writes);
    }

    [Fact]
    public async Task Cancelling_StopsBothLoops_EvenWithTheStoreBusy()
    {
        var (source, target) = Pair();
        var sink = new SlowSink(null, writeDelay: TimeSpan.FromSeconds(1));
        using var cts = new CancellationTokenSource();
        var receiving = PageStreamReceiver.RunAsync(target, _ => sink, cts.Token);
        await source.WriteAsync(Concat(Hello("m-5"), Open(), Batch(Base, 4), Batch(Base + (4 * Page), 4), Batch(Base + (8 * Page), 4)));
        await sink.FirstWrite.Task.WaitAsync(Limit);

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => receiving.WaitAsync(Limit));
        Assert.Empty(sink.Violations);
    }

    private (NetworkStream Source, NetworkStream Target) Pair()
    {
        var (a, b) = Engine.Native.SocketPair.Connected();
        return (new NetworkStream(a, ownsSocket: true), new NetworkStream(b, ownsSocket: true));
    }

    private static byte[] Hello(string id) => Frames.Write(w => w.WriteHello(id));

    private static byte[] Open() => Frames.Write(w => w.WriteOpen(Pid1));

    private static byte[] RoundEnd(ulong id) => Frames.Write(w => w.WriteRoundEnd(id));

    private static byte[] Batch(ulong vaddr, int nrPages) =>
        Frames.Write(w => w.WritePages(Pid1, vaddr, PagemapFlags.Present, PageData.Make(vaddr, nrPages, 1)), new PageFrameWriterOptions(disableCompression: true));

    private static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];

    /// <summary>Reads frames from the receiver until an ERROR frame; returns its message.</summary>
    private static async Task<string> ReadErrorFrameAsync(NetworkStream source)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using var cts = new CancellationTokenSource(Limit);
        while (true)
        {
            var seq = new ReadOnlySequence<byte>(buffer.WrittenMemory);
            while (PageFrameReader.TryReadFrame(ref seq, out var frame, out var error) is var status && status != PageFrameStatus.Incomplete)
            {
                Assert.True(status == PageFrameStatus.Complete, error.Message);
                if (frame.Kind == PageFrameKind.Error)
                {
                    return frame.ErrorMessage!;
                }
            }

            int n = await source.ReadAsync(buffer.GetMemory(4096), cts.Token);
            Assert.True(n > 0, "the receiver closed without an ERROR frame");
            buffer.Advance(n);
        }
    }

    /// <summary>
    /// A sink that passes calls on to a store (or drops them), slowly if asked, recording page writes in order and
    /// any two calls that overlapped (the contract says they never do).
    /// </summary>
    private sealed class SlowSink(IPageSink? inner, TimeSpan writeDelay = default, TimeSpan completeDelay = default) : IPageSink, IProgressReportingSink
    {
        public PageStreamProgress? Progress { get; } = new();

        private int _inside;
        private long _completed;

        public List<ulong> Writes { get; } = [];

        public List<string> Violations { get; } = [];

        public TaskCompletionSource FirstWrite { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public long Completed => Interlocked.Read(ref _completed);

        public async ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct)
        {
            Enter();
            try
            {
                return inner is not null && await inner.OpenAsync(target, ct);
            }
            finally
            {
                Leave();
            }
        }

        public async ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct)
        {
            Enter();
            try
            {
                Writes.Add(vaddr);
                FirstWrite.TrySetResult();
                if (BinaryPrimitives.ReadUInt64LittleEndian(data.FirstSpan) != vaddr)
                {
                    Violations.Add($"page 0x{vaddr:x} holds another page's data");
                }

                if (writeDelay > TimeSpan.Zero)
                {
                    await Task.Delay(writeDelay, ct);
                }

                if (inner is not null)
                {
                    await inner.WritePagesAsync(target, vaddr, nrPages, flags, data, ct);
                }
            }
            finally
            {
                Leave();
            }
        }

        public async ValueTask CompleteRoundAsync(CancellationToken ct)
        {
            Enter();
            try
            {
                if (completeDelay > TimeSpan.Zero)
                {
                    await Task.Delay(completeDelay, ct);
                }

                if (inner is not null)
                {
                    await inner.CompleteRoundAsync(ct);
                }

                Interlocked.Increment(ref _completed);
            }
            finally
            {
                Leave();
            }
        }

        private void Enter()
        {
            if (Interlocked.Increment(ref _inside) != 1)
            {
                lock (Violations)
                {
                    Violations.Add("two sink calls at once");
                }
            }
        }

        private void Leave() => Interlocked.Decrement(ref _inside);
    }
}

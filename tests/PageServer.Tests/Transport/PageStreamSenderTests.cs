using System.Buffers;
using System.Net.Sockets;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;
using Migration.PageServer.Tests.Store;
using Migration.PageServer.Transport;
using Xunit;

namespace Migration.PageServer.Tests.Transport;

/// <summary>The source end of the page stream over a real socket pair, against a target that goes away.</summary>
public sealed class PageStreamSenderTests
{
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

using System.Diagnostics;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Migration.PageServer.Streaming;
using Migration.PageServer.Transport;

namespace Migration.PageServer;

/// <summary>
/// Runs the page path once, in this process, on a few pages: a make-believe CRIU dump into the source's page server
/// (<see cref="SourcePageTransport"/>), the page stream raw and LZ4-compressed, the receiver, a page store and its images,
/// over socket pairs and a scratch directory. Nothing leaves the process, and nothing is kept.
/// </summary>
/// <remarks>
/// Why: much of that path is generic code over our types (async state machines, pipes, channels), which ReadyToRun
/// cannot compile ahead, so the JIT compiles it at its first call. Without this, the first call is inside a migration's
/// frozen page transfer, on the cores the transfer needs. The agent runs it at start, <c>migrate</c> while its
/// preflight runs; both are outside any freeze.
/// </remarks>
public static partial class PageWarmup
{
    /// <summary>Set to 0, the warm-up is skipped (for measuring what it saves).</summary>
    public const string SwitchVariable = "MIGRATE_PAGE_WARMUP";
    private const int Pages = 96;

    /// <summary>The dump's second run: small enough for the store's write buffer, while the first is written from where it is.</summary>
    private const int SmallRunPages = 8;
    private const ulong Vaddr = 0x7f00_0000_0000;

    /// <summary>
    /// Runs it (unless <see cref="SwitchVariable"/> is 0) and logs how it went. Never throws for a failure: only speed is
    /// at stake, and a migration's first pages then compile the path.
    /// </summary>
    public static async Task TryRunAsync(string parent, ILogger logger, CancellationToken ct)
    {
        if (Environment.GetEnvironmentVariable(SwitchVariable) == "0")
        {
            return;
        }

        try
        {
            var took = await RunAsync(parent, ct).ConfigureAwait(false);
            LogWarmedUp(logger, took.TotalMilliseconds);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidOperationException or OperationCanceledException
            or SocketException)
        {
            LogFailed(logger, ex.Message);
        }
    }

    /// <summary>Runs it in a scratch directory under <paramref name="parent"/>; returns how long it took.</summary>
    public static async Task<TimeSpan> RunAsync(string parent, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        Directory.CreateDirectory(parent);
        RemoveStale(parent);
        var dir = Path.Combine(parent, $".warmup-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            await OnceAsync(Path.Combine(dir, "raw"), new PageFrameWriterOptions(disableCompression: true), ct).ConfigureAwait(false);
            await OnceAsync(Path.Combine(dir, "lz4"), new PageFrameWriterOptions(), ct).ConfigureAwait(false);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        return Stopwatch.GetElapsedTime(started);
    }

    /// <summary>Scratch directories of warm-ups whose process is gone (killed half way).</summary>
    private static void RemoveStale(string parent)
    {
        foreach (var stale in Directory.EnumerateDirectories(parent, ".warmup-*"))
        {
            var parts = Path.GetFileName(stale).Split('-');
            if (parts.Length == 3 && int.TryParse(parts[1], out int pid) && pid != Environment.ProcessId && !Directory.Exists($"/proc/{pid}"))
            {
                try
                {
                    Directory.Delete(stale, recursive: true);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // Left for the next start: a few pages of scratch, never anything of a migration.
                }
            }
        }
    }

    private static async Task OnceAsync(string dir, PageFrameWriterOptions codec, CancellationToken ct)
    {
        using var attachment = new PageStoreAttachment(new PageStore(Path.Combine(dir, "store"), new PageStoreOptions { MaxBytes = 16 << 20 }));
        var (source, target) = Engine.Native.SocketPair.Connected();
        var receiving = PageStreamReceiver.RunAsync(new NetworkStream(target, ownsSocket: true), _ => attachment.Claim(), ct);
        var transport = await SourcePageTransport.OverAsync(new NetworkStream(source, ownsSocket: true), "warmup", NullLoggerFactory.Instance, codec)
            .ConfigureAwait(false);
        await using (transport.ConfigureAwait(false))
        {
            using (var criu = new NetworkStream(transport.TakeCriuConnection(), ownsSocket: true))
            {
                await PlayCriuDumpAsync(criu, ct).ConfigureAwait(false);
            }

            var sent = await transport.Completion.WaitAsync(ct).ConfigureAwait(false);
            var received = await receiving.WaitAsync(ct).ConfigureAwait(false);
            if (!received.Succeeded || received.Pages != Pages || sent.Pages != Pages)
            {
                throw new InvalidOperationException($"page path warm-up: {sent.Pages} pages sent, {received.Pages} received ({received.Error ?? "no error"})");
            }
        }

        var images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
        attachment.ComposeImages(images, ct);
    }

    /// <summary>As <c>criu dump --page-server</c> with ps-socket: OPEN2, two runs of mixed pages, FORCE_CLOSE, each answer awaited.</summary>
    private static async Task PlayCriuDumpAsync(NetworkStream criu, CancellationToken ct)
    {
        var task = new PageTarget(1, PageImageType.Pid);
        var message = new byte[PageServerIov.Size + (Pages * PageFacts.PageSize)];
        PageServerIov.Create(PageServerCommand.Open2, 0, 0, 0, task.DstId).Write(message);
        await criu.WriteAsync(message.AsMemory(0, PageServerIov.Size), ct).ConfigureAwait(false);
        await criu.ReadExactlyAsync(new byte[1], ct).ConfigureAwait(false);

        var data = message.AsSpan(PageServerIov.Size);
        for (int i = 0; i < Pages; i++)
        {
            // A third each: zero, text-like (compresses), random (does not).
            var page = data.Slice(i * PageFacts.PageSize, PageFacts.PageSize);
            if (i % 3 == 1)
            {
                page.Fill((byte)('a' + (i % 26)));
            }
            else if (i % 3 == 2)
            {
                Random.Shared.NextBytes(page);
            }
        }

        // Two runs, as a dump sends them: a large one and, past a gap, a small one.
        const int large = Pages - SmallRunPages;
        var header = new byte[PageServerIov.Size];
        PageServerIov.Create(PageServerCommand.AddF, PagemapFlags.Present, large, Vaddr, task.DstId).Write(header);
        await criu.WriteAsync(header, ct).ConfigureAwait(false);
        await criu.WriteAsync(message.AsMemory(PageServerIov.Size, large * PageFacts.PageSize), ct).ConfigureAwait(false);
        PageServerIov.Create(PageServerCommand.AddF, PagemapFlags.Present, SmallRunPages, Vaddr + (2UL * large * PageFacts.PageSize), task.DstId).Write(header);
        await criu.WriteAsync(header, ct).ConfigureAwait(false);
        await criu.WriteAsync(message.AsMemory(PageServerIov.Size + (large * PageFacts.PageSize)), ct).ConfigureAwait(false);
        PageServerIov.Create(PageServerCommand.ForceClose, 0, 0, 0, 0).Write(message);
        await criu.WriteAsync(message.AsMemory(0, PageServerIov.Size), ct).ConfigureAwait(false);
        await criu.ReadExactlyAsync(new byte[sizeof(int)], ct).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 960, Level = LogLevel.Debug, Message = "page path warmed up in {Ms:0} ms")]
    private static partial void LogWarmedUp(ILogger logger, double ms);

    [LoggerMessage(EventId = 961, Level = LogLevel.Warning, Message = "page path warm-up failed (migrations are not affected): {Message}")]
    private static partial void LogFailed(ILogger logger, string message);
}


namespace Migration.PageServer.Store;

/// <summary>
/// A migration's page store as the target engine sees it (<see cref="IIncomingPages"/>), taken by exactly one
/// page stream.
/// </summary>
public sealed class PageStoreAttachment(PageStore store) : IIncomingPages
{
    private int _claimed;
    private int _rounds;
    private volatile string? _error;

    public PageStore Store => store;

    /// <summary>What the migration's page stream has brought so far (the agent's GetMigration reports it).</summary>
    public Transport.PageStreamProgress Progress { get; } = new();

    /// <summary>Whether a page stream has claimed the store (before that, <see cref="Progress"/> is all zero).</summary>
    public bool Claimed => Volatile.Read(ref _claimed) != 0;

    public int RoundsCompleted => Volatile.Read(ref _rounds);

    public string? Error => _error;

    /// <summary>Hands the store to a page stream; a second stream for the same migration is refused.</summary>
    public Pages.IPageSink Claim()
    {
        if (Interlocked.Exchange(ref _claimed, 1) != 0)
        {
            throw new InvalidOperationException("this migration already has a page stream");
        }

        return new CountingSink(this);
    }

    public void Fail(string error) => _error ??= error;

    /// <summary>Tasks with less memory than this (1 MiB) get no room made: it would not pay for their file.</summary>
    public const long MinProvisionBytes = 1 << 20;

    public long Provision(IReadOnlyList<Engine.Processes.TaskMemory> tasks, long maxBytes, long deadline)
    {
        long total = Math.Max(0, maxBytes), left = total;
        foreach (var task in tasks.Where(t => t.Pid > 0).OrderByDescending(t => t.Bytes))
        {
            long bytes = (long)Math.Min(task.Bytes, (ulong)left);
            if (bytes < MinProvisionBytes || System.Diagnostics.Stopwatch.GetTimestamp() >= deadline)
            {
                break;
            }

            left -= store.Provision(new Pages.PageTarget((uint)task.Pid, Pages.PageImageType.Pid), bytes, deadline);
        }

        return total - left;
    }

    public void ComposeImages(string imagesDir, CancellationToken ct) => store.WriteImages(imagesDir, ct: ct);

    public void WriteParentImages(string parentDir, CancellationToken ct) => store.WriteParentImages(parentDir, ct);

    public async Task<string?> ServeLazyPagesAsync(System.Net.Sockets.Socket connection, CancellationToken ct)
    {
        var stream = new System.Net.Sockets.NetworkStream(connection, ownsSocket: true);
        await using (stream.ConfigureAwait(false))
        {
            var input = System.IO.Pipelines.PipeReader.Create(stream, new System.IO.Pipelines.StreamPipeReaderOptions(leaveOpen: true));
            var output = System.IO.Pipelines.PipeWriter.Create(stream, new System.IO.Pipelines.StreamPipeWriterOptions(leaveOpen: true));
            try
            {
                var result = await new Criu.CriuLazyPageServerSession(new Duplex(input, output), store).RunAsync(ct).ConfigureAwait(false);
                return result.IsCompleted ? null : result.Error ?? result.Outcome.ToString();
            }
            finally
            {
                await input.CompleteAsync().ConfigureAwait(false);
                try
                {
                    await output.CompleteAsync().ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or ObjectDisposedException)
                {
                    // The daemon is gone: nothing more can be told to it.
                }
            }
        }
    }

    public void Dispose() => store.Dispose();

    private sealed class Duplex(System.IO.Pipelines.PipeReader input, System.IO.Pipelines.PipeWriter output) : System.IO.Pipelines.IDuplexPipe
    {
        public System.IO.Pipelines.PipeReader Input { get; } = input;

        public System.IO.Pipelines.PipeWriter Output { get; } = output;
    }

    /// <summary>Counts completed rounds on their way through.</summary>
    private sealed class CountingSink(PageStoreAttachment owner) : Pages.IPageSink, Transport.IProgressReportingSink
    {
        public Transport.PageStreamProgress? Progress => owner.Progress;

        public ValueTask<bool> OpenAsync(Pages.PageTarget target, CancellationToken ct) => owner.Store.OpenAsync(target, ct);

        public ValueTask WritePagesAsync(Pages.PageTarget target, ulong vaddr, uint nrPages, Engine.Images.PagemapFlags flags,
            System.Buffers.ReadOnlySequence<byte> data, CancellationToken ct) => owner.Store.WritePagesAsync(target, vaddr, nrPages, flags, data, ct);

        public ValueTask WritePackedPagesAsync(Pages.PageTarget target, ulong vaddr, Engine.Images.PagemapFlags flags, Pages.PackedPages pages,
            CancellationToken ct) => owner.Store.WritePackedPagesAsync(target, vaddr, flags, pages, ct);

        public async ValueTask CompleteRoundAsync(CancellationToken ct)
        {
            await owner.Store.CompleteRoundAsync(ct).ConfigureAwait(false);
            Interlocked.Increment(ref owner._rounds);
        }
    }
}

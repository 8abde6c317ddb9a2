using Migration.Engine.Target;

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

    public void ComposeImages(string imagesDir, CancellationToken ct) => store.WriteImages(imagesDir, ct: ct);

    public void WriteParentImages(string parentDir, CancellationToken ct) => store.WriteParentImages(parentDir, ct);

    public void Dispose() => store.Dispose();

    /// <summary>Counts completed rounds on their way through.</summary>
    private sealed class CountingSink(PageStoreAttachment owner) : Pages.IPageSink
    {
        public ValueTask<bool> OpenAsync(Pages.PageTarget target, CancellationToken ct) => owner.Store.OpenAsync(target, ct);

        public ValueTask WritePagesAsync(Pages.PageTarget target, ulong vaddr, uint nrPages, Engine.Images.PagemapFlags flags,
            System.Buffers.ReadOnlySequence<byte> data, CancellationToken ct) => owner.Store.WritePagesAsync(target, vaddr, nrPages, flags, data, ct);

        public async ValueTask CompleteRoundAsync(CancellationToken ct)
        {
            await owner.Store.CompleteRoundAsync(ct).ConfigureAwait(false);
            Interlocked.Increment(ref owner._rounds);
        }
    }
}

namespace Migration.PageServer.Transport;

/// <summary>Totals of one page transfer (all rounds so far).</summary>
public sealed record PageTransferStats
{
    public ulong Pages { get; init; }
    public ulong ZeroPages { get; init; }

    /// <summary>Bytes of page data before compression (zero pages excluded).</summary>
    public ulong RawBytes { get; init; }

    /// <summary>Bytes that crossed the link (frames, compressed), TLS overhead excluded.</summary>
    public ulong WireBytes { get; init; }
    public int Rounds { get; init; }
    public TimeSpan Elapsed { get; init; }

    /// <summary>Page bytes (zero pages included) over wire bytes.</summary>
    public double CompressionRatio => WireBytes == 0 ? 1 : Pages * 4096.0 / WireBytes;

    /// <summary>Page bytes moved per second.</summary>
    public double BytesPerSecond => Elapsed.TotalSeconds <= 0 ? 0 : Pages * 4096.0 / Elapsed.TotalSeconds;
}

/// <summary>
/// Carries a dump's pages to the target while CRIU dumps: CRIU sends them on <see cref="TakeCriuConnection"/> (its
/// --page-server over an inherited socket), and the pages travel on the migration's page stream into the target's page
/// store. No page lands in a file on the source.
/// </summary>
public interface IPageTransport : IAsyncDisposable
{
    /// <summary>
    /// CRIU's end of the page-server connection: one end of a connected socket pair whose other end this transport
    /// serves. Once only; the caller hands it to CRIU's dump (<see cref="Engine.Criu.DumpSpec.PageServerConnection"/>), which
    /// closes it. If CRIU never gets it, disposing it is enough: the transport sees the peer gone.
    /// </summary>
    System.Net.Sockets.Socket TakeCriuConnection();

    /// <summary>
    /// Completes when CRIU's session ended and the target acknowledged every page as durable; throws with
    /// the reason when the session or the stream failed.
    /// </summary>
    Task<PageTransferStats> Completion { get; }

    /// <summary>Live totals, for progress displays.</summary>
    PageTransferStats Snapshot();

    // Pre-copy: rounds of pages the engine reads itself from the running tree, before CRIU's final dump.

    /// <summary>Opens a task's pagemap on the stream (once per task, before its first pages).</summary>
    ValueTask OpenTaskAsync(int vpid, CancellationToken ct);

    /// <summary>Sends whole pages of task <paramref name="vpid"/> from <paramref name="vaddr"/>.</summary>
    ValueTask SendPagesAsync(int vpid, ulong vaddr, ReadOnlyMemory<byte> pages, CancellationToken ct);

    /// <summary>
    /// Sends a run of pages the target keeps from the pre-copied (parent) image. Only in a round after the pre-copy
    /// rounds, once the target prepared its cutover.
    /// </summary>
    ValueTask SendParentAsync(int vpid, ulong vaddr, ulong nrPages, CancellationToken ct);

    /// <summary>Ends a pre-copy round; returns once the target acknowledged it.</summary>
    ValueTask CompleteRoundAsync(CancellationToken ct);

    /// <summary>
    /// Ends the transfer when CRIU sends no pages itself (a lazy final dump, whose pages the engine sent in its own
    /// last round): closes the page server and the stream; returns the totals (<see cref="Completion"/> completes too).
    /// </summary>
    Task<PageTransferStats> FinishWithoutCriuAsync(CancellationToken ct);

    /// <summary>From now on, pages of CRIU's dump that <paramref name="filter"/> calls clean are not sent again.</summary>
    void SetCutoverFilter(ICutoverFilter filter);
}

/// <summary>What the final dump need not send again: pages pre-copied and not written since.</summary>
public interface ICutoverFilter
{
    /// <summary>CRIU started sending pages: the tree is frozen. Take the final dirty set now.</summary>
    void OnFinalDumpStarted();

    /// <summary>Is the target's copy of this page current (sent, and not written since)?</summary>
    bool IsClean(int vpid, ulong vaddr);
}

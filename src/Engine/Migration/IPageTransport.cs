namespace Migration.Engine.Migration;

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
/// Carries a dump's pages to the target while CRIU dumps: CRIU connects to <see cref="Address"/>:<see cref="Port"/>
/// (its --page-server), and the pages travel on the migration's page stream into the target's page store.
/// No page lands in a file on the source.
/// </summary>
public interface IPageTransport : IAsyncDisposable
{
    /// <summary>Where CRIU sends pages (loopback only).</summary>
    string Address { get; }

    int Port { get; }

    /// <summary>
    /// Completes when CRIU's session ended and the target acknowledged every page as durable; throws with
    /// the reason when the session or the stream failed.
    /// </summary>
    Task<PageTransferStats> Completion { get; }

    /// <summary>Live totals, for progress displays.</summary>
    PageTransferStats Snapshot();
}

namespace Migration.PageServer.Streaming;

/// <summary>
/// What a <see cref="PageFrameWriter"/> sent. The page and batch counters cover PRESENT batches only (parent and
/// lazy runs carry no data): <see cref="RawBytes"/> is their pages * 4096, zero pages included; every batch is
/// either compressed or raw (an all-zero batch is raw, with an empty payload). <see cref="WireBytes"/> counts
/// every byte written, all frame kinds. Values add with <c>+</c>.
/// </summary>
public readonly record struct PageStreamStats(
    long Pages, long ZeroPages, long RawBytes, long WireBytes, long Batches, long CompressedBatches, long RawBatches)
{
    /// <summary>Raw page bytes per wire byte (1 when nothing was sent).</summary>
    public double CompressionRatio => WireBytes == 0 ? 1 : (double)RawBytes / WireBytes;

    public static PageStreamStats operator +(PageStreamStats a, PageStreamStats b) => new(
        a.Pages + b.Pages, a.ZeroPages + b.ZeroPages, a.RawBytes + b.RawBytes, a.WireBytes + b.WireBytes,
        a.Batches + b.Batches, a.CompressedBatches + b.CompressedBatches, a.RawBatches + b.RawBatches);
}

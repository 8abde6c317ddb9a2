using System.Buffers;
using System.Numerics;
using Migration.Engine.Images;

namespace Migration.PageServer.Pages;

/// <summary>
/// A run's pages as the page stream carries them: the non-zero pages back to back, in address order, and a bitmap
/// naming the zero pages (bit i, in byte i / 8 under mask 1 &lt;&lt; i % 8, set: page i is all zeros and not among the
/// non-zero pages). A sink that writes this form straight to a file needs neither the zero fill nor a scan for zeros.
/// </summary>
public readonly struct PackedPages
{
    private const int PageSize = PageFacts.PageSize;

    /// <summary>Checks that the bitmap and the non-zero bytes describe exactly <paramref name="nrPages"/> pages.</summary>
    public PackedPages(uint nrPages, ReadOnlyMemory<byte> zeroBitmap, ReadOnlyMemory<byte> nonZero)
    {
        if (nrPages == 0 || nrPages > int.MaxValue / PageSize)
        {
            throw new ArgumentOutOfRangeException(nameof(nrPages), $"{nrPages} pages: must be 1..{int.MaxValue / PageSize}");
        }

        int bitmapBytes = (int)((nrPages + 7) / 8);
        if (zeroBitmap.Length != bitmapBytes)
        {
            throw new ArgumentException($"{nrPages} pages take a bitmap of {bitmapBytes} bytes, got {zeroBitmap.Length}", nameof(zeroBitmap));
        }

        var bits = zeroBitmap.Span;
        if (nrPages % 8 != 0 && (bits[^1] >> (int)(nrPages % 8)) != 0)
        {
            throw new ArgumentException($"the bitmap of {nrPages} pages has bits set past the last page", nameof(zeroBitmap));
        }

        int zero = 0;
        foreach (byte b in bits)
        {
            zero += BitOperations.PopCount(b);
        }

        long expected = ((long)nrPages - zero) * PageSize;
        if (nonZero.Length != expected)
        {
            throw new ArgumentException($"{nrPages} pages of which {zero} are zero carry {expected} bytes, got {nonZero.Length}", nameof(nonZero));
        }

        NrPages = nrPages;
        ZeroPages = zero;
        ZeroBitmap = zeroBitmap;
        NonZero = nonZero;
    }

    /// <summary>Pages in the run, zero pages included.</summary>
    public uint NrPages { get; }

    /// <summary>How many of them are zero.</summary>
    public int ZeroPages { get; }

    public ReadOnlyMemory<byte> ZeroBitmap { get; }

    /// <summary>The non-zero pages, back to back, in address order.</summary>
    public ReadOnlyMemory<byte> NonZero { get; }

    /// <summary>The run's bytes when expanded: <see cref="NrPages"/> * 4096.</summary>
    public long Length => (long)NrPages * PageSize;

    /// <summary>
    /// The stretch of pages starting at <paramref name="page"/> that are all zero or all non-zero: its length, and
    /// whether it is zero. A walk by stretches visits each run of either kind once.
    /// </summary>
    public int Stretch(int page, out bool zero)
    {
        var bits = ZeroBitmap.Span;
        zero = (bits[page >> 3] & (1 << (page & 7))) != 0;
        int end = page + 1;
        while (end < NrPages && ((bits[end >> 3] & (1 << (end & 7))) != 0) == zero)
        {
            end++;
        }

        return end - page;
    }

    /// <summary>Writes the run as plain pages (zero pages as zeros) into <paramref name="destination"/>, exactly <see cref="Length"/> bytes.</summary>
    public void ExpandTo(Span<byte> destination)
    {
        if (destination.Length != Length)
        {
            throw new ArgumentException($"{NrPages} pages expand to {Length} bytes, the destination has {destination.Length}", nameof(destination));
        }

        var source = NonZero.Span;
        int k = 0;
        for (int i = 0; i < NrPages;)
        {
            int n = Stretch(i, out bool zero);
            var slot = destination.Slice(i * PageSize, n * PageSize);
            if (zero)
            {
                slot.Clear();
            }
            else
            {
                source.Slice(k * PageSize, n * PageSize).CopyTo(slot);
                k += n;
            }

            i += n;
        }
    }

    /// <summary>
    /// What a sink without a packed path does with a packed run: expands it into a pooled buffer and hands it to
    /// <see cref="IPageSink.WritePagesAsync"/>.
    /// </summary>
    public static async ValueTask WriteExpandedAsync(IPageSink sink, PageTarget target, ulong vaddr, PagemapFlags flags, PackedPages pages, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(sink);
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)pages.Length);
        try
        {
            pages.ExpandTo(buffer.AsSpan(0, (int)pages.Length));
            await sink.WritePagesAsync(target, vaddr, pages.NrPages, flags, new ReadOnlySequence<byte>(buffer, 0, (int)pages.Length), ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}

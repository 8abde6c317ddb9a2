using System.Buffers;
using Migration.Engine.Images;

namespace Migration.PageServer.Pages;

/// <summary>
/// Where pages go, in the order CRIU produces them: the source's stream to the target, or the target's
/// page store. One round is the pages of one dump (or pre-copy iteration); a round counts as delivered
/// only when <see cref="CompleteRoundAsync"/> returned (explicit acknowledgement, as CRIU's PS_IOV_CLOSE).
/// Calls for one sink are never concurrent.
/// </summary>
public interface IPageSink
{
    /// <summary>A destination image is opened (CRIU's OPEN2). Returns whether a parent image holds earlier pages.</summary>
    ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct);

    /// <summary>
    /// A run of <paramref name="nrPages"/> pages at <paramref name="vaddr"/>. With <see cref="PagemapFlags.Present"/>
    /// <paramref name="data"/> holds exactly nrPages * 4096 bytes, valid only during the call; otherwise it is empty
    /// (the pages are in a parent image, or lazy). A long CRIU run may arrive as several consecutive calls.
    /// </summary>
    ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct);

    /// <summary>
    /// A run of present pages in the page stream's form (<see cref="PackedPages"/>), otherwise as <see cref="WritePagesAsync"/>:
    /// <paramref name="pages"/> is valid only during the call. Sinks that can store this form without expanding it
    /// implement it; the default expands the run and calls <see cref="WritePagesAsync"/>.
    /// </summary>
    ValueTask WritePackedPagesAsync(PageTarget target, ulong vaddr, PagemapFlags flags, PackedPages pages, CancellationToken ct) =>
        PackedPages.WriteExpandedAsync(this, target, vaddr, flags, pages, ct);

    /// <summary>The round is complete; returns once every page of it is durable at its final destination.</summary>
    ValueTask CompleteRoundAsync(CancellationToken ct);
}

/// <summary>Where pages are read back (answering CRIU's PS_IOV_GET for lazy restore).</summary>
public interface IPageSource
{
    /// <summary>
    /// Copies up to <paramref name="nrPages"/> pages from <paramref name="vaddr"/> into <paramref name="destination"/>;
    /// returns how many consecutive pages from vaddr it holds (0 when it holds none of them).
    /// </summary>
    int ReadPages(PageTarget target, ulong vaddr, int nrPages, Span<byte> destination);
}

/// <summary>Page facts shared by the page-server code.</summary>
public static class PageFacts
{
    public const int PageSize = 4096;

    /// <summary>Highest user address accepted from a peer (57-bit virtual addresses, the largest x86_64 and arm64 use).</summary>
    public const ulong MaxUserAddress = 1UL << 57;

    /// <summary>Is [vaddr, vaddr + nrPages pages) a page-aligned, non-empty range of user addresses?</summary>
    public static bool IsValidRange(ulong vaddr, ulong nrPages) =>
        vaddr % PageSize == 0 && nrPages > 0 && vaddr < MaxUserAddress && nrPages <= (MaxUserAddress - vaddr) / PageSize;
}

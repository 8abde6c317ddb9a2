using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// Reads present pages of one target back by address (the serving side: lazy restore's PS_IOV_GET), from its data
/// file; pages that are consecutive in the data file are read with one pread. The caller holds the store's lock and
/// has written out the write buffer.
/// </summary>
internal static class PageReader
{
    private const int PageSize = PageFacts.PageSize;

    /// <summary>
    /// Copies the present pages from page <paramref name="first"/> on, up to <paramref name="nrPages"/>, into
    /// <paramref name="destination"/>, stopping at the first page <paramref name="t"/> does not hold present (absent,
    /// lazy or parent). Returns how many it copied.
    /// </summary>
    public static int Read(TargetData t, ulong first, int nrPages, Span<byte> destination)
    {
        int got = 0;
        long runStart = 0;
        int runPages = 0;
        for (; got < nrPages; got++)
        {
            var e = t.Index.Get(first + (ulong)got);
            if (e.Kind != PageKind.Present)
            {
                break;
            }

            if (runPages > 0 && e.DataPage == runStart + runPages)
            {
                runPages++;
                continue;
            }

            if (runPages > 0)
            {
                t.ReadData(runStart, destination.Slice((got - runPages) * PageSize, runPages * PageSize));
            }

            runStart = e.DataPage;
            runPages = 1;
        }

        if (runPages > 0)
        {
            t.ReadData(runStart, destination.Slice((got - runPages) * PageSize, runPages * PageSize));
        }

        return got;
    }
}

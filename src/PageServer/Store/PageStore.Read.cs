using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>The serving side: present pages read back by address (lazy restore's PS_IOV_GET).</summary>
public sealed partial class PageStore
{
    /// <summary>
    /// Copies the present pages from <paramref name="vaddr"/> on, up to <paramref name="nrPages"/>, into
    /// <paramref name="destination"/>, stopping at the first page the store does not hold present (absent, lazy or
    /// parent). Returns how many it copied: 0 for an unknown target or an address that is not a page-aligned user
    /// address. Safe from any thread at any time before <see cref="Dispose"/>, also while rounds are written and after
    /// <see cref="WriteImages"/> (a data file moved into place stays open); it sees every page whose write returned.
    /// Pages that are consecutive in the data file are read with one pread.
    /// </summary>
    public int ReadPages(PageTarget target, ulong vaddr, int nrPages, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(nrPages);
        if ((long)nrPages * PageSize > destination.Length)
        {
            throw new ArgumentException($"destination of {destination.Length} bytes cannot take {nrPages} pages", nameof(destination));
        }

        if (nrPages == 0 || !PageFacts.IsValidRange(vaddr, (ulong)nrPages))
        {
            return 0;
        }

        ulong first = vaddr / PageSize;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_targets.TryGetValue(target, out var t))
            {
                return 0;
            }

            if (_bufferTarget == t)
            {
                // Pages of this target may still be in the write buffer: write them out (not synced) and read the file.
                FlushBuffer();
            }

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
                    ReadData(t, runStart, destination.Slice((got - runPages) * PageSize, runPages * PageSize));
                }

                runStart = e.DataPage;
                runPages = 1;
            }

            if (runPages > 0)
            {
                ReadData(t, runStart, destination.Slice((got - runPages) * PageSize, runPages * PageSize));
            }

            return got;
        }
    }

    /// <summary>Reads <paramref name="into"/>.Length bytes of <paramref name="t"/>'s data file from data page <paramref name="dataPage"/>.</summary>
    private static void ReadData(TargetData t, long dataPage, Span<byte> into)
    {
        long offset = dataPage * PageSize;
        while (!into.IsEmpty)
        {
            int n = RandomAccess.Read(t.File.SafeFileHandle, into, offset);
            if (n == 0)
            {
                throw new IOException($"data file of {t.Target} ends at {offset} bytes; the store indexed pages beyond it (was it truncated?)");
            }

            into = into[n..];
            offset += n;
        }
    }
}

using Migration.Engine.Images.Pb;

namespace Migration.Engine.Images;

/// <summary>Flags of a pagemap entry (criu/include/pagemap.h).</summary>
[Flags]
public enum PagemapFlags : uint
{
    None = 0,
    Parent = 1,
    Lazy = 2,
    Present = 4,
}

/// <summary>One run of pages: <see cref="NrPages"/> pages from <see cref="Vaddr"/>.</summary>
public readonly record struct PagemapRun(ulong Vaddr, ulong NrPages, PagemapFlags Flags);

/// <summary>A <c>pagemap-PID.img</c>: the id of its pages file and the runs in address order.</summary>
public sealed record PagemapImage(uint PagesId, IReadOnlyList<PagemapRun> Runs)
{
    public const int PageSize = 4096;

    /// <summary>
    /// A lazy dump's own <c>pagemap-VPID.img</c> travels to the target under this prefix: it names the runs CRIU left
    /// lazy, which a lazy restore marks in the composed pagemap (<see cref="MarkLazy"/>).
    /// </summary>
    public const string LazyMapPrefix = "lazy-pagemap-";

    /// <summary>Highest user address on the 64-bit platforms CRIU supports (47-bit and 57-bit VA; take 57).</summary>
    public const ulong MaxUserAddress = 1UL << 57;

    /// <summary>More entries than this in one pagemap is not a real process.</summary>
    public const int MaxEntries = 1 << 22;

    public static PagemapImage Read(Stream s, string what)
    {
        ImageFile.ReadHeader(s, ImageFile.PagemapMagic, what);
        if (!ImageFile.TryReadEntry(s, PagemapHead.Parser, what, out var head))
        {
            throw new InvalidDataException($"{what}: no pagemap head");
        }

        var runs = new List<PagemapRun>();
        ulong previousEnd = 0;
        while (ImageFile.TryReadEntry(s, PagemapEntry.Parser, what, out var e))
        {
            if (runs.Count >= MaxEntries)
            {
                throw new InvalidDataException($"{what}: more than {MaxEntries} entries");
            }

            ulong nr = e.HasNrPages && e.NrPages != 0 ? e.NrPages : e.CompatNrPages;
            var flags = e.HasFlags ? (PagemapFlags)e.Flags : (e.InParent ? PagemapFlags.Parent : PagemapFlags.Present);
            Validate(e.Vaddr, nr, previousEnd, what);
            previousEnd = e.Vaddr + nr * PageSize;
            runs.Add(new PagemapRun(e.Vaddr, nr, flags));
        }

        return new PagemapImage(head.PagesId, runs);
    }

    public void Write(Stream s)
    {
        ImageFile.WriteHeader(s, ImageFile.PagemapMagic);
        ImageFile.WriteEntry(s, new PagemapHead { PagesId = PagesId });
        foreach (var r in Runs)
        {
            // compat_nr_pages is a required field for CRIU's decoder: 0, as CRIU writes it; nr_pages holds the count.
            ImageFile.WriteEntry(s, new PagemapEntry { Vaddr = r.Vaddr, CompatNrPages = 0, NrPages = r.NrPages, Flags = (uint)r.Flags });
        }
    }

    /// <summary>
    /// This image with the pages <paramref name="lazy"/> covers (the lazy runs of CRIU's own dump of the same task,
    /// ascending) marked for <c>criu lazy-pages</c>, runs split at the boundaries: present pages become PRESENT|LAZY
    /// (they keep their data in the pages file, so later offsets hold), parent pages become LAZY alone. The restore
    /// skips lazy pages; the daemon asks its page server for them. Parent pages cannot stay PARENT|LAZY: CRIU 4.2.1's
    /// daemon reads those from the local parent image without completing the fault (criu/pagemap.c read_parent_page
    /// has no io_complete), and the task hangs.
    /// </summary>
    public PagemapImage MarkLazy(IReadOnlyList<PagemapRun> lazy)
    {
        var runs = new List<PagemapRun>(Runs.Count + lazy.Count);
        int li = 0;
        foreach (var run in Runs)
        {
            ulong at = run.Vaddr, end = run.Vaddr + run.NrPages * PageSize;
            while (at < end)
            {
                while (li < lazy.Count && lazy[li].Vaddr + lazy[li].NrPages * PageSize <= at)
                {
                    li++;
                }

                ulong lazyStart = li < lazy.Count ? lazy[li].Vaddr : ulong.MaxValue;
                ulong lazyEnd = li < lazy.Count ? lazy[li].Vaddr + lazy[li].NrPages * PageSize : ulong.MaxValue;
                bool inside = at >= lazyStart;
                ulong stop = Math.Min(end, inside ? lazyEnd : lazyStart);
                var flags = !inside ? run.Flags : run.Flags switch
                {
                    PagemapFlags.Present or (PagemapFlags.Present | PagemapFlags.Lazy) => PagemapFlags.Present | PagemapFlags.Lazy,
                    PagemapFlags.Parent or (PagemapFlags.Parent | PagemapFlags.Lazy) or PagemapFlags.Lazy => PagemapFlags.Lazy,
                    _ => run.Flags,
                };
                if (runs.Count > 0 && runs[^1] is var last && last.Flags == flags && last.Vaddr + last.NrPages * PageSize == at)
                {
                    runs[^1] = last with { NrPages = last.NrPages + (stop - at) / PageSize };
                }
                else
                {
                    runs.Add(new PagemapRun(at, (stop - at) / PageSize, flags));
                }

                at = stop;
            }
        }

        return this with { Runs = runs };
    }

    /// <summary>This image without the pages in [<paramref name="start"/>, <paramref name="end"/>) (runs cut at the edges).</summary>
    public PagemapImage Without(ulong start, ulong end)
    {
        start &= ~(ulong)(PageSize - 1);
        end = (end + PageSize - 1) & ~(ulong)(PageSize - 1);
        var runs = new List<PagemapRun>(Runs.Count + 1);
        foreach (var r in Runs)
        {
            ulong rEnd = r.Vaddr + r.NrPages * PageSize;
            if (rEnd <= start || r.Vaddr >= end)
            {
                runs.Add(r);
                continue;
            }

            if (r.Vaddr < start)
            {
                runs.Add(r with { NrPages = (start - r.Vaddr) / PageSize });
            }

            if (rEnd > end)
            {
                runs.Add(new PagemapRun(end, (rEnd - end) / PageSize, r.Flags));
            }
        }

        return this with { Runs = runs };
    }

    /// <summary>Number of pages whose data is in this image's pages file.</summary>
    public ulong PresentPages => Runs.Where(r => r.Flags.HasFlag(PagemapFlags.Present)).Aggregate(0UL, (a, r) => a + r.NrPages);

    private static void Validate(ulong vaddr, ulong nr, ulong previousEnd, string what)
    {
        if (vaddr % PageSize != 0)
        {
            throw new InvalidDataException($"{what}: vaddr 0x{vaddr:x} is not page aligned");
        }

        if (nr == 0 || nr > MaxUserAddress / PageSize || vaddr >= MaxUserAddress || nr * PageSize > MaxUserAddress - vaddr)
        {
            throw new InvalidDataException($"{what}: run 0x{vaddr:x} + {nr} pages is outside the user address space");
        }

        if (vaddr < previousEnd)
        {
            throw new InvalidDataException($"{what}: run 0x{vaddr:x} overlaps or precedes the previous one");
        }
    }
}

namespace Migration.PageServer.Store;

/// <summary>What the store knows of one page address.</summary>
internal enum PageKind : byte
{
    None = 0,
    Present = 1,
    Lazy = 2,
    Parent = 3,
}

/// <summary>
/// One index slot: 0 for no entry, else the kind in the low 2 bits and, for a present page, the page's index in
/// its target's data file (byte offset / 4096) above them.
/// </summary>
internal readonly record struct PageEntry(long Raw)
{
    public static readonly PageEntry None = default;
    public static readonly PageEntry Lazy = new((long)PageKind.Lazy);
    public static readonly PageEntry Parent = new((long)PageKind.Parent);

    public PageKind Kind => (PageKind)(Raw & 3);

    /// <summary>Index of the page in the data file (present pages only).</summary>
    public long DataPage => Raw >> 2;

    public static PageEntry Present(long dataPage) => new((dataPage << 2) | (long)PageKind.Present);
}

/// <summary>
/// The page table of one target: page number (vaddr / 4096) to <see cref="PageEntry"/>. Two levels, as a CPU's:
/// a dictionary of chunks of <see cref="ChunkPages"/> consecutive pages, each a flat <c>long[]</c>.
/// </summary>
/// <remarks>
/// Why not one <c>Dictionary&lt;ulong, long&gt;</c> keyed by page: measured for 262144 pages (1 GiB) it takes
/// 8.7 MiB, 40-100 ms to fill and ~40 ms to walk in address order (keys copied and sorted). This table takes
/// 2.3 MiB (8 bytes a slot plus ~40 bytes per 64 pages, about 9 bytes a page when dense), 6-9 ms to fill and
/// 3-7 ms to walk in order (only the chunk keys are sorted). Runs stay in one chunk, so an update is one hash lookup
/// per chunk and then array stores; an overwrite is in place (newest wins with no extra structure).
/// Why not sorted extents plus an overwrite dictionary: rounds that overwrite, mark lazy or re-send ranges then
/// need splitting and a newest-wins merge of overlapping extents; the page table has none of that.
/// Worst case (one page in every chunk) is ~580 bytes a page, bounded by <see cref="PageStoreOptions.MaxPagesPerTarget"/>.
/// Not thread-safe: the store serializes access.
/// </remarks>
internal sealed class PageIndex
{
    /// <summary>64 pages (256 KiB of address space): small enough that sparse writes waste little, large enough that the chunk dictionary stays small.</summary>
    public const int ChunkShift = 6;
    public const int ChunkPages = 1 << ChunkShift;
    private const ulong SlotMask = ChunkPages - 1;

    /// <summary>
    /// Memory one chunk costs: its slots, the array header (24 bytes) and its dictionary entry and bucket (~28 bytes),
    /// rounded up. What <see cref="PageStoreOptions.MaxIndexBytes"/> counts.
    /// </summary>
    public const int ChunkBytes = (ChunkPages * sizeof(long)) + 56;

    private readonly Dictionary<ulong, long[]> _chunks = [];
    private ulong _lastKey = ulong.MaxValue;
    private long[]? _last;

    /// <summary>Pages with an entry.</summary>
    public long Count { get; private set; }

    /// <summary>Chunks allocated (each <see cref="ChunkBytes"/>).</summary>
    public int Chunks => _chunks.Count;

    public PageEntry Get(ulong page)
    {
        var chunk = Find(page >> ChunkShift);
        return chunk is null ? PageEntry.None : new PageEntry(chunk[page & SlotMask]);
    }

    /// <summary>Sets the entry of <paramref name="page"/>; returns what it was.</summary>
    public PageEntry Set(ulong page, PageEntry entry)
    {
        ulong key = page >> ChunkShift;
        var chunk = Find(key);
        if (chunk is null)
        {
            chunk = new long[ChunkPages];
            _chunks.Add(key, chunk);
            _lastKey = key;
            _last = chunk;
        }

        ref long slot = ref chunk[page & SlotMask];
        var previous = new PageEntry(slot);
        slot = entry.Raw;
        if (previous.Kind == PageKind.None)
        {
            Count++;
        }

        return previous;
    }

    /// <summary>
    /// How many of the <paramref name="count"/> pages from <paramref name="first"/> have no entry yet, and how many
    /// chunks setting them would allocate.
    /// </summary>
    public long CountMissing(ulong first, ulong count, out long newChunks)
    {
        long missing = 0;
        newChunks = 0;
        ulong page = first;
        ulong end = first + count;
        while (page < end)
        {
            ulong chunkEnd = Math.Min(end, ((page >> ChunkShift) + 1) << ChunkShift);
            var chunk = Find(page >> ChunkShift);
            if (chunk is null)
            {
                missing += (long)(chunkEnd - page);
                newChunks++;
            }
            else
            {
                for (; page < chunkEnd; page++)
                {
                    if (chunk[page & SlotMask] == 0)
                    {
                        missing++;
                    }
                }
            }

            page = chunkEnd;
        }

        return missing;
    }

    /// <summary>The chunks in ascending address order: (first page of the chunk, its slots).</summary>
    public KeyValuePair<ulong, long[]>[] OrderedChunks()
    {
        var ordered = new KeyValuePair<ulong, long[]>[_chunks.Count];
        int i = 0;
        foreach (var (key, slots) in _chunks)
        {
            ordered[i++] = new KeyValuePair<ulong, long[]>(key << ChunkShift, slots);
        }

        Array.Sort(ordered, static (a, b) => a.Key.CompareTo(b.Key));
        return ordered;
    }

    private long[]? Find(ulong key)
    {
        if (key == _lastKey)
        {
            return _last;
        }

        if (!_chunks.TryGetValue(key, out var chunk))
        {
            return null;
        }

        _lastKey = key;
        _last = chunk;
        return chunk;
    }
}

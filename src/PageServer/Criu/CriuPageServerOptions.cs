namespace Migration.PageServer.Criu;

/// <summary>Limits and timeouts of the CRIU page-server endpoints. Validated when a session or listener is created.</summary>
public sealed record CriuPageServerOptions
{
    /// <summary>
    /// 1 &lt;&lt; 22 pages (16 GiB) in one header. CRIU's runs are bounded by one VMA and by its page-pipe buffers, so a
    /// real run is far shorter (65536+ pages happen); a count above this is a corrupt or hostile header.
    /// </summary>
    public const ulong DefaultMaxPagesPerIov = 1UL << 22;

    /// <summary>256 pages (1 MiB): a present run is handed to the sink in pieces of at most this many pages.</summary>
    public const int DefaultChunkPages = 256;

    /// <summary>
    /// 1024 pages (4 MiB): the most pages answered to one GET. It is CRIU's own largest request (criu/uffd.c
    /// MAX_XFER_LEN, 4 MiB); larger requests get a shorter answer, which the lazy-pages daemon accepts.
    /// </summary>
    public const int DefaultMaxGetReplyPages = 1024;

    /// <summary>
    /// 131072 targets per session: a tree is at most 65536 tasks (Engine's ProcessTree.MaxTasks) plus as many shmem
    /// segments. Bounds the per-target state a peer can make us keep.
    /// </summary>
    public const int DefaultMaxTargets = 1 << 17;

    /// <summary>
    /// 60 s: CRIU connects to the page server at the start of the dump, after freezing and collecting the tree,
    /// which takes seconds even for large trees. Longer means it is not coming.
    /// </summary>
    public static readonly TimeSpan DefaultAcceptTimeout = TimeSpan.FromSeconds(60);

    public ulong MaxPagesPerIov { get; init; } = DefaultMaxPagesPerIov;

    public int ChunkPages { get; init; } = DefaultChunkPages;

    public int MaxGetReplyPages { get; init; } = DefaultMaxGetReplyPages;

    public int MaxTargets { get; init; } = DefaultMaxTargets;

    /// <summary>How long the listener waits for CRIU to connect.</summary>
    public TimeSpan AcceptTimeout { get; init; } = DefaultAcceptTimeout;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first option out of range.</summary>
    public CriuPageServerOptions Validate()
    {
        // The sink takes a run's count as uint.
        if (MaxPagesPerIov is 0 or > uint.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxPagesPerIov), MaxPagesPerIov, "must be 1 .. 2^32-1 pages");
        }

        // A chunk and a GET answer are single buffers: keep them well below 2 GiB.
        if (ChunkPages is < 1 or > 65536)
        {
            throw new ArgumentOutOfRangeException(nameof(ChunkPages), ChunkPages, "must be 1 .. 65536 pages");
        }

        if (MaxGetReplyPages is < 1 or > 65536)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxGetReplyPages), MaxGetReplyPages, "must be 1 .. 65536 pages");
        }

        if (MaxTargets < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxTargets), MaxTargets, "must be at least 1");
        }

        if (AcceptTimeout <= TimeSpan.Zero && AcceptTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(AcceptTimeout), AcceptTimeout, "must be positive or infinite");
        }

        return this;
    }
}

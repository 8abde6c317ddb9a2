using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// The target host's page store of one migration. It receives the pages of every round
/// (<see cref="IPageSink"/>), keeps the newest copy or mark of each page address, serves present pages back
/// (<see cref="IPageSource"/>, for lazy restore) and composes the <c>pagemap-*.img</c> and <c>pages-N.img</c>
/// images <c>criu restore</c> reads (<see cref="WriteImages"/>).
/// </summary>
/// <remarks>
/// <para>Layout: in its directory, one append-only data file per target (<c>pid-ID.data</c>, <c>shmem-ID.data</c>,
/// created with <see cref="FileMode.CreateNew"/>) holding every present page received in arrival order, and one
/// in-memory <see cref="PageIndex"/> per target mapping page address to the newest copy's place in that file (or to
/// a lazy or parent mark). Superseded copies stay in the file (append-only; counted in <see cref="PageStoreStats.BytesStored"/>)
/// until <see cref="Dispose"/> deletes the data files. Incoming pages are gathered into one write buffer per store
/// (<see cref="PageStoreOptions.WriteBufferBytes"/>) and appended with large writes; a run of at least
/// <see cref="DirectWriteBytes"/> is written from where it is, in pwritevs of at most 128 KiB, the first with what the buffer holds. On ext4 a
/// data file gets its disk space ahead of the writes (<see cref="FileSpace"/>: as much again as it holds, 1-64 MiB at a
/// time); holes are punched out of it, and what is left past the end is given back when the images are written.</para>
/// <para>Threads: the <see cref="IPageSink"/> calls come from one caller at a time (the interface's contract).
/// <see cref="ReadPages"/> and <see cref="Stats"/> may be called from any thread at any time, concurrently with
/// the sink calls and with each other: one lock serializes them (reads see every page whose
/// <see cref="WritePagesAsync"/> returned, including pages still in the write buffer). <see cref="CompleteRoundAsync"/>
/// syncs to disk outside that lock; <see cref="WriteImages"/> holds it throughout (reads wait for it).</para>
/// </remarks>
public sealed partial class PageStore : IPageSink, IPageSource, IDisposable
{
    /// <summary>
    /// First <c>pages_id</c> <see cref="WriteImages"/> numbers from: CRIU's standalone page server starts there too
    /// (criu/page-xfer.c), above the ids a dump numbers from 1, so the two never collide in one directory.
    /// </summary>
    public const uint DefaultFirstPagesId = 0x10000;

    /// <summary>Where <see cref="WriteParentImages"/> wrote the parent image, if it did.</summary>
    private string? _parentImageDir;

    private const int PageSize = PageFacts.PageSize;

    /// <summary>
    /// 256 KiB: a run this large (or the whole write buffer, when that is smaller) goes to the file from where it is,
    /// not through the buffer. A page stream's batches are up to 1 MiB, and CRIU's chunks about as large, so most
    /// pages are written without a copy; at this size one more system call costs far less than the copy would.
    /// </summary>
    internal const int DirectWriteBytes = 256 << 10;

    /// <summary>
    /// 16 pages (64 KiB): a stretch of zero pages at least this long in a large run is left as a hole in the data
    /// file instead of written. Shorter ones are written: on ext4 every hole splits the file's extents, and one zero
    /// page in three left as holes made a 1 GiB store take 2.4-3.0 s instead of 1.6-2.1 s (scripts/bench/pages.sh).
    /// </summary>
    internal const int MinHolePages = 16;

    private readonly Lock _gate = new();
    private readonly string _directory;
    private readonly PageStoreOptions _options;
    private readonly ILogger _logger;
    private readonly Dictionary<PageTarget, TargetData> _targets = [];
    private readonly byte[] _buffer;

    /// <summary>Whether data files get their space ahead of the writes (<see cref="FileSpace"/>); off for good once the filesystem refuses.</summary>
    private bool _preallocate;

    /// <summary>The memory one gathering write takes: the buffered bytes and a run's segments (reused: no allocation per write).</summary>
    private readonly List<ReadOnlyMemory<byte>> _gather = new(4);

    // The write buffer: _bufferLength bytes for _bufferTarget's data file, from file offset _bufferFileOffset.
    private TargetData? _bufferTarget;
    private long _bufferFileOffset;
    private int _bufferLength;

    private int _completedRounds;
    private long _pagesReceived;
    private long _pagesOverwritten;
    private long _bytesStored;
    private long _indexChunks;
    private bool _filesCreated;
    private bool _sealed;
    private bool _disposed;
    private Exception? _failure;

    /// <summary>
    /// A store writing only inside <paramref name="directory"/> (created if missing). Its data files are created
    /// there as targets appear and deleted by <see cref="Dispose"/>.
    /// </summary>
    public PageStore(string directory, PageStoreOptions? options = null, ILogger<PageStore>? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        _options = options ?? new PageStoreOptions();
        _options.Validate();
        _directory = Path.GetFullPath(directory);
        Directory.CreateDirectory(_directory);
        _logger = logger ?? NullLogger<PageStore>.Instance;
        _buffer = GC.AllocateUninitializedArray<byte>(_options.WriteBufferBytes);
        _preallocate = FileSpace.PaysOff(_directory);
    }

    /// <summary>Named points where tests inject a failure (garnet's ExceptionInjectionHelper): the hook throws.</summary>
    internal enum FaultPoint
    {
        /// <summary>In <see cref="WriteImages"/>, after a target's pages image was copied or moved into place.</summary>
        PagesWritten,

        /// <summary>In <see cref="WriteImages"/>, after a target's pagemap image was written.</summary>
        PagemapWritten,
    }

    /// <summary>Test hook called at each <see cref="FaultPoint"/>; null in production.</summary>
    internal Action<PageTarget, FaultPoint>? InjectFault { get; set; }

    /// <summary>The directory holding the data files.</summary>
    public string DataDirectory => _directory;

    public PageStoreOptions Options => _options;

    public PageStoreStats Stats
    {
        get
        {
            lock (_gate)
            {
                long live = 0;
                foreach (var t in _targets.Values)
                {
                    live += t.LivePages;
                }

                return new PageStoreStats(_targets.Count, _completedRounds, _pagesReceived, _pagesOverwritten, _bytesStored, live);
            }
        }
    }

    /// <summary>
    /// Registers <paramref name="target"/>. Opening a target the store already holds pages of starts a fresh layout
    /// for it, as CRIU's OPEN2 starts a fresh pagemap image over a parent: what was held becomes the parent, PARENT
    /// runs from now on take their pages from it, and a page the new layout does not mention is not in the images
    /// (it was unmapped or dropped since). Returns whether there is such a parent. Pre-copy relies on this: its
    /// rounds fill the store, then the final dump opens every target again and sends only what changed.
    /// </summary>
    public ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        lock (_gate)
        {
            ThrowIfNotWritable();
            if (_targets.TryGetValue(target, out var existing) && existing.Index.Count > 0)
            {
                existing.Parent = existing.Index;
                existing.Index = new PageIndex();
                existing.Ascending = false; // the data file now holds pages the new layout does not use
                existing.LivePages = 0;
                return ValueTask.FromResult(true);
            }

            GetOrAddTarget(target);
        }

        return ValueTask.FromResult(false);
    }

    /// <summary>Closes the data files and deletes them (not the images <see cref="WriteImages"/> wrote or moved).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var t in _targets.Values)
            {
                DeleteData(t);
            }

            DropProvisioned(report: false);
            _targets.Clear();
        }
    }

    private TargetData GetOrAddTarget(PageTarget target)
    {
        if (_targets.TryGetValue(target, out var t))
        {
            return t;
        }

        ThrowIfInvalid(target);

        t = TakeProvisioned(target);
        if (t is null)
        {
            if (_targets.Count >= _options.MaxTargets)
            {
                throw new PageStoreFullException(PageStoreLimit.Targets, target, _targets.Count + 1L, _options.MaxTargets);
            }

            t = TargetData.Create(target, _directory);
        }

        _targets.Add(target, t);
        _filesCreated = true;
        Log.TargetOpened(_logger, target.ToString(), t.DataPath!);
        return t;
    }

    private static void ThrowIfInvalid(PageTarget target)
    {
        if (target.Id == 0 || target.Type is not (PageImageType.Pid or PageImageType.Shmem))
        {
            throw new ArgumentException($"invalid page target (id {target.Id}, type {(byte)target.Type})", nameof(target));
        }
    }

    private void ThrowIfNotWritable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_failure is not null)
        {
            throw new InvalidOperationException($"page store in {_directory} failed earlier and takes no more pages: {_failure.Message}", _failure);
        }

        if (_sealed)
        {
            throw new InvalidOperationException($"page store in {_directory} already wrote its images; it takes no more pages");
        }
    }
}

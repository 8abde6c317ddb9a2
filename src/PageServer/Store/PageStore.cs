using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// The target host's page store of one migration. It receives the pages of every round
/// (<see cref="IPageSink"/>), keeps the newest copy or mark of each page address, serves present pages back
/// (<see cref="IPageSource"/>, for lazy restore) and composes the <c>pagemap-*.img</c> and <c>pages-N.img</c>
/// images <c>criu restore</c> reads (<see cref="WriteImages"/>). It owns the targets, the lock and the limits
/// (<see cref="PageStoreOptions"/>), and hands the work to its parts: <see cref="DataFileWriter"/> writes the runs,
/// <see cref="TargetData"/> keeps each target's layout, <see cref="PageReader"/> reads pages back,
/// <see cref="ImageComposer"/> writes the images and <see cref="TargetProvisioner"/> makes room ahead.
/// </summary>
/// <remarks>
/// <para>Layout: in its directory, one append-only data file per target (<c>pid-ID.data</c>, <c>shmem-ID.data</c>,
/// created with <see cref="FileMode.CreateNew"/>) holding every present page received in arrival order, and one
/// in-memory <see cref="PageIndex"/> per target mapping page address to the newest copy's place in that file (or to
/// a lazy or parent mark). Superseded copies stay in the file (append-only; counted in <see cref="PageStoreStats.BytesStored"/>)
/// until <see cref="Dispose"/> deletes the data files. Incoming pages are gathered into one write buffer per store
/// (<see cref="PageStoreOptions.WriteBufferBytes"/>) and appended with large writes; a run of at least
/// <see cref="DataFileWriter.DirectWriteBytes"/> is written from where it is, in pwritevs of at most 128 KiB, the first with what the buffer holds. On ext4 a
/// data file gets its disk space ahead of the writes (<see cref="Preallocator"/>: as much again as it holds, 1-64 MiB at a
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

    private const int PageSize = PageFacts.PageSize;

    private readonly Lock _gate = new();
    private readonly string _directory;
    private readonly PageStoreOptions _options;
    private readonly ILogger _logger;
    private readonly Dictionary<PageTarget, TargetData> _targets = [];
    private readonly DataFileWriter _writer;
    private readonly ImageComposer _composer;
    private readonly TargetProvisioner _provisioner;

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
        var space = new Preallocator(_directory);
        _writer = new DataFileWriter(_options.WriteBufferBytes, space, RecordFailure);
        _composer = new ImageComposer(_options, _logger);
        _provisioner = new TargetProvisioner(_directory, _options, space, _logger);
    }

    /// <summary>Test hook called at each <see cref="ImageComposer.FaultPoint"/> of <see cref="WriteImages"/>; null in production.</summary>
    internal Action<PageTarget, ImageComposer.FaultPoint>? InjectFault
    {
        get => _composer.InjectFault;
        set => _composer.InjectFault = value;
    }

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
            if (_targets.TryGetValue(target, out var existing) && existing.Reopen())
            {
                return ValueTask.FromResult(true);
            }

            GetOrAddTarget(target);
        }

        return ValueTask.FromResult(false);
    }

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

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_targets.TryGetValue(target, out var t))
            {
                return 0;
            }

            // Pages of this target may still be in the write buffer: write them out (not synced) and read the file.
            _writer.FlushFor(t);
            return PageReader.Read(t, vaddr / PageSize, nrPages, destination);
        }
    }

    /// <summary>
    /// Makes room for <paramref name="target"/>'s pages before they come (<see cref="TargetProvisioner"/> says why):
    /// creates its data file, allocates its first <paramref name="bytes"/> (rounded down to pages; on ext4,
    /// <see cref="FileSpace"/>) and fills them with zeros, in writes of <see cref="DataFileWriter.WriteChunkBytes"/>, until done or until
    /// <paramref name="deadline"/> (a <see cref="System.Diagnostics.Stopwatch"/> timestamp). Pages that come later for
    /// the target are written over those zeros into page-cache folios (and disk blocks) that exist already; long zero
    /// stretches are punched out as usual, and what the pages do not use is cut off when the images are written, or
    /// deleted with the store. Returns the bytes written (0 when nothing was: the store syncs to disk, it already
    /// holds the target, the target limit or half of <see cref="PageStoreOptions.MaxBytes"/> is reached, or a write
    /// failed, in which case the file is removed again). Call it before the page stream starts: it holds the store's
    /// lock throughout.
    /// </summary>
    public long Provision(PageTarget target, long bytes, long deadline)
    {
        ThrowIfInvalid(target);

        lock (_gate)
        {
            ThrowIfNotWritable();
            return _provisioner.Provision(target, bytes, deadline, _targets.ContainsKey(target), _targets.Count);
        }
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
                t.Delete(_logger);
            }

            _provisioner.Drop(report: false);
            _targets.Clear();
            try
            {
                Directory.Delete(_directory); // only if empty: files the store does not own stay, and so does it
            }
            catch (IOException)
            {
                // Not empty, or gone already.
            }
        }
    }

    private TargetData GetOrAddTarget(PageTarget target)
    {
        if (_targets.TryGetValue(target, out var t))
        {
            return t;
        }

        ThrowIfInvalid(target);

        t = _provisioner.Take(target);
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
        PageStoreLog.TargetOpened(_logger, target.ToString(), t.DataPath!);
        return t;
    }

    /// <summary>The targets in image order: tasks by pid, then shmem segments by id.</summary>
    private TargetData[] OrderedTargets() => [.. _targets.Values.OrderBy(t => t.Target.Type).ThenBy(t => t.Target.Id)];

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

    /// <summary>
    /// A write to or sync of a data file failed: what was indexed stays readable, but nothing more is accepted (the
    /// first failure is the one reported). Caller holds the lock.
    /// </summary>
    private void RecordFailure(Exception ex) => _failure ??= ex;
}

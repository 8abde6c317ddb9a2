using System.Buffers;
using System.Diagnostics;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>The receiving side: runs checked against the limits, handed to the writer and indexed; rounds made durable.</summary>
public sealed partial class PageStore
{
    /// <summary>
    /// Stores a run. Present pages (<see cref="PagemapFlags.Present"/>, with or without <see cref="PagemapFlags.Lazy"/>:
    /// the data is here) are appended to the target's data file; lazy and parent runs are recorded as marks. Either
    /// replaces whatever the store held for those addresses (the newest copy or mark wins). Limits are checked before
    /// anything is written: a run over one throws <see cref="PageStoreFullException"/> and leaves no trace.
    /// Completes synchronously (the appends go to the page cache; <see cref="CompleteRoundAsync"/> makes them durable).
    /// </summary>
    public ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct) =>
        Write(target, vaddr, nrPages, flags, new RunBytes(data), ct);

    /// <summary>
    /// Stores a present run as the page stream carries it, otherwise as <see cref="WritePagesAsync"/>: the non-zero
    /// pages are written from where they are, short stretches of zero pages from one shared block of zeros, and long
    /// ones (<see cref="DataFileWriter.MinHolePages"/>) left as holes; nothing is expanded, copied or scanned for zeros first.
    /// </summary>
    public ValueTask WritePackedPagesAsync(PageTarget target, ulong vaddr, PagemapFlags flags, PackedPages pages, CancellationToken ct)
    {
        if ((flags & PagemapFlags.Present) == 0)
        {
            throw new ArgumentException($"run 0x{vaddr:x} for {target} has flags {flags}: packed pages are present pages", nameof(flags));
        }

        return Write(target, vaddr, pages.NrPages, flags, new RunBytes(pages), ct);
    }

    /// <summary>
    /// Writes out the write buffer (the round's pages are then in the files, out of this process) and, with
    /// <see cref="PageStoreOptions.SyncToDisk"/>, syncs every data file written since the last round and, when files
    /// were created, the directory (an acknowledged round then survives a machine crash too). Counts the round.
    /// </summary>
    public ValueTask CompleteRoundAsync(CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        List<TargetData> dirty;
        bool syncDirectory;
        lock (_gate)
        {
            ThrowIfNotWritable();
            _writer.Flush();
            dirty = [.. _targets.Values.Where(t => t.Dirty)];
            syncDirectory = _filesCreated;
        }

        long start = Stopwatch.GetTimestamp();
        try
        {
            // Outside the lock: ReadPages need not wait for the disk. No sink call runs meanwhile (one caller at a time).
            if (_options.SyncToDisk)
            {
                foreach (var t in dirty)
                {
                    t.File.Flush(flushToDisk: true);
                }

                if (syncDirectory)
                {
                    DirectorySync.Flush(_directory);
                }
            }
        }
        catch (IOException ex)
        {
            lock (_gate)
            {
                RecordFailure(ex);
            }

            throw;
        }

        int round;
        lock (_gate)
        {
            foreach (var t in dirty)
            {
                t.Dirty = false;
            }

            if (syncDirectory)
            {
                _filesCreated = false;
            }

            round = ++_completedRounds;
        }

        PageStoreLog.RoundDurable(_logger, round, dirty.Count, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return ValueTask.CompletedTask;
    }

    private ValueTask Write(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, in RunBytes data, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        var kind = KindOf(flags, target, vaddr);
        if (!PageFacts.IsValidRange(vaddr, nrPages))
        {
            throw new ArgumentOutOfRangeException(nameof(vaddr), $"run 0x{vaddr:x} + {nrPages} pages for {target} is not a page-aligned, non-empty range of user addresses");
        }

        long bytes = kind == PageKind.Present ? (long)nrPages * PageSize : 0;
        if (data.Length != bytes)
        {
            throw new ArgumentException($"run 0x{vaddr:x} + {nrPages} pages ({flags}) for {target} carries {data.Length} bytes; expected {bytes}", nameof(data));
        }

        ulong first = vaddr / PageSize;
        lock (_gate)
        {
            ThrowIfNotWritable();
            _targets.TryGetValue(target, out var t);
            CheckLimits(target, t, first, nrPages, bytes);
            t ??= GetOrAddTarget(target);

            int chunksBefore = t.Index.Chunks;
            long overwritten;
            if (kind == PageKind.Present && t.TryPrefixSlot(first, nrPages, out long slot))
            {
                // A newer copy of pages whose current copy is in the ascending prefix: written over it, in place, so
                // the prefix stays a current pages image (pre-copy's later rounds; the parent image reads it).
                _writer.WriteAt(t, data, slot * PageSize);
                t.IndexInPlace(first, nrPages, slot);
                overwritten = nrPages;
            }
            else
            {
                long firstDataPage = t.DataPages;
                if (kind == PageKind.Present)
                {
                    _writer.Append(t, data);
                    t.Appended(vaddr, nrPages);
                    _bytesStored += bytes;
                }

                overwritten = t.IndexRun(first, nrPages, kind, firstDataPage);
            }

            _indexChunks += t.Index.Chunks - chunksBefore;
            _pagesReceived += nrPages;
            _pagesOverwritten += overwritten;
        }

        return ValueTask.CompletedTask;
    }

    private static PageKind KindOf(PagemapFlags flags, PageTarget target, ulong vaddr) => flags switch
    {
        PagemapFlags.Present or (PagemapFlags.Present | PagemapFlags.Lazy) => PageKind.Present,
        PagemapFlags.Lazy => PageKind.Lazy,
        PagemapFlags.Parent => PageKind.Parent,
        _ => throw new ArgumentException($"run 0x{vaddr:x} for {target} has flags 0x{(uint)flags:x}; expected present, lazy or parent", nameof(flags)),
    };

    /// <summary>Throws <see cref="PageStoreFullException"/> when the run would take the store over one of its limits.</summary>
    private void CheckLimits(PageTarget target, TargetData? t, ulong first, uint nrPages, long bytes)
    {
        if (t is null && _targets.Count >= _options.MaxTargets)
        {
            throw new PageStoreFullException(PageStoreLimit.Targets, target, _targets.Count + 1L, _options.MaxTargets);
        }

        long held = t?.Index.Count ?? 0;
        if (nrPages > _options.MaxPagesPerTarget)
        {
            throw new PageStoreFullException(PageStoreLimit.PagesPerTarget, target, held + nrPages, _options.MaxPagesPerTarget);
        }

        long added, newChunks;
        if (t is null)
        {
            added = nrPages;
            newChunks = (long)(((first + nrPages - 1) >> PageIndex.ChunkShift) - (first >> PageIndex.ChunkShift) + 1);
        }
        else
        {
            added = t.Index.CountMissing(first, nrPages, out newChunks);
        }

        if (held + added > _options.MaxPagesPerTarget)
        {
            throw new PageStoreFullException(PageStoreLimit.PagesPerTarget, target, held + added, _options.MaxPagesPerTarget);
        }

        long indexBytes = (_indexChunks + newChunks) * PageIndex.ChunkBytes;
        if (indexBytes > _options.MaxIndexBytes)
        {
            throw new PageStoreFullException(PageStoreLimit.IndexBytes, target, indexBytes, _options.MaxIndexBytes);
        }

        if (bytes > _options.MaxBytes - _bytesStored)
        {
            throw new PageStoreFullException(PageStoreLimit.Bytes, target, _bytesStored + bytes, _options.MaxBytes);
        }
    }
}

using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>The receiving side: runs into the data files and the index, rounds made durable.</summary>
public sealed partial class PageStore
{
    /// <summary>Preallocation steps (<see cref="Reserve"/>): as much again as the data file holds, within these bounds.</summary>
    internal const long MinPreallocateBytes = 1 << 20;

    internal const long MaxPreallocateBytes = 64 << 20;

    /// <summary>Pieces one gathering write takes at most (well below IOV_MAX, 1024).</summary>
    private const int MaxGather = 256;

    /// <summary>
    /// Bytes one write of a run taken from where it is takes at most: 128 KiB. The kernel sizes the page-cache folios it allocates by
    /// the write, and on this kind of VM (free pages handed back to the host) large folios come from memory the host
    /// must fault in again: writing 700 MiB into a new file after 2 s of quiet took 1.05-1.81 s in 1 MiB pwritevs and
    /// 0.27-0.29 s in 128 KiB ones, the same bytes from the same 4 KiB pieces (a C loop, 2 runs each, alternating).
    /// </summary>
    internal const int WriteChunkBytes = 128 << 10;

    // The gathering write being built: _gatherBytes bytes in _gather, for the data file from offset _gatherOffset.
    private long _gatherOffset;
    private long _gatherBytes;

    /// <summary>Zeros for the short zero stretches of packed runs: <see cref="MinHolePages"/> pages, the longest one not left as a hole.</summary>
    private static readonly byte[] ZeroBlock = new byte[MinHolePages * PageSize];

    /// <summary>A present run's bytes as they came: plain, or packed (<see cref="PackedPages"/>).</summary>
    private readonly struct RunBytes
    {
        public RunBytes(ReadOnlySequence<byte> plain)
        {
            Plain = plain;
            Length = plain.Length;
        }

        public RunBytes(PackedPages packed)
        {
            Packed = packed;
            IsPacked = true;
            Length = packed.Length;
        }

        public ReadOnlySequence<byte> Plain { get; }

        public PackedPages Packed { get; }

        public bool IsPacked { get; }

        /// <summary>The run's bytes as stored (zero pages included).</summary>
        public long Length { get; }
    }

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
    /// ones (<see cref="MinHolePages"/>) left as holes; nothing is expanded, copied or scanned for zeros first.
    /// </summary>
    public ValueTask WritePackedPagesAsync(PageTarget target, ulong vaddr, PagemapFlags flags, PackedPages pages, CancellationToken ct)
    {
        if ((flags & PagemapFlags.Present) == 0)
        {
            throw new ArgumentException($"run 0x{vaddr:x} for {target} has flags {flags}: packed pages are present pages", nameof(flags));
        }

        return Write(target, vaddr, pages.NrPages, flags, new RunBytes(pages), ct);
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

            long firstDataPage = t.DataPages;
            if (kind == PageKind.Present && TryPrefixSlot(t, first, nrPages, out long slot))
            {
                // A newer copy of pages whose current copy is in the ascending prefix: written over it, in place, so
                // the prefix stays a current pages image (pre-copy's later rounds; the parent image reads it).
                FlushBuffer();
                WriteAt(t, data, slot * PageSize);
                int chunksBefore = t.Index.Chunks;
                for (uint i = 0; i < nrPages; i++)
                {
                    if (t.Index.Set(first + i, PageEntry.Present(slot + i)).Kind == PageKind.None)
                    {
                        t.LivePages++;
                    }
                }

                _indexChunks += t.Index.Chunks - chunksBefore;
                _pagesReceived += nrPages;
                _pagesOverwritten += nrPages;
                t.Dirty = true;
                return ValueTask.CompletedTask;
            }

            if (kind == PageKind.Present)
            {
                Append(t, data);
                if (t.DataPages > 0 && first <= t.LastAppendedPage)
                {
                    t.Ascending = false;
                }

                if (t.Ascending && !t.HasParentImage)
                {
                    // Still in address order: the data file's prefix grows, as a ready-made pages image.
                    if (t.PrefixRuns.Count > 0 && t.PrefixRuns[^1] is var last && last.Vaddr + last.NrPages * PageSize == vaddr)
                    {
                        t.PrefixRuns[^1] = last with { NrPages = last.NrPages + nrPages };
                    }
                    else
                    {
                        t.PrefixRuns.Add(new PagemapRun(vaddr, nrPages, PagemapFlags.Present));
                    }

                    t.PrefixPages += nrPages;
                }

                t.DataPages += nrPages;
                t.LastAppendedPage = first + nrPages - 1;
                t.LivePages += nrPages;
                _bytesStored += bytes;
            }

            UpdateIndex(t, first, nrPages, kind, firstDataPage);
            _pagesReceived += nrPages;
        }

        return ValueTask.CompletedTask;
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
            FlushBuffer();
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
                _failure ??= ex;
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

        Log.RoundDurable(_logger, round, dirty.Count, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return ValueTask.CompletedTask;
    }

    private static PageKind KindOf(PagemapFlags flags, PageTarget target, ulong vaddr) => flags switch
    {
        PagemapFlags.Present or (PagemapFlags.Present | PagemapFlags.Lazy) => PageKind.Present,
        PagemapFlags.Lazy => PageKind.Lazy,
        PagemapFlags.Parent => PageKind.Parent,
        _ => throw new ArgumentException($"run 0x{vaddr:x} for {target} has flags 0x{(uint)flags:x}; expected present, lazy or parent", nameof(flags)),
    };

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

    private void UpdateIndex(TargetData t, ulong first, uint nrPages, PageKind kind, long firstDataPage)
    {
        int chunksBefore = t.Index.Chunks;
        long overwritten = 0;
        long dead = 0;
        if (kind == PageKind.Parent && t.Parent is { } parent)
        {
            // Every page of a PARENT run must be in the parent layout; check all before changing anything.
            for (uint i = 0; i < nrPages; i++)
            {
                if (parent.Get(first + i).Kind != PageKind.Present)
                {
                    throw new InvalidOperationException($"{t.Target}: PARENT page 0x{(first + i) * PageSize:x} has no earlier copy in the store");
                }
            }
        }

        for (uint i = 0; i < nrPages; i++)
        {
            var entry = kind switch
            {
                PageKind.Present => PageEntry.Present(firstDataPage + i),
                PageKind.Lazy => PageEntry.Lazy,
                _ when t.Parent is { } p => p.Get(first + i),
                _ => PageEntry.Parent,
            };
            var previous = t.Index.Set(first + i, entry);
            if (previous.Kind != PageKind.None)
            {
                overwritten++;
                if (previous.Kind == PageKind.Present)
                {
                    dead++;
                }
            }
        }

        t.DeadPages += dead;
        t.LivePages -= dead;
        if (kind == PageKind.Parent && t.Parent is not null)
        {
            t.LivePages += nrPages; // resolved to the parent's copies, which the new layout now uses
        }

        _pagesOverwritten += overwritten;
        _indexChunks += t.Index.Chunks - chunksBefore;
    }

    /// <summary>
    /// Whether every page of the run has its current copy (in the current layout, or after a re-open in the parent
    /// layout) in the ascending prefix, at consecutive data pages; <paramref name="slot"/> is the first one.
    /// </summary>
    private static bool TryPrefixSlot(TargetData t, ulong first, uint nrPages, out long slot)
    {
        slot = -1;
        for (uint i = 0; i < nrPages; i++)
        {
            var e = t.Index.Get(first + i);
            if (e.Kind != PageKind.Present && t.Parent is { } parent)
            {
                e = parent.Get(first + i);
            }

            if (e.Kind != PageKind.Present || e.DataPage >= t.PrefixPages || (i > 0 && e.DataPage != slot + i))
            {
                return false;
            }

            if (i == 0)
            {
                slot = e.DataPage;
            }
        }

        return nrPages > 0;
    }

    /// <summary>Writes the run's bytes at <paramref name="offset"/> of <paramref name="t"/>'s data file.</summary>
    private void WriteAt(TargetData t, in RunBytes data, long offset)
    {
        if (data.IsPacked)
        {
            // In place: every zero page is written (a hole cannot be left where an older copy lies).
            BeginRun(t, offset);
            GatherPacked(t, data.Packed, offset, holes: false);
            EndRun(t);
            return;
        }

        foreach (var segment in data.Plain)
        {
            RandomAccess.Write(t.File.SafeFileHandle, segment.Span, offset);
            offset += segment.Length;
        }
    }

    /// <summary>
    /// Appends the run's bytes at the end of <paramref name="t"/>'s data (the caller advances <see cref="TargetData.DataPages"/>).
    /// Small runs are gathered in the write buffer; a run of at least <see cref="DirectWriteBytes"/> is written from
    /// where it is, in gathering writes that start with whatever the buffer holds before it (copying it would cost more
    /// than the system call it could save), leaving long stretches of zero pages as holes.
    /// </summary>
    private void Append(TargetData t, in RunBytes data)
    {
        long offset = t.DataPages * PageSize;
        if (_bufferLength > 0 && _bufferTarget != t)
        {
            FlushBuffer();
        }

        if (_bufferLength == 0)
        {
            _bufferTarget = t;
            _bufferFileOffset = offset;
        }

        if (data.Length < Math.Min(DirectWriteBytes, _buffer.Length))
        {
            if (data.IsPacked)
            {
                AppendPackedToBuffer(data.Packed);
            }
            else
            {
                foreach (var segment in data.Plain)
                {
                    AppendToBuffer(segment.Span);
                }
            }

            return;
        }

        long runOffset = _bufferFileOffset + _bufferLength;
        BeginRun(t, runOffset);
        if (data.IsPacked)
        {
            GatherPacked(t, data.Packed, runOffset, holes: true);
        }
        else if (data.Plain.IsSingleSegment)
        {
            GatherSparse(t, data.Plain.First, runOffset);
        }
        else
        {
            foreach (var segment in data.Plain)
            {
                Gather(t, segment);
            }
        }

        EndRun(t);
        _bufferFileOffset = runOffset + data.Length;
    }

    /// <summary>Copies <paramref name="span"/> into the write buffer, writing the buffer out whenever it is full.</summary>
    private void AppendToBuffer(ReadOnlySpan<byte> span)
    {
        while (!span.IsEmpty)
        {
            int n = Math.Min(span.Length, _buffer.Length - _bufferLength);
            span[..n].CopyTo(_buffer.AsSpan(_bufferLength));
            _bufferLength += n;
            span = span[n..];
            if (_bufferLength == _buffer.Length)
            {
                FlushBuffer();
            }
        }
    }

    /// <summary>Expands a small packed run into the write buffer.</summary>
    private void AppendPackedToBuffer(in PackedPages pages)
    {
        var nonZero = pages.NonZero.Span;
        int k = 0;
        for (int i = 0; i < pages.NrPages;)
        {
            int n = pages.Stretch(i, out bool zero);
            if (zero)
            {
                for (int left = n * PageSize; left > 0; left -= ZeroBlock.Length)
                {
                    AppendToBuffer(ZeroBlock.AsSpan(0, Math.Min(left, ZeroBlock.Length)));
                }
            }
            else
            {
                AppendToBuffer(nonZero.Slice(k * PageSize, n * PageSize));
                k += n;
            }

            i += n;
        }
    }

    /// <summary>
    /// Starts the gathering writes of a run at <paramref name="runOffset"/> (<see cref="Gather"/>, <see cref="SkipHole"/>,
    /// <see cref="EndRun"/>): the buffered bytes go first when they directly precede it; otherwise the buffer is written out.
    /// </summary>
    private void BeginRun(TargetData t, long runOffset)
    {
        _gather.Clear();
        _gatherBytes = 0;
        if (_bufferLength > 0 && _bufferTarget == t && _bufferFileOffset + _bufferLength == runOffset)
        {
            _gatherOffset = _bufferFileOffset;
            Gather(t, _buffer.AsMemory(0, _bufferLength));
        }
        else
        {
            FlushBuffer();
            _gatherOffset = runOffset;
        }
    }

    /// <summary>Writes what is still gathered; the buffer, whose bytes went first, is empty after.</summary>
    private void EndRun(TargetData t)
    {
        FlushGather(t);
        _bufferLength = 0;
    }

    /// <summary>
    /// A packed run's pieces, in order: non-zero stretches from where they are, zero stretches from <see cref="ZeroBlock"/>,
    /// and with <paramref name="holes"/> every stretch of at least <see cref="MinHolePages"/> zero pages left as a hole.
    /// </summary>
    private void GatherPacked(TargetData t, in PackedPages pages, long runOffset, bool holes)
    {
        long position = runOffset;
        int k = 0;
        for (int i = 0; i < pages.NrPages;)
        {
            int n = pages.Stretch(i, out bool zero);
            long bytes = (long)n * PageSize;
            if (zero && holes && n >= MinHolePages)
            {
                SkipHole(t, position, bytes);
            }
            else if (zero)
            {
                for (long left = bytes; left > 0; left -= ZeroBlock.Length)
                {
                    Gather(t, ZeroBlock.AsMemory(0, (int)Math.Min(left, ZeroBlock.Length)));
                }
            }
            else
            {
                Gather(t, pages.NonZero.Slice(k * PageSize, (int)bytes));
                k += n;
            }

            position += bytes;
            i += n;
        }
    }

    /// <summary>
    /// A plain run's pieces, in order, leaving each stretch of at least <see cref="MinHolePages"/> all-zero pages as a
    /// hole (it reads back as zeros and takes neither page cache nor disk); shorter ones are written with the data around them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // per run, loops over every page
    private void GatherSparse(TargetData t, ReadOnlyMemory<byte> run, long runOffset)
    {
        var span = run.Span;
        int n = span.Length / PageSize;
        int written = 0; // pages of the run before this are gathered, or left as a hole
        int zeroStart = -1;
        for (int i = 0; i <= n; i++)
        {
            bool zero = i < n && !span.Slice(i * PageSize, PageSize).ContainsAnyExcept((byte)0);
            if (zero)
            {
                if (zeroStart < 0)
                {
                    zeroStart = i;
                }

                continue;
            }

            if (zeroStart >= 0 && i - zeroStart >= MinHolePages)
            {
                // [written, zeroStart) is data (with zero stretches too short to skip); [zeroStart, i) stays a hole.
                Gather(t, run[(written * PageSize)..(zeroStart * PageSize)]);
                SkipHole(t, runOffset + ((long)zeroStart * PageSize), (long)(i - zeroStart) * PageSize);
                written = i;
            }

            zeroStart = -1;
        }

        Gather(t, run[(written * PageSize)..]);
    }

    /// <summary>
    /// Adds <paramref name="piece"/> to the gathering write at <see cref="_gatherOffset"/>, writing it out (and going on
    /// right after it) whenever it reaches <see cref="WriteChunkBytes"/> or <see cref="MaxGather"/> pieces.
    /// </summary>
    private void Gather(TargetData t, ReadOnlyMemory<byte> piece)
    {
        while (!piece.IsEmpty)
        {
            int n = (int)Math.Min(piece.Length, WriteChunkBytes - _gatherBytes);
            _gather.Add(piece[..n]);
            _gatherBytes += n;
            piece = piece[n..];
            if (_gatherBytes == WriteChunkBytes || _gather.Count >= MaxGather)
            {
                FlushGather(t);
            }
        }
    }

    /// <summary>Writes what <see cref="_gather"/> holds at <see cref="_gatherOffset"/>, if anything, and moves the offset past it.</summary>
    private void FlushGather(TargetData t)
    {
        if (_gather.Count > 0)
        {
            WriteData(t, _gather, _gatherBytes, _gatherOffset);
        }

        _gatherOffset += _gatherBytes;
        _gatherBytes = 0;
    }

    /// <summary>
    /// Leaves [<paramref name="offset"/>, + <paramref name="length"/>) of the run being written as a hole: what is
    /// gathered before it is written, the file is extended over it (a run may end in a hole: reads and the pages image
    /// rely on the length), and space preallocated there is given back, so a hole takes no disk (after the extension:
    /// ext4 punches nothing past the end of a file).
    /// </summary>
    private void SkipHole(TargetData t, long offset, long length)
    {
        FlushGather(t);
        long end = offset + length;
        try
        {
            if (RandomAccess.GetLength(t.File.SafeFileHandle) < end)
            {
                RandomAccess.SetLength(t.File.SafeFileHandle, end);
                t.Dirty = true;
            }
        }
        catch (Exception ex) when (IsWriteFailure(ex))
        {
            throw;
        }

        if (offset < t.Allocated)
        {
            // A refusal only leaves the hole's preallocated blocks allocated until the file goes: they read as zeros all the same.
            _ = FileSpace.TryPunch(t.File.SafeFileHandle, offset, Math.Min(length, t.Allocated - offset));
        }

        _gatherOffset = end;
    }

    /// <summary>Writes the buffered bytes to their data file (no sync). Caller holds the lock.</summary>
    private void FlushBuffer()
    {
        if (_bufferLength == 0)
        {
            return;
        }

        WriteData(_bufferTarget!, _buffer.AsSpan(0, _bufferLength), _bufferFileOffset);
        _bufferFileOffset += _bufferLength;
        _bufferLength = 0;
    }

    /// <summary>Writes the <paramref name="bytes"/> bytes of <paramref name="gather"/> at <paramref name="offset"/> with one pwritev (the list is empty after).</summary>
    private void WriteData(TargetData t, List<ReadOnlyMemory<byte>> gather, long bytes, long offset)
    {
        try
        {
            Reserve(t, offset, offset + bytes);
            RandomAccess.Write(t.File.SafeFileHandle, gather, offset);
            t.Dirty = true;
        }
        catch (Exception ex) when (IsWriteFailure(ex))
        {
            throw;
        }
        finally
        {
            gather.Clear();
        }
    }

    private void WriteData(TargetData t, ReadOnlySpan<byte> bytes, long offset)
    {
        try
        {
            Reserve(t, offset, offset + bytes.Length);
            RandomAccess.Write(t.File.SafeFileHandle, bytes, offset);
            t.Dirty = true;
        }
        catch (Exception ex) when (IsWriteFailure(ex))
        {
            throw;
        }
    }

    /// <summary>
    /// Before a write of [<paramref name="offset"/>, <paramref name="end"/>) in <paramref name="t"/>'s data file: where preallocation pays
    /// (<see cref="FileSpace"/>), makes sure the space up to there is allocated, taking as much again as the file holds
    /// (at least <see cref="MinPreallocateBytes"/>, at most <see cref="MaxPreallocateBytes"/>) so that a growing file asks
    /// rarely and a small one takes little. A refusal (disk full, not supported) only ends preallocation: the write
    /// itself then says whether the space is there.
    /// </summary>
    private void Reserve(TargetData t, long offset, long end)
    {
        if (!_preallocate || end <= t.Allocated)
        {
            return;
        }

        // Never before the write: what lies between is a hole (nothing was written there) and stays one.
        long from = Math.Max(t.Allocated, offset);
        long to = Math.Max(end, from + Math.Clamp(from, MinPreallocateBytes, MaxPreallocateBytes));
        if (FileSpace.TryAllocate(t.File.SafeFileHandle, from, to - from))
        {
            t.Allocated = to;
        }
        else
        {
            _preallocate = false;
        }
    }

    /// <summary>
    /// Gives back what <paramref name="t"/>'s data file holds past its pages: space preallocated past its end, and the
    /// zeros <see cref="Provision"/> wrote that no page took (cutting the file to its pages' length does both).
    /// </summary>
    private static void ReleaseReserve(TargetData t)
    {
        long end = t.DataPages * PageSize;
        if (t.Allocated > end || RandomAccess.GetLength(t.File.SafeFileHandle) > end)
        {
            RandomAccess.SetLength(t.File.SafeFileHandle, end);
        }

        t.Allocated = 0;
    }

    /// <summary>
    /// Exception filter for a failed write to a data file: records it (what was indexed stays readable, in the file or
    /// still in the buffer; nothing more is accepted) and lets it propagate.
    /// </summary>
    private bool IsWriteFailure(Exception ex)
    {
        if (ex is not (IOException or UnauthorizedAccessException))
        {
            return false;
        }

        _failure ??= ex;
        return true;
    }
}

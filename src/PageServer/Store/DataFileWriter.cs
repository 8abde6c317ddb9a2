using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// Writes the present runs into the targets' data files: appends at the end of a file (gathered in one write buffer
/// per store, or written from where they are when large, long zero stretches left as holes) and rewrites in place.
/// One per store, for all its targets; the caller holds the store's lock.
/// </summary>
/// <remarks>
/// Incoming pages are gathered into one write buffer (<see cref="PageStoreOptions.WriteBufferBytes"/>) and appended
/// with large writes; a run of at least <see cref="DirectWriteBytes"/> is written from where it is, in pwritevs of at
/// most <see cref="WriteChunkBytes"/>, the first with what the buffer holds. Before each write the data file gets its
/// disk space ahead (<see cref="Preallocator"/>); holes are punched out of that space.
/// A write that fails is reported to the store (it then takes no more pages) and propagates.
/// </remarks>
internal sealed partial class DataFileWriter
{
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

    /// <summary>
    /// Bytes one write of a run taken from where it is takes at most: 128 KiB. The kernel sizes the page-cache folios it allocates by
    /// the write, and on this kind of VM (free pages handed back to the host) large folios come from memory the host
    /// must fault in again: writing 700 MiB into a new file after 2 s of quiet took 1.05-1.81 s in 1 MiB pwritevs and
    /// 0.27-0.29 s in 128 KiB ones, the same bytes from the same 4 KiB pieces (a C loop, 2 runs each, alternating).
    /// </summary>
    internal const int WriteChunkBytes = 128 << 10;

    /// <summary>Zeros for the short zero stretches of packed runs: <see cref="MinHolePages"/> pages, the longest one not left as a hole.</summary>
    internal static readonly byte[] ZeroBlock = new byte[MinHolePages * PageSize];

    private const int PageSize = PageFacts.PageSize;

    private readonly byte[] _buffer;
    private readonly Preallocator _space;
    private readonly Action<Exception> _failed;

    // The write buffer: _bufferLength bytes for _bufferTarget's data file, from file offset _bufferFileOffset.
    private TargetData? _bufferTarget;
    private long _bufferFileOffset;
    private int _bufferLength;

    /// <param name="bufferBytes">The write buffer's size (<see cref="PageStoreOptions.WriteBufferBytes"/>).</param>
    /// <param name="space">Preallocation of the data files.</param>
    /// <param name="failed">Told of a failed write (an <see cref="IOException"/> or <see cref="UnauthorizedAccessException"/>) before it propagates.</param>
    public DataFileWriter(int bufferBytes, Preallocator space, Action<Exception> failed)
    {
        _buffer = GC.AllocateUninitializedArray<byte>(bufferBytes);
        _space = space;
        _failed = failed;
    }

    /// <summary>
    /// Appends the run's bytes at the end of <paramref name="t"/>'s data (the caller then counts them with
    /// <see cref="TargetData.Appended"/>). Small runs are gathered in the write buffer; a run of at least
    /// <see cref="DirectWriteBytes"/> is written from where it is, in gathering writes that start with whatever the
    /// buffer holds before it (copying it would cost more than the system call it could save), leaving long stretches
    /// of zero pages as holes.
    /// </summary>
    public void Append(TargetData t, in RunBytes data)
    {
        long offset = t.DataPages * PageSize;
        if (_bufferLength > 0 && _bufferTarget != t)
        {
            Flush();
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

    /// <summary>
    /// Writes the run's bytes at <paramref name="offset"/> of <paramref name="t"/>'s data file, over the copies there
    /// (the write buffer is written out first).
    /// </summary>
    public void WriteAt(TargetData t, in RunBytes data, long offset)
    {
        Flush();
        if (data.IsPacked)
        {
            // In place: every zero page is written (a hole cannot be left where an older copy lies).
            BeginRun(t, offset);
            GatherPacked(t, data.Packed, offset, holes: false);
            EndRun(t);
        }
        else
        {
            foreach (var segment in data.Plain)
            {
                RandomAccess.Write(t.File.SafeFileHandle, segment.Span, offset);
                offset += segment.Length;
            }
        }

        t.Dirty = true;
    }

    /// <summary>Writes out the buffer if it may hold pages of <paramref name="t"/> (before its data file is read).</summary>
    public void FlushFor(TargetData t)
    {
        if (_bufferTarget == t)
        {
            Flush();
        }
    }

    /// <summary>Writes the buffered bytes to their data file (no sync).</summary>
    public void Flush()
    {
        if (_bufferLength == 0)
        {
            return;
        }

        WriteData(_bufferTarget!, _buffer.AsSpan(0, _bufferLength), _bufferFileOffset);
        _bufferFileOffset += _bufferLength;
        _bufferLength = 0;
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
                Flush();
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

    /// <summary>Writes the <paramref name="bytes"/> bytes of <paramref name="gather"/> at <paramref name="offset"/> with one pwritev (the list is empty after).</summary>
    private void WriteData(TargetData t, List<ReadOnlyMemory<byte>> gather, long bytes, long offset)
    {
        try
        {
            _space.Reserve(t, offset, offset + bytes);
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
            _space.Reserve(t, offset, offset + bytes.Length);
            RandomAccess.Write(t.File.SafeFileHandle, bytes, offset);
            t.Dirty = true;
        }
        catch (Exception ex) when (IsWriteFailure(ex))
        {
            throw;
        }
    }

    /// <summary>
    /// Exception filter for a failed write to a data file: reports it (what was indexed stays readable, in the file or
    /// still in the buffer; the store accepts nothing more) and lets it propagate.
    /// </summary>
    private bool IsWriteFailure(Exception ex)
    {
        if (ex is not (IOException or UnauthorizedAccessException))
        {
            return false;
        }

        _failed(ex);
        return true;
    }
}

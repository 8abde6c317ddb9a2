using System.Runtime.CompilerServices;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>The gathering writes of a large run: its pieces from where they are, its long zero stretches left as holes.</summary>
internal sealed partial class DataFileWriter
{
    /// <summary>Pieces one gathering write takes at most (well below IOV_MAX, 1024).</summary>
    private const int MaxGather = 256;

    /// <summary>The memory one gathering write takes: the buffered bytes and a run's segments (reused: no allocation per write).</summary>
    private readonly List<ReadOnlyMemory<byte>> _gather = new(4);

    // The gathering write being built: _gatherBytes bytes in _gather, for the data file from offset _gatherOffset.
    private long _gatherOffset;
    private long _gatherBytes;

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
            Flush();
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
}

using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// Copies data pages of one target, in the order given, into a pages image: consecutive data pages are read with
/// one pread into the copy buffer, and the buffer is written out whenever full (large sequential writes).
/// </summary>
internal sealed class PageCopier
{
    private const int PageSize = PageFacts.PageSize;

    private readonly TargetData _from;
    private readonly FileStream _to;
    private readonly Memory<byte> _buffer;
    private int _filled;
    private long _written;
    private long _segmentStart;
    private int _segmentPages;

    /// <param name="buffer">A whole number of pages.</param>
    public PageCopier(TargetData from, FileStream to, Memory<byte> buffer)
    {
        _from = from;
        _to = to;
        _buffer = buffer;
    }

    /// <summary>Appends data page <paramref name="dataPage"/> of the source to the image.</summary>
    public void Add(long dataPage)
    {
        if (_segmentPages > 0 && dataPage == _segmentStart + _segmentPages && _filled + ((_segmentPages + 1) * PageSize) <= _buffer.Length)
        {
            _segmentPages++;
            return;
        }

        ReadSegment();
        _segmentStart = dataPage;
        _segmentPages = 1;
    }

    /// <summary>Copies what is pending.</summary>
    public void Finish()
    {
        ReadSegment();
        WriteOut();
    }

    private void ReadSegment()
    {
        if (_segmentPages == 0)
        {
            return;
        }

        _from.ReadData(_segmentStart, _buffer.Span.Slice(_filled, _segmentPages * PageSize));
        _filled += _segmentPages * PageSize;
        _segmentPages = 0;
        if (_filled + PageSize > _buffer.Length)
        {
            WriteOut();
        }
    }

    private void WriteOut()
    {
        if (_filled == 0)
        {
            return;
        }

        RandomAccess.Write(_to.SafeFileHandle, _buffer.Span[.._filled], _written);
        _written += _filled;
        _filled = 0;
    }
}

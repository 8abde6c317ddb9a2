namespace Migration.PageServer.Streaming;

/// <summary>Why a page stream frame was refused. Every one is the peer's fault (or the wire's).</summary>
public enum PageStreamErrorCode
{
    None = 0,

    /// <summary>The first four bytes are not <see cref="PageStreamProtocol.Magic"/>: not this protocol, or lost framing.</summary>
    BadMagic,

    /// <summary>Header length other than <see cref="PageStreamProtocol.HeaderLength"/>.</summary>
    BadHeaderLength,

    /// <summary>A reserved field is not zero.</summary>
    ReservedNotZero,

    UnknownKind,

    /// <summary>A body length outside what its kind allows (checked before waiting for the body).</summary>
    BadBodyLength,

    /// <summary>A target with an unknown type or id 0.</summary>
    BadTarget,

    /// <summary>Flags with unknown bits or a combination CRIU does not write.</summary>
    BadFlags,

    /// <summary>nr_pages 0 or above the limit for its kind of run.</summary>
    BadPageCount,

    /// <summary>vaddr + nr_pages is not a page-aligned user address range.</summary>
    BadRange,

    /// <summary>Zero-page bitmap bits set beyond nr_pages.</summary>
    BitmapPadding,

    UnknownEncoding,

    /// <summary>The declared lengths disagree with each other, with the bitmap or with the body length.</summary>
    LengthMismatch,

    /// <summary>The LZ4 payload is malformed or expands to other than the declared length.</summary>
    BadCompressedData,

    ChecksumMismatch,

    /// <summary>A HELLO id or ERROR message that is not valid UTF-8 or is empty where it must not be.</summary>
    BadText,

    /// <summary>The connection ended inside a frame.</summary>
    TruncatedStream,
}

/// <summary>
/// A refused frame: the code and a message naming the offending value. The codec returns these (the data plane
/// reports outcomes); a connection that gives up turns one into a <see cref="PageStreamException"/>.
/// </summary>
public readonly record struct PageStreamError(PageStreamErrorCode Code, string Message)
{
    private readonly string? _message = Message;

    /// <summary>What was wrong, naming the value; empty for <see cref="None"/>.</summary>
    public string Message
    {
        get => _message ?? "";
        init => _message = value;
    }

    public static PageStreamError None => default;

    public bool IsError => Code != PageStreamErrorCode.None;

    /// <summary>For a connection that ended with bytes of an unfinished frame still buffered.</summary>
    public static PageStreamError Truncated(long leftoverBytes) =>
        new(PageStreamErrorCode.TruncatedStream, $"page stream ended inside a frame ({leftoverBytes} bytes of an incomplete frame)");

    public PageStreamException ToException() => new(this);

    public override string ToString() => $"{Code}: {Message}";
}

/// <summary>A page stream format error at an API boundary (completing a pipe, failing a migration).</summary>
public sealed class PageStreamException(PageStreamError error) : Exception($"page stream: {error.Message}")
{
    public PageStreamError Error { get; } = error;
}

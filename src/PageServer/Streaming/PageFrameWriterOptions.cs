namespace Migration.PageServer.Streaming;

/// <summary>Options of a <see cref="PageFrameWriter"/>.</summary>
public sealed record PageFrameWriterOptions
{
    /// <summary>Send every batch raw (zero pages are still elided): for a link faster than LZ4 or for debugging.</summary>
    public bool DisableCompression { get; }

    public PageFrameWriterOptions(bool disableCompression = false)
    {
        DisableCompression = disableCompression;
    }

    public static PageFrameWriterOptions Default { get; } = new();
}

namespace Migration.PageServer.Streaming;

/// <summary>Options of a <see cref="PageFrameWriter"/>.</summary>
public sealed record PageFrameWriterOptions
{
    /// <summary>
    /// LZ4 acceleration, 1..<see cref="Lz4.MaxAcceleration"/>. 1 is LZ4's default fast mode, its best ratio: about
    /// 400 MB/s of text-like pages per core (zero and incompressible pages go many times faster). Raise it only
    /// when the sender's CPU rather than the link is the bottleneck: larger values trade ratio for speed.
    /// </summary>
    public int Lz4Acceleration { get; }

    /// <summary>Send every batch raw (zero pages are still elided): for a link faster than LZ4 or for debugging.</summary>
    public bool DisableCompression { get; }

    public PageFrameWriterOptions(int lz4Acceleration = Lz4.DefaultAcceleration, bool disableCompression = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(lz4Acceleration, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(lz4Acceleration, Lz4.MaxAcceleration);
        Lz4Acceleration = lz4Acceleration;
        DisableCompression = disableCompression;
    }

    public static PageFrameWriterOptions Default { get; } = new();
}

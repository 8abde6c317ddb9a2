using System.Buffers;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>A present run's bytes as they came: plain, or packed (<see cref="PackedPages"/>).</summary>
internal readonly struct RunBytes
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

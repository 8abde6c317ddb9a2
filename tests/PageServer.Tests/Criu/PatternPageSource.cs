using Migration.PageServer.Pages;

namespace Migration.PageServer.Tests.Criu;

/// <summary>
/// A fake <see cref="IPageSource"/> holding pattern pages (<see cref="CriuWire.FillPattern"/>) for every pid, or only
/// where <see cref="HoldsOnly"/> says so. Records reads and checks each against the source contract.
/// </summary>
public sealed class PatternPageSource(int maxPages) : IPageSource
{
    public List<(PageTarget Target, ulong Vaddr, int NrPages)> Reads { get; } = [];

    public List<string> Violations { get; } = [];

    /// <summary>Which pages are held; null: all of them.</summary>
    public Func<PageTarget, ulong, bool>? HoldsOnly { get; init; }

    /// <summary>Throw on every read (fault injection).</summary>
    public Exception? Fault { get; init; }

    /// <summary>Answer this count instead of the real one (a broken source).</summary>
    public int? Lie { get; init; }

    public int ReadPages(PageTarget target, ulong vaddr, int nrPages, Span<byte> destination)
    {
        Reads.Add((target, vaddr, nrPages));
        if (target.Type != PageImageType.Pid)
        {
            Violations.Add($"read for {target}, not a pid");
        }

        if (nrPages < 1 || nrPages > maxPages || !PageFacts.IsValidRange(vaddr, (ulong)nrPages))
        {
            Violations.Add($"read of 0x{vaddr:x} x{nrPages}");
        }

        if (destination.Length != nrPages * PageFacts.PageSize)
        {
            Violations.Add($"read of {nrPages} pages into {destination.Length} bytes");
            return 0;
        }

        if (Fault is not null)
        {
            throw Fault;
        }

        int held = 0;
        while (held < nrPages && (HoldsOnly?.Invoke(target, vaddr + ((ulong)held * PageFacts.PageSize)) ?? true))
        {
            held++;
        }

        CriuWire.FillPattern(vaddr, destination[..(held * PageFacts.PageSize)]);
        return Lie ?? held;
    }
}

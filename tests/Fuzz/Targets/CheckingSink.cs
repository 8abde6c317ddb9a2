using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.Fuzz.Targets;

/// <summary>
/// A page sink that holds nothing and checks every call against <see cref="IPageSink"/>'s contract; the first broken
/// rule is kept in <see cref="Violation"/>. Targets with an even id have a parent image.
/// </summary>
internal sealed class CheckingSink(bool parentsChecked) : IPageSink
{
    public string? Violation { get; private set; }

    public bool Completed { get; private set; }

    /// <summary>Rounds completed (the page stream acknowledges each).</summary>
    public int Rounds { get; private set; }

    /// <summary>Whether the sink takes no call after a completed round (the CRIU session's single round).</summary>
    public bool SingleRound { get; init; } = true;

    public ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct)
    {
        Check(!(SingleRound && Completed), $"OPEN {target} after the round completed");
        return ValueTask.FromResult(target.Id % 2 == 0);
    }

    public ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct)
    {
        Check(!(SingleRound && Completed), "pages after the round completed");
        Check(nrPages > 0 && PageFacts.IsValidRange(vaddr, nrPages), $"range 0x{vaddr:x} + {nrPages}");
        Check(flags is PagemapFlags.Present or (PagemapFlags.Present | PagemapFlags.Lazy) or PagemapFlags.Lazy or PagemapFlags.Parent, $"flags {flags}");
        long expected = (flags & PagemapFlags.Present) != 0 ? (long)nrPages * PageFacts.PageSize : 0;
        Check(data.Length == expected, $"{data.Length} bytes for {nrPages} {flags} pages");
        Check(!parentsChecked || (flags & PagemapFlags.Parent) == 0 || target.Id % 2 == 0, $"a parent hole for {target}, which has no parent");
        return ValueTask.CompletedTask;
    }

    public ValueTask CompleteRoundAsync(CancellationToken ct)
    {
        Check(!(SingleRound && Completed), "the round completed twice");
        Completed = true;
        Rounds++;
        return ValueTask.CompletedTask;
    }

    private void Check(bool ok, string what)
    {
        if (!ok)
        {
            Violation ??= what;
        }
    }
}

using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Tests.Criu;

/// <summary>One call the session made to the sink. DataLength is the page bytes handed over (0 for header-only runs).</summary>
public readonly record struct SinkCall(string Kind, PageTarget Target, ulong Vaddr, uint NrPages, PagemapFlags Flags, long DataLength)
{
    public static SinkCall Open(PageTarget target) => new("open", target, 0, 0, PagemapFlags.None, 0);

    public static SinkCall Write(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags) =>
        new("write", target, vaddr, nrPages, flags, (flags & PagemapFlags.Present) != 0 ? (long)nrPages * PageFacts.PageSize : 0);

    public static SinkCall Complete { get; } = new("complete", default, 0, 0, PagemapFlags.None, 0);

    public override string ToString() => Kind switch
    {
        "write" => $"write {Target} 0x{Vaddr:x} x{NrPages} {Flags} ({DataLength} bytes)",
        "open" => $"open {Target}",
        _ => Kind,
    };
}

/// <summary>
/// A fake <see cref="IPageSink"/> that records every call, checks each one against the sink contract (collecting
/// violations instead of throwing, so a bug in the session cannot hide behind a "sink failed" outcome), can keep or
/// inspect page data, and can fail at a chosen call (fault injection).
/// </summary>
public sealed class RecordingPageSink(int maxChunkPages = CriuPageServerOptions.DefaultChunkPages) : IPageSink
{
    private readonly HashSet<PageTarget> _opened = [];
    private bool _completed;

    public List<SinkCall> Calls { get; } = [];

    /// <summary>Contract violations seen (invalid range, wrong data length, call after completion, ...).</summary>
    public List<string> Violations { get; } = [];

    /// <summary>What OpenAsync answers for a target.</summary>
    public Func<PageTarget, bool> HasParent { get; init; } = _ => false;

    /// <summary>Copy every present page into <see cref="Pages"/>.</summary>
    public bool KeepPages { get; init; }

    /// <summary>Present pages kept, by target and page address.</summary>
    public Dictionary<(PageTarget Target, ulong Vaddr), byte[]> Pages { get; } = [];

    /// <summary>Called with every present chunk while its data is valid.</summary>
    public Action<PageTarget, ulong, uint, ReadOnlySequence<byte>>? OnPresent { get; init; }

    /// <summary>0-based index of the call that throws <see cref="InjectedFault"/>; -1 for none.</summary>
    public int FailAtCall { get; init; } = -1;

    public ValueTask<bool> OpenAsync(PageTarget target, CancellationToken ct)
    {
        Record(SinkCall.Open(target));
        if (!_opened.Add(target))
        {
            Violations.Add($"{target} opened twice");
        }

        return ValueTask.FromResult(HasParent(target));
    }

    public ValueTask WritePagesAsync(PageTarget target, ulong vaddr, uint nrPages, PagemapFlags flags, ReadOnlySequence<byte> data, CancellationToken ct)
    {
        Record(new SinkCall("write", target, vaddr, nrPages, flags, data.Length));
        if (!PageFacts.IsValidRange(vaddr, nrPages))
        {
            Violations.Add($"invalid range 0x{vaddr:x} x{nrPages}");
        }

        if (!_opened.Contains(target))
        {
            Violations.Add($"write for {target}, never opened");
        }

        if ((flags & PagemapFlags.Present) != 0)
        {
            if (data.Length != (long)nrPages * PageFacts.PageSize)
            {
                Violations.Add($"present write of {nrPages} pages with {data.Length} bytes");
            }

            if (nrPages > maxChunkPages)
            {
                Violations.Add($"present write of {nrPages} pages, more than a chunk of {maxChunkPages}");
            }

            OnPresent?.Invoke(target, vaddr, nrPages, data);
            if (KeepPages)
            {
                for (uint i = 0; i < nrPages; i++)
                {
                    Pages[(target, vaddr + ((ulong)i * PageFacts.PageSize))] = data.Slice((long)i * PageFacts.PageSize, PageFacts.PageSize).ToArray();
                }
            }
        }
        else if (!data.IsEmpty)
        {
            Violations.Add($"{flags} write with {data.Length} bytes of data");
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask CompleteRoundAsync(CancellationToken ct)
    {
        Record(SinkCall.Complete);
        _completed = true;
        return ValueTask.CompletedTask;
    }

    public long PresentPages(PageTarget target) =>
        Calls.Where(c => c.Kind == "write" && c.Target == target && (c.Flags & PagemapFlags.Present) != 0).Sum(c => (long)c.NrPages);

    private void Record(SinkCall call)
    {
        if (_completed)
        {
            Violations.Add($"{call} after the round completed");
        }

        int index = Calls.Count;
        Calls.Add(call);
        if (index == FailAtCall)
        {
            throw new InjectedFault($"injected fault at sink call {index} ({call})");
        }
    }
}

public sealed class InjectedFault(string message) : Exception(message);

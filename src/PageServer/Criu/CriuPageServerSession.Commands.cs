using System.Buffers;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Criu;

/// <summary>The commands of the receiving direction: each checks its header completely before it calls the sink.</summary>
public sealed partial class CriuPageServerSession
{
    /// <summary>Handles one header; null to go on, a result to end the session.</summary>
    private protected override ValueTask<PageServerResult?> HandleAsync(PageServerIov iov, long bytesAfter, CancellationToken ct)
    {
        ushort command = iov.Command;
        string name = PageServerCommand.Name(command);
        switch (command)
        {
            case PageServerCommand.Open or PageServerCommand.Open2 or PageServerCommand.Parent or PageServerCommand.Add
                or PageServerCommand.Hole or PageServerCommand.Close or PageServerCommand.ForceClose when iov.FlagBits != 0:
                return Stop(Violation($"flags 0x{iov.FlagBits:x} on {name} (cmd 0x{iov.Cmd:x8}); only ADD_F carries flags"));
            case PageServerCommand.Open or PageServerCommand.Open2:
                return OpenAsync(iov, ct);
            case PageServerCommand.Parent:
                return ParentAsync(iov, ct);
            case PageServerCommand.Add or PageServerCommand.Hole or PageServerCommand.AddF:
                return BeginRunAsync(iov, ct);
            case PageServerCommand.Close or PageServerCommand.ForceClose:
                return CloseAsync(iov, bytesAfter, ct);
            case PageServerCommand.Get:
                return Stop(Violation($"GET ({iov}) to a receiving page server: only the lazy page server answers GET"));
            default:
                return Stop(UnknownCommand(iov));
        }
    }

    private async ValueTask<PageServerResult?> OpenAsync(PageServerIov iov, CancellationToken ct)
    {
        string name = PageServerCommand.Name(iov.Command);
        if (!TryTarget(iov, name, out var target, out var bad))
        {
            return bad;
        }

        if (iov.NrPages != 0 || iov.Vaddr != 0)
        {
            return Violation($"{name} for {target} with nr_pages {iov.NrPages} and vaddr 0x{iov.Vaddr:x}; it carries only dst_id");
        }

        if (_targets.ContainsKey(target))
        {
            return Violation($"{name} for {target} a second time in one session; CRIU opens each pagemap once per dump");
        }

        if (_targets.Count >= Options.MaxTargets)
        {
            return Violation($"{name} for {target} beyond the limit of {Options.MaxTargets} targets per session");
        }

        bool hasParent;
        try
        {
            hasParent = await _sink.OpenAsync(target, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!IsOwnCancellation(ex, ct))
        {
            return SinkFailed(ex, $"opening {target}");
        }

        var state = new TargetState(target, hasParent);
        _targets.Add(target, state);
        _current = state;
        Logger.TargetOpened(Name, target, hasParent);

        if (iov.Command == PageServerCommand.Open)
        {
            return null; // legacy OPEN has no answer
        }

        var span = Output.GetSpan(1);
        span[0] = hasParent ? (byte)1 : (byte)0;
        Advance(1);
        return await FlushAsync("the OPEN2 answer", ct).ConfigureAwait(false);
    }

    private async ValueTask<PageServerResult?> ParentAsync(PageServerIov iov, CancellationToken ct)
    {
        if (!TryTarget(iov, "PARENT", out var target, out var bad))
        {
            return bad;
        }

        if (iov.NrPages != 0 || iov.Vaddr != 0)
        {
            return Violation($"PARENT for {target} with nr_pages {iov.NrPages} and vaddr 0x{iov.Vaddr:x}; it carries only dst_id");
        }

        // Pre-dump asks before it opens: a target not opened yet has no parent we know of. Answering 0 is always
        // safe, CRIU then sends every page instead of parent holes.
        int hasParent = _targets.TryGetValue(target, out var state) && state.HasParent ? 1 : 0;
        WriteInt32(hasParent);
        return await FlushAsync("the PARENT answer", ct).ConfigureAwait(false);
    }

    private async ValueTask<PageServerResult?> BeginRunAsync(PageServerIov iov, CancellationToken ct)
    {
        string name = PageServerCommand.Name(iov.Command);
        if (iov.Command == PageServerCommand.AddF)
        {
            if ((iov.FlagBits & ~(uint)PageServerCommand.KnownFlags) != 0)
            {
                return Violation($"unknown flags 0x{iov.FlagBits:x} on ADD_F (cmd 0x{iov.Cmd:x8}); known are PARENT 1, LAZY 2, PRESENT 4");
            }

            if (!PageServerCommand.IsRunFlags(iov.Flags))
            {
                return Violation($"ADD_F with flags {iov.Flags} (0x{iov.FlagBits:x}), which CRIU never sends: a run is PRESENT, PRESENT|LAZY, LAZY or PARENT");
            }
        }

        if (!TryTarget(iov, name, out var target, out var bad))
        {
            return bad;
        }

        if (!_targets.TryGetValue(target, out var state))
        {
            return Violation($"{name} for {target} before OPEN2 for it");
        }

        if (!ReferenceEquals(state, _current))
        {
            return Violation($"{name} for {target} while {_current!.Target} is open; CRIU sends a target's pages right after opening it");
        }

        if (CheckRange(iov, name, target, "run") is { } badRange)
        {
            return badRange;
        }

        if (iov.Vaddr < state.NextVaddr)
        {
            return Violation($"{name} at 0x{iov.Vaddr:x} for {target}, below the end of its previous run at 0x{state.NextVaddr:x}; " +
                "CRIU sends each target's runs in ascending address order");
        }

        var flags = iov.RunFlags;
        if ((flags & PagemapFlags.Parent) != 0 && !state.HasParent)
        {
            return Violation($"a parent hole at 0x{iov.Vaddr:x} ({iov.NrPages} pages) for {target}, which has no parent image (OPEN2 answered 0)");
        }

        state.NextVaddr = iov.Vaddr + (iov.NrPages * PageSize);
        if ((flags & PagemapFlags.Present) != 0)
        {
            _run = new PresentRun
            {
                Target = target,
                Flags = flags,
                Vaddr = iov.Vaddr,
                NrPages = iov.NrPages,
                NextVaddr = iov.Vaddr,
                PagesLeft = iov.NrPages,
            };
            return null;
        }

        try
        {
            // MaxPagesPerIov is at most uint.MaxValue (checked by the options), so the count fits.
            await _sink.WritePagesAsync(target, iov.Vaddr, (uint)iov.NrPages, flags, ReadOnlySequence<byte>.Empty, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!IsOwnCancellation(ex, ct))
        {
            return SinkFailed(ex, $"recording {iov.NrPages} {flags} pages at 0x{iov.Vaddr:x} for {target}");
        }

        CountMarks(flags, (long)iov.NrPages);
        return null;
    }

    private async ValueTask<PageServerResult?> CloseAsync(PageServerIov iov, long bytesAfter, CancellationToken ct)
    {
        string name = PageServerCommand.Name(iov.Command);
        if (iov.NrPages != 0 || iov.Vaddr != 0 || iov.DstId != 0)
        {
            return Violation($"{name} with nr_pages {iov.NrPages}, vaddr 0x{iov.Vaddr:x}, dst_id 0x{iov.DstId:x}; it carries nothing");
        }

        if (CheckNothingAfter(name, bytesAfter) is { } trailing)
        {
            return trailing;
        }

        try
        {
            await _sink.CompleteRoundAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!IsOwnCancellation(ex, ct))
        {
            return SinkFailed(ex, $"completing the round at {name}");
        }

        // The acknowledgement CRIU waits for: everything it sent is durable now.
        return await AcknowledgeCloseAsync(name, ct).ConfigureAwait(false);
    }

    private bool TryTarget(PageServerIov iov, string name, out PageTarget target, out PageServerResult? bad)
    {
        if (PageTarget.TryDecode(iov.DstId, out target))
        {
            bad = null;
            return true;
        }

        bad = Violation($"{name} with dst_id 0x{iov.DstId:x} (type {iov.DstId & 0xff}, id {iov.DstId >> 8}), which names no pagemap: " +
            $"type is 1 (pid) or 2 (shmem) and id 1 .. {PageTarget.MaxId}");
        return false;
    }

    private static ValueTask<PageServerResult?> Stop(PageServerResult result) => ValueTask.FromResult<PageServerResult?>(result);
}

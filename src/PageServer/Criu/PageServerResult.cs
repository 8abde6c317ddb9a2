namespace Migration.PageServer.Criu;

/// <summary>How a page-server session ended, and whose doing it was.</summary>
public enum PageServerOutcome
{
    /// <summary>CRIU sent CLOSE (or FORCE_CLOSE), everything was handed on, and it was acknowledged with int32 0.</summary>
    Completed,

    /// <summary>CRIU sent something the protocol does not allow (bad command, flags, dst_id, range, order). Nothing after it was handed on.</summary>
    ProtocolError,

    /// <summary>CRIU closed the connection before CLOSE: between commands, inside a header, or inside page data.</summary>
    PeerClosed,

    /// <summary>The <see cref="Pages.IPageSink"/> threw; CRIU got no acknowledgement.</summary>
    SinkFailed,

    /// <summary>The <see cref="Pages.IPageSource"/> threw, returned a wrong count, or holds none of the pages asked for.</summary>
    SourceFailed,

    /// <summary>The connection itself failed (reset, send or receive error).</summary>
    TransportFailed,

    /// <summary>The listener got no connection within its accept timeout.</summary>
    NoConnection,
}

/// <summary>
/// What a session moved. For the receiving direction: pages CRIU sent with data (<see cref="PagesPresent"/>), runs it
/// sent as header only (<see cref="PagesParent"/>, <see cref="PagesLazy"/>), and the page bytes received. For the lazy
/// direction: pages and bytes sent back in answer to GET requests (<see cref="PagesPresent"/>, <see cref="Bytes"/>).
/// </summary>
public readonly record struct PageServerCounters(long Commands, long PagesPresent, long PagesParent, long PagesLazy, long Bytes)
{
    public override string ToString() =>
        $"{Commands} commands, {PagesPresent} pages present ({Bytes} bytes), {PagesParent} in parent, {PagesLazy} lazy";
}

/// <summary>
/// The outcome of one page-server session: data-plane failures come back as values (which side failed, and with
/// what), never as exceptions. Cancellation is the one exception: it propagates as <see cref="OperationCanceledException"/>.
/// </summary>
public sealed record PageServerResult(PageServerOutcome Outcome, string? Error, PageServerCounters Counters)
{
    public bool IsCompleted => Outcome == PageServerOutcome.Completed;

    public static PageServerResult Completed(PageServerCounters counters) => new(PageServerOutcome.Completed, null, counters);

    public static PageServerResult Failed(PageServerOutcome outcome, string error, PageServerCounters counters)
    {
        if (outcome == PageServerOutcome.Completed)
        {
            throw new ArgumentException("a failure needs a failure outcome", nameof(outcome));
        }

        return new(outcome, error, counters);
    }

    public override string ToString() => IsCompleted ? $"completed: {Counters}" : $"{Outcome}: {Error} (after {Counters})";
}

using System.Buffers;
using System.IO.Pipelines;
using Migration.Engine.Images;
using Migration.Fuzz.Harness;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;

namespace Migration.Fuzz.Targets;

/// <summary>
/// CRIU's page-server protocol as our server reads it: the input is what <c>criu dump --page-server</c> (or
/// <c>criu lazy-pages</c>) would send on the socket, fed through a pipe to a real session. A session answers with a
/// <see cref="PageServerResult"/>, never an exception; the sink or source must see only what the contract allows.
/// </summary>
public abstract class CriuSessionTarget : FuzzTarget
{
    private protected const int Page = PageFacts.PageSize;

    /// <summary>Pipes run their callbacks inline: one input is one synchronous pass on the fuzzer's thread.</summary>
    private static readonly PipeOptions s_inline = new(readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline, useSynchronizationContext: false);

    private protected static PageServerIov Iov(ushort command, PagemapFlags flags, ulong nr, ulong vaddr, ulong dst) =>
        PageServerIov.Create(command, flags, nr, vaddr, dst);

    /// <summary>A seed of headers (each followed by its pages when it carries them), fields at every header's words.</summary>
    private protected static Seed Stream(string name, params (PageServerIov Iov, int DataPages)[] parts)
    {
        var bytes = new List<byte>();
        var fields = new List<SeedField>();
        foreach (var (iov, pages) in parts)
        {
            int o = bytes.Count;
            var header = new byte[PageServerIov.Size];
            iov.Write(header);
            bytes.AddRange(header);
            fields.Add(new(o, 4));
            fields.Add(new(o + 2, 2));
            fields.Add(new(o + 4, 4));
            fields.Add(new(o + 8, 8));
            fields.Add(new(o + 16, 8));
            fields.Add(new(o + 24, 8));
            for (int i = 0; i < pages * Page; i++)
            {
                bytes.Add((byte)(iov.Vaddr + (ulong)i));
            }
        }

        return new Seed(name, [.. bytes], fields);
    }

    /// <summary>Runs <paramref name="session"/> over a pipe holding <paramref name="input"/>; its answers are read and dropped.</summary>
    private protected static async ValueTask<PageServerResult> ServeAsync(byte[] input, Func<IDuplexPipe, Task<PageServerResult>> session)
    {
        var toServer = new Pipe(s_inline);
        var toCriu = new Pipe(s_inline);
        // The input arrives in pieces, as from a socket: a header or a page may span reads.
        int piece = input.Length == 0 ? 1 : 1 + (input[0] * 131 % 8192);
        for (int at = 0; at < input.Length; at += piece)
        {
            await toServer.Writer.WriteAsync(input.AsMemory(at, Math.Min(piece, input.Length - at))).ConfigureAwait(false);
        }

        await toServer.Writer.CompleteAsync().ConfigureAwait(false);
        var drain = DrainAsync(toCriu.Reader);
        PageServerResult result;
        try
        {
            result = await session(new Duplex(toServer.Reader, toCriu.Writer)).ConfigureAwait(false);
        }
        finally
        {
            await toCriu.Writer.CompleteAsync().ConfigureAwait(false);
            await toServer.Reader.CompleteAsync().ConfigureAwait(false);
        }

        await drain.ConfigureAwait(false);
        if (result.IsCompleted != (result.Error is null) || (result.Error is not null && string.IsNullOrWhiteSpace(result.Error)))
        {
            throw new InvariantViolationException($"inconsistent result: {result}");
        }

        return result;
    }

    private static async Task DrainAsync(PipeReader reader)
    {
        while (true)
        {
            var read = await reader.ReadAsync().ConfigureAwait(false);
            reader.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                await reader.CompleteAsync().ConfigureAwait(false);
                return;
            }
        }
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}

/// <summary>The receiving direction (<see cref="CriuPageServerSession"/>): OPEN/OPEN2, PARENT, ADD/HOLE/ADD_F with pages, CLOSE.</summary>
public sealed class CriuPageServerTarget : CriuSessionTarget
{
    private static readonly CriuPageServerOptions s_options = new() { ChunkPages = 16 };

    public CriuPageServerTarget()
    {
        var p1 = new PageTarget(1, PageImageType.Pid);
        var p2 = new PageTarget(2, PageImageType.Pid);
        var s4 = new PageTarget(4, PageImageType.Shmem);
        Seeds =
        [
            Stream("dump",
                (Iov(PageServerCommand.Open2, 0, 0, 0, p1.DstId), 0),
                (Iov(PageServerCommand.AddF, PagemapFlags.Present, 2, 0x10000, p1.DstId), 2),
                (Iov(PageServerCommand.AddF, PagemapFlags.Lazy, 1 << 20, 0x20000, p1.DstId), 0),
                (Iov(PageServerCommand.AddF, PagemapFlags.Present | PagemapFlags.Lazy, 1, 0x7fff_ffff_e000, p1.DstId), 1),
                (Iov(PageServerCommand.Close, 0, 0, 0, 0), 0)),
            Stream("pre-dump-parent",
                (Iov(PageServerCommand.Parent, 0, 0, 0, p2.DstId), 0),
                (Iov(PageServerCommand.Open2, 0, 0, 0, p2.DstId), 0),
                (Iov(PageServerCommand.Hole, 0, 3, 0x1000, p2.DstId), 0),
                (Iov(PageServerCommand.AddF, PagemapFlags.Parent, 5, 0x8000, p2.DstId), 0),
                (Iov(PageServerCommand.Add, 0, 1, 0x10000, p2.DstId), 1),
                (Iov(PageServerCommand.Open, 0, 0, 0, s4.DstId), 0),
                (Iov(PageServerCommand.AddF, PagemapFlags.Present, 3, 0, s4.DstId), 3),
                (Iov(PageServerCommand.ForceClose, 0, 0, 0, 0), 0)),
            Stream("empty", (Iov(PageServerCommand.Close, 0, 0, 0, 0), 0)),
        ];
    }

    public override string Name => "criu-page-server";

    public override string Description => "CRIU page-server protocol, receiving (CriuPageServerSession: page_server_iov headers and page data)";

    public override IReadOnlyList<Seed> Seeds { get; }

    public override long AllocationBudget(int inputLength) => (512 << 10) + (16L * inputLength);

    public override async ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        var sink = new CheckingSink(parentsChecked: true);
        var result = await ServeAsync(input, pipe => new CriuPageServerSession(pipe, sink, s_options).RunAsync(CancellationToken.None)).ConfigureAwait(false);
        if (sink.Violation is { } violation)
        {
            throw new InvariantViolationException($"sink contract broken: {violation} (session: {result})");
        }

        if (!result.IsCompleted && sink.Completed)
        {
            throw new InvariantViolationException($"the round was completed at the sink, yet the session failed: {result}");
        }

        return result.IsCompleted ? FuzzOutcome.Accepted : FuzzOutcome.Rejected;
    }
}

/// <summary>The lazy-restore direction (<see cref="CriuLazyPageServerSession"/>): GET requests answered from a source, CLOSE.</summary>
public sealed class CriuLazyPagesTarget : CriuSessionTarget
{
    /// <summary>Answers of at most 64 pages, flushed once 64 KiB are unflushed.</summary>
    private static readonly CriuPageServerOptions s_options = new() { MaxGetReplyPages = 64, ChunkPages = 16 };

    public CriuLazyPagesTarget()
    {
        Seeds =
        [
            Stream("gets",
                (Iov(PageServerCommand.Get, 0, 1, 0x10000, 1), 0),
                (Iov(PageServerCommand.Get, 0, 16, 0x7fff_ffff_0000, 42), 0),
                (Iov(PageServerCommand.Get, 0, 1024, 0x400000, 1), 0),
                (Iov(PageServerCommand.Close, 0, 0, 0, 0), 0)),
            Stream("get-two", (Iov(PageServerCommand.Get, 0, 2, 0x4000, 7), 0), (Iov(PageServerCommand.ForceClose, 0, 0, 0, 0), 0)),
            Stream("close", (Iov(PageServerCommand.Close, 0, 0, 0, 0), 0)),
        ];
    }

    public override string Name => "criu-lazy-pages";

    public override string Description => "CRIU page-server protocol, lazy restore (CriuLazyPageServerSession: GET, CLOSE)";

    public override IReadOnlyList<Seed> Seeds { get; }

    /// <summary>
    /// What the answers hold before a flush is bounded by the options (64 KiB unflushed plus one answer of 64 pages, in
    /// pooled buffers of up to 512 KiB), not by what a GET asks.
    /// </summary>
    public override long AllocationBudget(int inputLength) => (2 << 20) + (16L * inputLength);

    public override async ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        var source = new CheckingSource();
        var result = await ServeAsync(input, pipe => new CriuLazyPageServerSession(pipe, source, s_options).RunAsync(CancellationToken.None)).ConfigureAwait(false);
        if (source.Violation is { } violation)
        {
            throw new InvariantViolationException($"source contract broken: {violation} (session: {result})");
        }

        if (result.Counters.Bytes != result.Counters.PagesPresent * Page)
        {
            throw new InvariantViolationException($"counters disagree: {result.Counters}");
        }

        return result.IsCompleted ? FuzzOutcome.Accepted : FuzzOutcome.Rejected;
    }

    /// <summary>Holds every page of pid 1..4096 except at addresses divisible by 0x3000; checks each read.</summary>
    private sealed class CheckingSource : IPageSource
    {
        public string? Violation { get; private set; }

        public int ReadPages(PageTarget target, ulong vaddr, int nrPages, Span<byte> destination)
        {
            if (target.Type != PageImageType.Pid || nrPages < 1 || nrPages > s_options.MaxGetReplyPages || !PageFacts.IsValidRange(vaddr, (ulong)nrPages)
                || destination.Length != nrPages * PageFacts.PageSize)
            {
                Violation ??= $"read of {target} 0x{vaddr:x} x{nrPages} into {destination.Length} bytes";
                return 0;
            }

            int held = 0;
            while (held < nrPages && target.Id <= 4096 && (vaddr + ((ulong)held * PageFacts.PageSize)) % 0x3000 != 0)
            {
                held++;
            }

            destination[..(held * PageFacts.PageSize)].Fill((byte)target.Id);
            return held;
        }
    }
}

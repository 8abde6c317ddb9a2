using Migration.Engine.Images;
using Migration.Fuzz.Harness;
using Migration.PageServer.Pages;
using Migration.PageServer.Transport;

namespace Migration.Fuzz.Targets;

/// <summary>
/// A whole page stream connection as the target receives it (<see cref="PageStreamReceiver"/>, after the handshake):
/// the frame order (HELLO first, OPEN before BATCH, ROUND_END acknowledged, END last) on top of the frame codec, into a
/// checking sink. The receiver answers with a <see cref="PageStreamResult"/>; it must never throw.
/// </summary>
public sealed class PageStreamTarget : FuzzTarget
{
    private const string Id = "20261207233000-fuzz";

    public PageStreamTarget() =>
        Seeds = [.. new PageFrameTarget().Seeds.Where(s => s.Name == "stream").Select(s => s with { Name = "connection" }), Connection()];

    public override string Name => "page-stream";

    public override string Description => "page stream connections: PageStreamReceiver (frame order, rounds and acknowledgements) into a sink";

    public override IReadOnlyList<Seed> Seeds { get; }

    /// <summary>The receiver's batch buffers (3 of about 2 MiB) are pooled: rented once, reused by every connection.</summary>
    public override long AllocationBudget(int inputLength) => (1 << 20) + (16L * inputLength);

    public override byte[] FixUp(byte[] input) => PageFrameTarget.FixChecksums(input);

    public override async ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        var sink = new CheckingSink(parentsChecked: false) { SingleRound = false };
        using var connection = new ConnectionStream(input);
        var result = await PageStreamReceiver.RunAsync(connection, id => id is Id or "m1"
            ? sink
            : throw new InvalidOperationException($"no migration '{id}' takes a page stream here"), CancellationToken.None).ConfigureAwait(false);
        if (sink.Violation is { } violation)
        {
            throw new InvariantViolationException($"sink contract broken: {violation} (stream: {result})");
        }

        if (result.Succeeded != (result.Error is null) || (result.Succeeded && result.Rounds != sink.Rounds))
        {
            throw new InvariantViolationException($"inconsistent result: {result}, {sink.Rounds} rounds at the sink");
        }

        return result.Succeeded ? FuzzOutcome.Accepted : FuzzOutcome.Rejected;
    }

    private static Seed Connection()
    {
        var pid = new PageTarget(3, PageImageType.Pid);
        var shmem = new PageTarget(8, PageImageType.Shmem);
        var pages = new byte[5 * PageFacts.PageSize];
        pages.AsSpan(PageFacts.PageSize, 2 * PageFacts.PageSize).Fill(0x42);
        var output = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new PageServer.Streaming.PageFrameWriter(output))
        {
            w.WriteHello(Id);
            w.WriteOpen(pid);
            w.WritePages(pid, 0x400000, PagemapFlags.Present, pages);
            w.WriteRoundEnd(1);
            w.WriteOpen(shmem);
            w.WriteRun(shmem, 0, 16, PagemapFlags.Lazy);
            w.WritePages(pid, 0x500000, PagemapFlags.Present | PagemapFlags.Lazy, pages[..PageFacts.PageSize]);
            w.WriteRoundEnd(2);
            w.WriteEnd();
        }

        var bytes = output.WrittenSpan.ToArray();
        return new Seed("connection-rounds", bytes, PageFrameTarget.FieldsOf(bytes));
    }

    /// <summary>The connection: reads the input in pieces, takes what the receiver sends and drops it.</summary>
    private sealed class ConnectionStream(byte[] input) : Stream
    {
        private int _at;
        private readonly int _piece = input.Length == 0 ? 1 : 1 + (input[0] * 257 % 70000);

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(Math.Min(buffer.Length, _piece), input.Length - _at);
            input.AsSpan(_at, n).CopyTo(buffer);
            _at += n;
            return n;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));

        public override void Write(byte[] buffer, int offset, int count)
        {
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

using System.Buffers.Binary;
using System.Security.Cryptography;
using Google.Protobuf;
using Migration.Control.V1;
using Migration.Fuzz.Harness;
using Migration.Target.Incoming;

namespace Migration.Fuzz.Targets;

/// <summary>
/// gRPC request messages as the agent takes them, at the message level (HTTP/2 and gRPC framing are Grpc.AspNetCore's):
/// the protobuf parse (a malformed message is <see cref="InvalidProtocolBufferException"/>, which the service binding
/// answers InvalidArgument), then our handler's validation (<see cref="TargetRequestException"/>, the caller's status).
/// </summary>
public abstract class GrpcTarget : FuzzTarget
{
    /// <summary>The migration id seeds use; the harness puts the real one in its place.</summary>
    private protected const string SeedId = "m1";

    public override bool IsRejection(Exception ex) => ex is InvalidProtocolBufferException or TargetRequestException;

    /// <summary>A seed of one method selector byte and one message.</summary>
    private protected static Seed Message(string name, byte method, IMessage message)
    {
        var body = message.ToByteArray();
        var fields = ProtoFields.Find(body, 0, body.Length).Select(f => f with { Offset = f.Offset + 1 }).ToList();
        fields.Add(new(0, 1));
        return new Seed(name, [method, .. body], fields);
    }

    /// <summary>A seed of records: [kind u8][length u16][message], as one call after another.</summary>
    private protected static Seed Records(string name, params (byte Kind, IMessage Message)[] records)
    {
        var bytes = new List<byte>();
        var fields = new List<SeedField>();
        foreach (var (kind, message) in records)
        {
            var body = message.ToByteArray();
            int at = bytes.Count + 3;
            bytes.Add(kind);
            bytes.Add((byte)body.Length);
            bytes.Add((byte)(body.Length >> 8));
            bytes.AddRange(body);
            fields.AddRange(ProtoFields.Find(body, 0, body.Length).Select(f => f with { Offset = f.Offset + at }));
        }

        return new Seed(name, [.. bytes], fields);
    }

    /// <summary>The records of an input; a length beyond the input takes what is there (the harness's framing, not a decoder's).</summary>
    private protected static IEnumerable<(byte Kind, byte[] Message)> ReadRecords(byte[] input)
    {
        int at = 0;
        while (at + 3 <= input.Length)
        {
            byte kind = input[at];
            int n = Math.Min(BinaryPrimitives.ReadUInt16LittleEndian(input.AsSpan(at + 1)), input.Length - at - 3);
            yield return (kind, input.AsSpan(at + 3, n).ToArray());
            at += 3 + n;
        }
    }

    private protected static Control.V1.ImageFileInfo FileInfo(string name, byte[] content) =>
        new() { Name = name, Size = (ulong)content.Length, Sha256 = ByteString.CopyFrom(SHA256.HashData(content)) };

    /// <summary>The manifest as <c>AgentService.Restore</c> converts it before the agent checks it.</summary>
    private protected static Engine.Images.ImageFileInfo[] Manifest(RestoreRequest req) =>
        req.Manifest.Select(f => new Engine.Images.ImageFileInfo(f.Name, f.Size, f.Sha256.ToByteArray())).ToArray();
}

/// <summary>
/// The control requests: Begin's validation (mode, task list, CRIU flags by name, service addresses; the agent then
/// refuses it for having no room, so nothing is created), and Commit, Abort, PrepareCutover, Restore and GetMigration
/// with ids that name no migration, or the one migration the agent holds (GetMigration only: the others would act on it).
/// </summary>
public sealed class GrpcControlTarget : GrpcTarget
{
    /// <summary>One migration at a time, and it is held: every valid Begin is refused for room after all its checks. The
    /// hook stands for a service interface (Begin checks one is there); it is never run.</summary>
    private readonly AgentHarness _harness = new(new TargetOptions { MaxConcurrentMigrations = 1, AddressHook = "/nonexistent/address-hook" });
    private readonly string _id;

    public GrpcControlTarget()
    {
        _id = _harness.Agent.Begin("fuzz", 1, 0, "precopy", []).Id;
        var begin = new BeginRequest { SourceHost = "src", SourcePid = 4242, BytesExpected = 1 << 20, Mode = "precopy" };
        begin.Tasks.Add(new TaskMemory { Pid = 4242, Bytes = 1 << 20 });
        begin.Tasks.Add(new TaskMemory { Pid = 4243, Bytes = 4096 });
        begin.CriuFlags.Add("tcp-established");
        var addresses = new BeginRequest(begin) { Mode = "cold" };
        addresses.ServiceAddresses.Add("10.0.0.100/24");
        addresses.ServiceAddresses.Add("fd00::1/64");
        var restore = new RestoreRequest { MigrationId = "20261207233000-deadbeef", PagesStreamed = true, LazyPages = true };
        restore.Manifest.Add(FileInfo("core-1.img", [1, 2, 3]));
        Seeds =
        [
            Message("begin", 0, begin),
            Message("begin-addresses", 0, addresses),
            Message("commit", 1, new CommitRequest { MigrationId = "20261207233000-deadbeef" }),
            Message("abort", 2, new AbortRequest { MigrationId = "20261207233000-deadbeef", Reason = "source gave up" }),
            Message("prepare-cutover", 3, new PrepareCutoverRequest { MigrationId = "x" }),
            Message("restore", 4, restore),
            Message("get-migration", 5, new GetMigrationRequest { MigrationId = SeedId }),
        ];
    }

    public override string Name => "grpc-control";

    public override string Description =>
        "gRPC Begin, Commit, Abort, PrepareCutover, Restore, GetMigration: protobuf parse + AgentService validation " +
        "(accepted: passed them, even where the agent then answers NotFound or ResourceExhausted)";

    public override IReadOnlyList<Seed> Seeds { get; }

    public override async ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        if (input.Length == 0)
        {
            return FuzzOutcome.Rejected;
        }

        try
        {
            await CallAsync(input[0], input.AsSpan(1).ToArray()).ConfigureAwait(false);
        }
        catch (TargetRequestException ex) when (ex.Error is TargetError.NotFound or TargetError.ResourceExhausted)
        {
            // The request passed every check of its own; what the agent holds said no (no such migration, no room).
        }

        return FuzzOutcome.Accepted;
    }

    private async Task CallAsync(byte method, byte[] body)
    {
        var service = _harness.Service;
        var ctx = _harness.Context;
        switch (method % 6)
        {
            case 0:
                await service.Begin(BeginRequest.Parser.ParseFrom(body), ctx).ConfigureAwait(false);
                break;
            case 1:
                await service.Commit(CommitRequest.Parser.ParseFrom(body), ctx).ConfigureAwait(false);
                break;
            case 2:
                await service.Abort(AbortRequest.Parser.ParseFrom(body), ctx).ConfigureAwait(false);
                break;
            case 3:
                await service.PrepareCutover(PrepareCutoverRequest.Parser.ParseFrom(body), ctx).ConfigureAwait(false);
                break;
            case 4:
                await service.Restore(RestoreRequest.Parser.ParseFrom(body), ctx).ConfigureAwait(false);
                break;
            default:
                {
                    var req = GetMigrationRequest.Parser.ParseFrom(body);
                    if (req.MigrationId == SeedId)
                    {
                        req.MigrationId = _id;
                    }

                    await service.GetMigration(req, ctx).ConfigureAwait(false);
                    break;
                }
        }
    }

    public override void Dispose()
    {
        _harness.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// Image upload: PutImage chunks (name, offset, data, last) into a fresh migration per input, through AgentService and
/// the migration's ImageReceiver onto disk, ending with the Restore request's manifest checked against what arrived.
/// </summary>
public sealed class GrpcPutImageTarget : GrpcTarget
{
    private static readonly byte[] s_core = [.. Enumerable.Range(0, 300).Select(i => (byte)i)];
    private static readonly byte[] s_pages = [.. Enumerable.Range(0, 5000).Select(i => (byte)(i * 7))];
    private static readonly byte[] s_inventory = [0x16, 0x31, 0x31, 0x58];
    private readonly AgentHarness _harness = new(new TargetOptions { MaxImageFiles = 4, MaxChunkBytes = 4096, MaxConcurrentMigrations = 1 });

    private static RestoreRequest OneFile => new() { MigrationId = SeedId, Manifest = { FileInfo("inventory.img", s_inventory) } };

    public GrpcPutImageTarget()
    {
        var restore = new RestoreRequest { MigrationId = SeedId };
        restore.Manifest.Add(FileInfo("core-1.img", s_core));
        restore.Manifest.Add(FileInfo("pages-1.img", s_pages));
        Seeds =
        [
            Records("upload",
                (0, Chunk("core-1.img", 0, s_core, last: true)),
                (0, Chunk("pages-1.img", 0, s_pages[..4096], last: false)),
                (0, Chunk("pages-1.img", 4096, s_pages[4096..], last: true)),
                (1, restore)),
            Records("one-file", (0, Chunk("inventory.img", 0, s_inventory, last: true)), (1, OneFile)),
        ];
    }

    public override string Name => "grpc-put-image";

    public override string Description => "gRPC PutImage chunks through AgentService/ImageReceiver to disk, then the Restore manifest check";

    public override IReadOnlyList<Seed> Seeds { get; }

    /// <summary>Each file the upload opens has a 64 KiB write buffer; at most 4 files.</summary>
    public override long AllocationBudget(int inputLength) => (1 << 20) + (16L * inputLength);

    public override async ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        var m = _harness.Agent.Begin("fuzz", 1, 0, "cold", []);
        try
        {
            foreach (var (kind, message) in ReadRecords(input))
            {
                if (kind % 2 == 0)
                {
                    var chunk = ImageChunk.Parser.ParseFrom(message);
                    if (chunk.MigrationId == SeedId)
                    {
                        chunk.MigrationId = m.Id;
                    }

                    await _harness.Service.PutImage(chunk, _harness.Context).ConfigureAwait(false);
                }
                else
                {
                    m.VerifyManifest(Manifest(RestoreRequest.Parser.ParseFrom(message)));
                }
            }

            return FuzzOutcome.Accepted;
        }
        finally
        {
            _harness.Reset();
        }
    }

    private static ImageChunk Chunk(string name, ulong offset, byte[] data, bool last) =>
        new() { MigrationId = SeedId, Name = name, Offset = offset, Data = ByteString.CopyFrom(data), Last = last };

    public override void Dispose()
    {
        _harness.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// The manifest (Restore's list of image files: name, size, SHA-256) as the agent checks it against the files it
/// received: one migration holding two complete files, renewed whenever a manifest is accepted (that starts its restore).
/// </summary>
public sealed class ManifestTarget : GrpcTarget
{
    private static readonly byte[] s_core = [.. "core of the task"u8];
    private static readonly byte[] s_pages = new byte[8192];
    private readonly AgentHarness _harness = new(new TargetOptions { MaxConcurrentMigrations = 1 });
    private IncomingMigration _m;

    public ManifestTarget()
    {
        _m = Fresh();
        var restore = new RestoreRequest { MigrationId = SeedId, PagesStreamed = true };
        restore.Manifest.Add(FileInfo("core-1.img", s_core));
        restore.Manifest.Add(FileInfo("pages-1.img", s_pages));
        var reversed = new RestoreRequest { Manifest = { restore.Manifest.Reverse() } };
        Seeds = [Message("manifest", 0, restore), Message("manifest-reversed", 0, reversed)];
    }

    public override string Name => "manifest";

    public override string Description => "the Restore manifest: protobuf parse + IncomingMigration.VerifyManifest against received files";

    public override IReadOnlyList<Seed> Seeds { get; }

    public override ValueTask<FuzzOutcome> RunAsync(byte[] input)
    {
        var req = RestoreRequest.Parser.ParseFrom(input.AsSpan(Math.Min(1, input.Length)));
        _m.VerifyManifest(Manifest(req));
        _m = Fresh();
        return ValueTask.FromResult(FuzzOutcome.Accepted);
    }

    private IncomingMigration Fresh()
    {
        _harness.Reset();
        var m = _harness.Agent.Begin("fuzz", 1, 0, "cold", []);
        m.PutChunk("core-1.img", 0, s_core, last: true);
        m.PutChunk("pages-1.img", 0, s_pages, last: true);
        return m;
    }

    public override void Dispose()
    {
        _harness.Dispose();
        base.Dispose();
    }
}

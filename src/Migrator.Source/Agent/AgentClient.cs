using Google.Protobuf;
using Migration.Control.V1;
using Migration.Engine.Contract;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using ImageFileInfo = Migration.Engine.Images.ImageFileInfo;

namespace Migration.Source.Agent;

/// <summary>
/// The target agent's control API as the source engine's <see cref="IMigrationTarget"/>: each method one call of the
/// generated client, bounded by a deadline (the call timeout, or the longer bounds below) and by the caller's token.
/// </summary>
public sealed class AgentClient(AgentChannel channel, TimeSpan callTimeout) : IMigrationTarget
{
    /// <summary>Image files travel in chunks of this size: big enough to amortize a call, far below the message limit.</summary>
    public const int ChunkBytes = 2 << 20;

    /// <summary>Restore and the cutover's preparation take as long as reading or writing a large tree's images.</summary>
    public static readonly TimeSpan CutoverCallTimeout = TimeSpan.FromMinutes(10);

    /// <summary>A chunk can take long on a slow link; this bounds one chunk, not the transfer.</summary>
    public static readonly TimeSpan ChunkTimeout = TimeSpan.FromSeconds(120);

    public async Task<TargetPreflight> PreflightAsync(SourcePreflight request, CancellationToken ct)
    {
        var req = new PreflightRequest
        {
            SourceHost = request.SourceHost,
            SourceVersion = request.SourceVersion,
            SourceCriu = ToProto(request.Criu),
            CpuinfoImage = ByteString.CopyFrom(request.CpuInfoImage),
            BytesNeeded = request.BytesNeeded,
            Mode = request.Mode,
        };
        var reply = await channel.CallAsync("Preflight", (c, o) => c.PreflightAsync(req, o), callTimeout, ct).ConfigureAwait(false);
        return new TargetPreflight(reply.Ok, reply.AgentVersion, reply.Hostname,
            reply.TargetCriu is null ? null : new CriuVersionInfo(reply.TargetCriu.Major, reply.TargetCriu.Minor, reply.TargetCriu.Sublevel, reply.TargetCriu.Text),
            reply.FreeBytes, reply.Checks.Select(c => new PreflightCheckResult(c.Name, c.Ok, c.Detail)).ToArray());
    }

    public async Task<TargetMigration> BeginAsync(int sourcePid, ulong bytesExpected, string mode, IReadOnlyList<Migration.Engine.Processes.TaskMemory> tasks,
        Migration.Engine.Criu.CriuFlags criu, IReadOnlyList<Migration.Engine.Network.ServiceAddress> addresses, CancellationToken ct)
    {
        var request = new BeginRequest { SourceHost = Environment.MachineName, SourcePid = sourcePid, BytesExpected = bytesExpected, Mode = mode };
        request.CriuFlags.AddRange(criu.Names);
        request.ServiceAddresses.AddRange(addresses.Select(a => a.ToString()));
        request.Tasks.AddRange(tasks.Select(t => new Migration.Control.V1.TaskMemory { Pid = (uint)t.Pid, Bytes = t.Bytes }));
        var reply = await channel.CallAsync("Begin", (c, o) => c.BeginAsync(request, o), callTimeout, ct).ConfigureAwait(false);
        if (reply.PagePort > 65535)
        {
            throw new InvalidDataException($"agent at {channel.Endpoint} announced page port {reply.PagePort}");
        }

        return new TargetMigration(reply.MigrationId, (int)reply.PagePort, reply.ProvisionedBytes);
    }

    public async Task<ulong> SendImagesAsync(string migrationId, string imagesDir, IReadOnlyList<ImageFileInfo> manifest, CancellationToken ct)
    {
        ulong sent = 0;
        var buffer = new byte[ChunkBytes];
        foreach (var file in manifest)
        {
            await using var fs = new FileStream(Path.Combine(imagesDir, file.Name), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, useAsync: true);
            ulong offset = 0;
            do
            {
                int n = await fs.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, ct).ConfigureAwait(false);
                bool last = offset + (ulong)n >= file.Size;
                var chunk = new ImageChunk
                {
                    MigrationId = migrationId,
                    Name = file.Name,
                    Offset = offset,
                    Data = ByteString.CopyFrom(buffer, 0, n),
                    Last = last,
                };
                await channel.CallAsync("PutImage", (c, o) => c.PutImageAsync(chunk, o), ChunkTimeout, ct).ConfigureAwait(false);
                offset += (ulong)n;
                sent += (ulong)n;
                if (n == 0 && !last)
                {
                    throw new IOException($"{file.Name} is shorter than its manifest entry ({offset} of {file.Size} bytes)");
                }
            }
            while (offset < file.Size);
        }

        return sent;
    }

    public async Task<int> RestoreAsync(string migrationId, IReadOnlyList<ImageFileInfo> manifest, bool pagesStreamed, bool lazyPages, CancellationToken ct)
    {
        var req = new RestoreRequest { MigrationId = migrationId, PagesStreamed = pagesStreamed, LazyPages = lazyPages };
        req.Manifest.AddRange(manifest.Select(f => new Migration.Control.V1.ImageFileInfo { Name = f.Name, Size = f.Size, Sha256 = ByteString.CopyFrom(f.Sha256) }));
        // Restore of a large tree takes as long as reading its images: the cutover bound applies, not the call bound.
        var reply = await channel.CallAsync("Restore", (c, o) => c.RestoreAsync(req, o), CutoverCallTimeout, ct).ConfigureAwait(false);
        return reply.Pid;
    }

    public Task PrepareCutoverAsync(string migrationId, CancellationToken ct) =>
        channel.CallAsync("PrepareCutover", (c, o) => c.PrepareCutoverAsync(new PrepareCutoverRequest { MigrationId = migrationId }, o), CutoverCallTimeout, ct);

    public async Task<int> CommitAsync(string migrationId, CancellationToken ct)
    {
        var reply = await channel.CallAsync("Commit", (c, o) => c.CommitAsync(new CommitRequest { MigrationId = migrationId }, o), callTimeout, ct).ConfigureAwait(false);
        return reply.Pid;
    }

    public Task AbortAsync(string migrationId, string reason, CancellationToken ct) =>
        channel.CallAsync("Abort", (c, o) => c.AbortAsync(new AbortRequest { MigrationId = migrationId, Reason = reason }, o), callTimeout, ct);

    public Task<MigrationInfo> GetMigrationAsync(string migrationId, CancellationToken ct) =>
        channel.CallAsync("GetMigration", (c, o) => c.GetMigrationAsync(new GetMigrationRequest { MigrationId = migrationId }, o), callTimeout, ct);

    internal static CriuVersion ToProto(CriuVersionInfo v) => new() { Major = v.Major, Minor = v.Minor, Sublevel = v.Sublevel, Text = v.Text };
}

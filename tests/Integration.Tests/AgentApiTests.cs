using Google.Protobuf;
using Grpc.Core;
using Migration.Control.V1;
using Migration.Engine.Network;
using Migration.Engine.Security;
using Migration.Integration.Tests.Hosts;
using Migration.Source.Agent;
using Migration.Tests.Common;
using Xunit;
using Agent = Migration.Integration.Tests.Hosts.Agent;

namespace Migration.Integration.Tests;

/// <summary>
/// A real agent fed malformed and hostile input through its real API: each request is refused with a clear
/// status, nothing is written outside the migration's directory, and the agent keeps serving.
/// </summary>
public sealed class AgentApiTests : IAsyncLifetime
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(30);
    private readonly string _root = Directory.CreateTempSubdirectory("migrate-api-").FullName;
    private Agent? _agent;
    private TokenCredentials? _credentials;
    private AgentChannel? _channel;

    public async Task InitializeAsync()
    {
        if (Prerequisites.Missing() is not null && Environment.GetEnvironmentVariable("CI") != "true")
        {
            return;
        }

        var token = Path.Combine(_root, "token");
        await File.WriteAllTextAsync(token, Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)));
        File.SetUnixFileMode(token, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        _agent = await Agent.StartOnLoopbackAsync(_root, token, Random.Shared.Next(20000, 60000));
        _credentials = TokenCredentials.FromFile(token);
        _channel = new AgentChannel(Engine.Network.Endpoint.Parse(_agent.Endpoint), _credentials, TimeSpan.FromSeconds(10));
    }

    public async Task DisposeAsync()
    {
        _channel?.Dispose();
        _credentials?.Dispose();
        if (_agent is not null)
        {
            await _agent.DisposeAsync();
        }

        Directory.Delete(_root, recursive: true);
    }

    [RequiresRootFact]
    public async Task ImageNamesThatLeaveTheDirectoryAreRefused()
    {
        var id = await BeginAsync();
        foreach (var name in new[] { "../escape.img", "/etc/passwd", "a/b.img", "..", ".hidden", "" })
        {
            var ex = await Assert.ThrowsAsync<RpcException>(() => PutAsync(id, name, 0, [1, 2, 3], last: true));
            Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        }

        Assert.False(File.Exists(Path.Combine(_agent!.WorkDir, "escape.img")));
        Assert.False(File.Exists(Path.Combine(_agent.WorkDir, id, "escape.img")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_agent.WorkDir, id, "images")));
    }

    [RequiresRootFact]
    public async Task OutOfOrderOffsetsAndRewritesAreRefused()
    {
        var id = await BeginAsync();
        await PutAsync(id, "core-1.img", 0, new byte[100], last: false);
        var gap = await Assert.ThrowsAsync<RpcException>(() => PutAsync(id, "core-1.img", 4096, new byte[10], last: false));
        Assert.Equal(StatusCode.InvalidArgument, gap.StatusCode);
        Assert.Contains("expected 100", gap.Status.Detail, StringComparison.Ordinal);
        await PutAsync(id, "core-1.img", 100, new byte[10], last: true);
        var again = await Assert.ThrowsAsync<RpcException>(() => PutAsync(id, "core-1.img", 110, new byte[10], last: true));
        Assert.Equal(StatusCode.FailedPrecondition, again.StatusCode);
    }

    [RequiresRootFact]
    public async Task RestoreChecksTheManifestBeforeCriuSeesAnything()
    {
        var id = await BeginAsync();
        byte[] data = [1, 2, 3, 4];
        await PutAsync(id, "core-1.img", 0, data, last: true);

        var missing = Manifest(("core-1.img", data), ("pstree.img", [9]));
        var ex = await Assert.ThrowsAsync<RpcException>(() => RestoreAsync(id, missing));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);

        var wrongHash = Manifest(("core-1.img", [1, 2, 3, 5]));
        ex = await Assert.ThrowsAsync<RpcException>(() => RestoreAsync(id, wrongHash));
        Assert.Equal(StatusCode.DataLoss, ex.StatusCode);

        var info = await GetMigrationAsync(id);
        Assert.Equal("receiving", info.State);
        Assert.Equal(4UL, info.BytesReceived);
    }

    [RequiresRootFact]
    public async Task GetMigrationReportsThePageStreamPerRound()
    {
        var begun = await BeginAsync(new BeginRequest { SourceHost = "test", SourcePid = 1, BytesExpected = 1 << 20, Mode = "cold" });
        Assert.NotEqual(0U, begun.PagePort);
        var before = await GetMigrationAsync(begun.MigrationId);
        Assert.Null(before.Pages); // no stream yet

        var target = new PageServer.Pages.PageTarget(1, PageServer.Pages.PageImageType.Pid);
        const ulong Base = 0x7f0000000000;
        var pages = new byte[16 * 4096];
        for (int i = 1; i < 16; i += 2)
        {
            System.Security.Cryptography.RandomNumberGenerator.Fill(pages.AsSpan(i * 4096, 4096)); // odd pages random, even ones zero
        }

        var stream = await PageServer.Transport.PageChannel.ConnectAsync(Engine.Network.Endpoint.Parse(_agent!.Endpoint) with { Port = (int)begun.PagePort }, _credentials!, default);
        await using (var sender = new PageServer.Transport.PageStreamSender(stream, begun.MigrationId))
        {
            await sender.OpenAsync(target, default);
            await sender.WritePagesAsync(target, Base, 16, Engine.Images.PagemapFlags.Present, new System.Buffers.ReadOnlySequence<byte>(pages), default);
            await sender.CompleteRoundAsync(default).AsTask().WaitAsync(s_timeout);
            await sender.WritePagesAsync(target, Base, 2, Engine.Images.PagemapFlags.Present, new System.Buffers.ReadOnlySequence<byte>(pages, 0, 2 * 4096), default);
            await sender.CompleteRoundAsync(default).AsTask().WaitAsync(s_timeout);

            var info = await GetMigrationAsync(begun.MigrationId);
            var p = info.Pages;
            Assert.Equal((18UL, 9UL, 18UL * 4096, 2U, false), (p.Pages, p.ZeroPages, p.PageBytes, p.RoundsAcknowledged, p.Ended));
            Assert.InRange(p.WireBytes, 9UL * 4096, 10UL * 4096); // the random pages as they are, zero pages as bits
            Assert.Equal(new ulong[] { 1, 2 }, p.Rounds.Select(r => r.Round));
            Assert.Equal((16UL, 8UL), (p.Rounds[0].Pages, p.Rounds[0].ZeroPages));
            Assert.Equal((2UL, 1UL), (p.Rounds[1].Pages, p.Rounds[1].ZeroPages));
            await sender.FinishAsync(default).WaitAsync(s_timeout);
        }

        var deadline = DateTime.UtcNow + s_timeout;
        MigrationInfo after;
        do
        {
            after = await GetMigrationAsync(begun.MigrationId);
        }
        while (!after.Pages.Ended && DateTime.UtcNow < deadline && await Task.Delay(50).ContinueWith(_ => true));

        Assert.True(after.Pages.Ended);
        Assert.Equal(18UL, after.Pages.Pages);
    }

    [RequiresRootFact]
    public async Task ColdBegin_MakesRoomForTheNamedTasks_AndMalformedTaskListsAreRefused()
    {
        var cold = new BeginRequest { SourceHost = "test", SourcePid = 1, BytesExpected = 16 << 20, Mode = "cold" };
        cold.Tasks.Add(new TaskMemory { Pid = 1, Bytes = 8 << 20 });
        cold.Tasks.Add(new TaskMemory { Pid = 2, Bytes = 512 << 10 }); // too small to pay for a file of its own
        var begun = await BeginAsync(cold);
        Assert.Equal(8UL << 20, begun.ProvisionedBytes);
        string pages = Path.Combine(_agent!.WorkDir, begun.MigrationId, "pages");
        Assert.Equal(8L << 20, new FileInfo(Path.Combine(pages, "pid-1.data")).Length);
        Assert.False(File.Exists(Path.Combine(pages, "pid-2.data")));

        // Pre-copy's rounds run while the tree does: nothing to make room for ahead.
        var live = cold.Clone();
        live.Mode = "precopy";
        Assert.Equal(0UL, (await BeginAsync(live)).ProvisionedBytes);

        var tooMany = cold.Clone();
        tooMany.Tasks.AddRange(Enumerable.Range(3, 1023).Select(p => new TaskMemory { Pid = (uint)p, Bytes = 1 << 20 }));
        foreach (var bad in new[] { tooMany, With(0, 1 << 20), With(5_000_000, 1 << 20), With(3, 0) })
        {
            var ex = await Assert.ThrowsAsync<RpcException>(() => BeginAsync(bad));
            Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        }

        Assert.False(_agent!.HasExited);

        BeginRequest With(uint pid, ulong bytes)
        {
            var r = cold.Clone();
            r.Tasks.Add(new TaskMemory { Pid = pid, Bytes = bytes });
            return r;
        }
    }

    [RequiresRootFact]
    public async Task UnknownMigrationsAndMalformedMessagesAreRefusedAndTheAgentKeepsServing()
    {
        var notFound = await Assert.ThrowsAsync<RpcException>(() => PutAsync("no-such-id", "core-1.img", 0, [1], last: true));
        Assert.Equal(StatusCode.NotFound, notFound.StatusCode);

        // A body that is not a protobuf ImageChunk: field 1 declared as a 2 GiB string.
        var garbage = await Assert.ThrowsAsync<RpcException>(() => RawCallAsync("PutImage", [0x0a, 0xff, 0xff, 0xff, 0xff, 0x07]));
        Assert.Equal(StatusCode.InvalidArgument, garbage.StatusCode);
        Assert.Contains("malformed ImageChunk", garbage.Status.Detail, StringComparison.Ordinal);

        var unknown = await Assert.ThrowsAsync<RpcException>(() => RawCallAsync("Nope", []));
        Assert.Equal(StatusCode.Unimplemented, unknown.StatusCode);

        // Still serving.
        Assert.NotEmpty(await BeginAsync());
        Assert.False(_agent!.HasExited);
    }

    /// <summary>
    /// A TLS client that presents no certificate, or one not derived from the token, is refused in the handshake: the
    /// agent never answers HTTP/2 on that connection, so no call of any kind reaches it.
    /// </summary>
    [RequiresRootFact]
    public async Task ClientsWithoutTheTokensCertificateAreRefusedInTheHandshake()
    {
        using var other = TokenCredentials.FromToken(Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)));
        foreach (var (what, cert) in new[] { ("no certificate", (System.Security.Cryptography.X509Certificates.X509Certificate2?)null), ("another token's", other.Certificate) })
        {
            var ep = Engine.Network.Endpoint.Parse(_agent!.Endpoint);
            using var tcp = new System.Net.Sockets.TcpClient();
            await tcp.ConnectAsync(ep.Host, ep.Port);
            using var tls = new System.Net.Security.SslStream(tcp.GetStream());
            byte[] answer = new byte[64];
            int got = 0;
            Exception? refused = null;
            try
            {
                await tls.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
                {
                    TargetHost = TokenCredentials.ServerName,
                    EnabledSslProtocols = System.Security.Authentication.SslProtocols.Tls13,
                    ApplicationProtocols = [System.Net.Security.SslApplicationProtocol.Http2],
                    ClientCertificates = cert is null ? null : [cert],
                    LocalCertificateSelectionCallback = (_, _, _, _, _) => cert!,
                    RemoteCertificateValidationCallback = (_, c, _, _) => _credentials!.IsPeer(c),
                });
                // TLS 1.3 checks the client's certificate after the client's Finished: the refusal arrives as an alert
                // on the first read. The HTTP/2 preface a real client sends next must get no SETTINGS frame back.
                await tls.WriteAsync("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray());
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                got = await tls.ReadAsync(answer, cts.Token);
            }
            catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException)
            {
                refused = ex;
            }

            Assert.True(refused is not null || got == 0, $"{what}: the agent answered {got} bytes instead of refusing the handshake");
        }

        Assert.False(_agent!.HasExited);
        Assert.NotEmpty(await BeginAsync());
    }

    /// <summary>The CRIU options travel by name; a name the agent does not know is refused before anything is begun.</summary>
    [RequiresRootFact]
    public async Task BeginWithAnUnknownCriuOptionIsRefused()
    {
        var request = new BeginRequest { SourceHost = "test", SourcePid = 1, BytesExpected = 1 << 20, Mode = "cold" };
        request.CriuFlags.AddRange(["tcp-established", "leave-running"]);
        var refused = await Assert.ThrowsAsync<RpcException>(() => BeginAsync(request));
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Contains("'leave-running'", refused.Status.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain(Directory.EnumerateDirectories(Path.Combine(_root, "agent-work")), d => !Path.GetFileName(d).StartsWith('.'));

        var known = new BeginRequest { SourceHost = "test", SourcePid = 1, BytesExpected = 1 << 20, Mode = "cold" };
        known.CriuFlags.AddRange(Engine.Criu.CriuFlags.All.Select(f => f.Name));
        Assert.NotEmpty((await BeginAsync(known)).MigrationId);
    }

    /// <summary>The source role's calls refuse what they cannot take, each with its status, before anything runs.</summary>
    [RequiresRootFact]
    public async Task StartMigrationRefusesBadInput_AndUnknownOutgoingMigrationsAreNotFound()
    {
        var good = new StartMigrationRequest { Pid = Environment.ProcessId, Target = "127.0.0.1:1" };
        var cases = new (string What, StartMigrationRequest Request, StatusCode Code)[]
        {
            ("pid 0", new StartMigrationRequest { Pid = 0, Target = "127.0.0.1:1" }, StatusCode.InvalidArgument),
            ("a target that is not HOST:PORT", new StartMigrationRequest { Pid = 2, Target = "no port" }, StatusCode.InvalidArgument),
            ("a target of 10000 characters", new StartMigrationRequest { Pid = 2, Target = new string('a', 10_000) + ":1" }, StatusCode.InvalidArgument),
            ("an unknown mode", With(o => o.Mode = "warm"), StatusCode.InvalidArgument),
            ("an unknown CRIU option", With(o => o.CriuFlags.Add("leave-running")), StatusCode.InvalidArgument),
            ("too many iterations", With(o => o.MaxIterations = 1_000_000), StatusCode.InvalidArgument),
            ("a bad service address", With(o => o.MoveAddresses.Add("10.0.0.300/24")), StatusCode.InvalidArgument),
            ("a process that does not exist", new StartMigrationRequest { Pid = 4_000_000, Target = "127.0.0.1:1" }, StatusCode.FailedPrecondition),
            ("the tree of this test, the agent's parent", good, StatusCode.InvalidArgument),
        };
        foreach (var (what, request, code) in cases)
        {
            var ex = await Assert.ThrowsAsync<RpcException>(() => _channel!.CallAsync("StartMigration", (c, o) => c.StartMigrationAsync(request, o), s_timeout, default));
            Assert.True(ex.StatusCode == code, $"{what}: {ex.StatusCode} {ex.Status.Detail}");
        }

        foreach (var call in new Func<Task>[]
        {
            () => _channel!.CallAsync("GetOutgoingMigration", (c, o) => c.GetOutgoingMigrationAsync(new GetOutgoingMigrationRequest { MigrationId = "out-nope" }, o), s_timeout, default),
            () => _channel!.CallAsync("CancelMigration", (c, o) => c.CancelMigrationAsync(new CancelMigrationRequest { MigrationId = "out-nope" }, o), s_timeout, default),
            async () =>
            {
                using var watch = _channel!.Client.WatchMigration(new WatchMigrationRequest { MigrationId = "out-nope" }, deadline: DateTime.UtcNow + s_timeout);
                await watch.ResponseStream.MoveNext(default);
            },
        })
        {
            Assert.Equal(StatusCode.NotFound, (await Assert.ThrowsAsync<RpcException>(call)).StatusCode);
        }

        var listed = await _channel!.CallAsync("ListMigrations", (c, o) => c.ListMigrationsAsync(new ListMigrationsRequest(), o), s_timeout, default);
        Assert.DoesNotContain(listed.Migrations, m => m.Direction == "outgoing");
        Assert.False(_agent!.HasExited);

        StartMigrationRequest With(Action<MigrationOptions> change)
        {
            var r = new StartMigrationRequest { Pid = Environment.ProcessId, Target = "127.0.0.1:1", Options = new MigrationOptions() };
            change(r.Options);
            return r;
        }
    }

    private async Task<string> BeginAsync() =>
        (await BeginAsync(new BeginRequest { SourceHost = "test", SourcePid = 1, BytesExpected = 1 << 20, Mode = "cold" })).MigrationId;

    private Task<BeginReply> BeginAsync(BeginRequest request) =>
        _channel!.CallAsync("Begin", (c, o) => c.BeginAsync(request, o), s_timeout, default);

    private Task<MigrationInfo> GetMigrationAsync(string id) =>
        _channel!.CallAsync("GetMigration", (c, o) => c.GetMigrationAsync(new GetMigrationRequest { MigrationId = id }, o), s_timeout, default);

    private Task<PutImageReply> PutAsync(string id, string name, ulong offset, byte[] data, bool last) =>
        _channel!.CallAsync("PutImage",
            (c, o) => c.PutImageAsync(new ImageChunk { MigrationId = id, Name = name, Offset = offset, Data = ByteString.CopyFrom(data), Last = last }, o),
            s_timeout, default);

    private Task<RestoreReply> RestoreAsync(string id, IEnumerable<Control.V1.ImageFileInfo> manifest)
    {
        var req = new RestoreRequest { MigrationId = id };
        req.Manifest.AddRange(manifest);
        return _channel!.CallAsync("Restore", (c, o) => c.RestoreAsync(req, o), s_timeout, default);
    }

    /// <summary>A call of /migrate.v1.Agent/<paramref name="method"/> with a body of exactly <paramref name="body"/>: what no well-behaved client would send.</summary>
    private Task<byte[]> RawCallAsync(string method, byte[] body)
    {
        var raw = Marshallers.Create(b => b, b => b);
        var call = new Method<byte[], byte[]>(MethodType.Unary, Control.V1.Agent.Descriptor.FullName, method, raw, raw);
        var invoker = _channel!.CreateCallInvoker();
        return _channel.CallAsync(method, (_, o) => invoker.AsyncUnaryCall(call, null, o, body), s_timeout, default);
    }

    private static IEnumerable<Control.V1.ImageFileInfo> Manifest(params (string Name, byte[] Data)[] files) =>
        files.Select(f => new Control.V1.ImageFileInfo
        {
            Name = f.Name,
            Size = (ulong)f.Data.Length,
            Sha256 = ByteString.CopyFrom(System.Security.Cryptography.SHA256.HashData(f.Data)),
        });
}

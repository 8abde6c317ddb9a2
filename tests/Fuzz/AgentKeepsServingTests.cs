using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Engine.Images;
using Migration.Engine.Network;
using Migration.Engine.Security;
using Migration.Fuzz.Harness;
using Migration.Fuzz.Targets;
using Migration.PageServer.Pages;
using Migration.PageServer.Store;
using Migration.PageServer.Streaming;
using Migration.PageServer.Transport;
using Migration.Target;
using Migration.Target.Incoming;
using Xunit;

namespace Migration.Fuzz;

/// <summary>
/// A real agent's page stream listener (loopback, so the token's HMAC proof instead of TLS) with a real page store,
/// fed malformed connections: junk before the handshake, fuzzed frames after it, a stream that HELLOs a migration and
/// then breaks. A bad peer ends its own migration and nothing else: afterwards another migration's valid stream is
/// still received and its round acknowledged.
/// </summary>
public sealed class AgentKeepsServingTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    private readonly string _root = Directory.CreateTempSubdirectory("migrate-fuzz-serving-").FullName;
    private readonly TokenCredentials _credentials = TokenCredentials.FromToken(Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)));
    private readonly TargetAgent _agent;
    private readonly PageStreamListener _listener;
    private readonly int _port = FreePort();

    public AgentKeepsServingTests()
    {
        _agent = new TargetAgent(new CriuClient(new CriuOptions(), NullLogger<CriuClient>.Instance),
            new TargetOptions { WorkRoot = _root, ReserveBytes = 0, MaxConcurrentMigrations = 4 }, NullLoggerFactory.Instance,
            (dir, maxBytes) => new PageStoreAttachment(new PageStore(dir, new PageStoreOptions { MaxBytes = 1L << 30, SyncToDisk = false })));
        _listener = new PageStreamListener(new PageStreamOptions([IPAddress.Loopback], _port), _credentials, _agent, NullLogger<PageStreamListener>.Instance);
    }

    [Fact]
    public async Task MalformedStreams_EndOnlyThemselves_AndAValidStreamIsStillReceived()
    {
        await _listener.StartAsync(CancellationToken.None).WaitAsync(Timeout);
        await WaitListeningAsync();
        var victim = _agent.Begin("fuzz", 1, 0, "precopy", []);
        var endpoint = new Endpoint("127.0.0.1", _port);

        // Junk where the handshake should be: refused before anything reaches a store.
        for (int i = 0; i < 5; i++)
        {
            var raw = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await raw.ConnectAsync(IPAddress.Loopback, _port).WaitAsync(Timeout);
            await using var net = new NetworkStream(raw, ownsSocket: true);
            await net.WriteAsync(RandomNumberGenerator.GetBytes(37 * (i + 1))).AsTask().WaitAsync(Timeout);
            raw.Shutdown(SocketShutdown.Send);
            await DrainAsync(net, "a connection that sent junk before the handshake");
        }

        // Authenticated, then fuzzed frames: some name the victim (HELLO, then what breaks), most name nothing.
        var hello = Frames(w => w.WriteHello(victim.Id));
        using var frames = FuzzTargets.Create("page-frame");
        for (long i = 0; i < 60; i++)
        {
            var input = FuzzRunner.Input(frames, seed: 3, i);
            byte[] bytes = i % 4 == 0 ? [.. hello, .. input] : input;
            await using var stream = await PageChannel.ConnectAsync(endpoint, _credentials, CancellationToken.None).WaitAsync(Timeout);
            await stream.WriteAsync(bytes).AsTask().WaitAsync(Timeout);
            await stream.FlushAsync().WaitAsync(Timeout);
            await DrainAsync(stream, $"fuzzed connection {i}", closeAfter: TimeSpan.FromMilliseconds(200));
        }

        // The victim's stream broke: the victim is abandoned, as a broken stream's migration must be.
        await WaitUntilAsync(() => victim.State == IncomingState.Aborted, "the victim migration to be abandoned");

        // Another migration's valid stream is received and its round acknowledged.
        var m = _agent.Begin("fuzz", 1, 0, "precopy", []);
        var pages = new byte[3 * PageFacts.PageSize];
        pages.AsSpan(PageFacts.PageSize).Fill(0x5a);
        var valid = Frames(w =>
        {
            w.WriteHello(m.Id);
            w.WriteOpen(new PageTarget(1, PageImageType.Pid));
            w.WritePages(new PageTarget(1, PageImageType.Pid), 0x10000, PagemapFlags.Present, pages);
            w.WriteRoundEnd(1);
        });
        await using (var stream = await PageChannel.ConnectAsync(endpoint, _credentials, CancellationToken.None).WaitAsync(Timeout))
        {
            await stream.WriteAsync(valid).AsTask().WaitAsync(Timeout);
            await stream.FlushAsync().WaitAsync(Timeout);
            var ack = await ReadFrameAsync(stream);
            Assert.True(ack.Kind == PageFrameKind.RoundAck && ack.RoundId == 1, $"expected ROUND_ACK 1, got {ack}");
            await stream.WriteAsync(Frames(w => w.WriteEnd())).AsTask().WaitAsync(Timeout);
            await stream.FlushAsync().WaitAsync(Timeout);
        }

        Assert.Equal(IncomingState.Receiving, m.State);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await _listener.StopAsync(CancellationToken.None).WaitAsync(Timeout);
        _listener.Dispose();
        _agent.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private static byte[] Frames(Action<PageFrameWriter> write)
    {
        var output = new ArrayBufferWriter<byte>();
        using (var writer = new PageFrameWriter(output))
        {
            write(writer);
        }

        return output.WrittenSpan.ToArray();
    }

    /// <summary>Reads what the agent answers until it closes, or gives up waiting after <paramref name="closeAfter"/> (a
    /// truncated frame leaves the agent waiting for the rest, as it should: the connection is then closed from here).</summary>
    private static async Task DrainAsync(Stream stream, string what, TimeSpan? closeAfter = null)
    {
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(closeAfter ?? Timeout);
        try
        {
            while (await stream.ReadAsync(buffer, cts.Token) > 0)
            {
            }
        }
        catch (OperationCanceledException) when (closeAfter is not null)
        {
            // Still open: the agent waits for the rest of a frame. Closing our end ends it.
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"{what}: the agent neither answered nor closed within {Timeout.TotalSeconds} s");
        }
        catch (IOException)
        {
            // The agent reset the connection: refused, which is what is expected.
        }
    }

    private static async Task<PageFrame> ReadFrameAsync(Stream stream)
    {
        var bytes = new List<byte>();
        var buffer = new byte[256];
        using var cts = new CancellationTokenSource(Timeout);
        while (true)
        {
            var sequence = new ReadOnlySequence<byte>(bytes.ToArray());
            var status = PageFrameReader.TryReadFrame(ref sequence, out var frame, out var error);
            if (status == PageFrameStatus.Complete)
            {
                return frame;
            }

            Assert.True(status == PageFrameStatus.Incomplete, $"the agent sent an invalid frame: {error.Message}");
            int n = await stream.ReadAsync(buffer, cts.Token);
            Assert.True(n > 0, "the agent closed the valid stream before acknowledging its round");
            bytes.AddRange(buffer.AsSpan(0, n));
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"waited {Timeout.TotalSeconds} s for {what}");
            await Task.Delay(20);
        }
    }

    /// <summary>The listener binds in its ExecuteAsync, which runs on after StartAsync returned.</summary>
    private async Task WaitListeningAsync()
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (true)
        {
            using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(IPAddress.Loopback, _port);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }
        }
    }

    private static int FreePort()
    {
        using var s = new Socket(SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }
}

using System.Buffers.Binary;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;
using Xunit;
using static Migration.PageServer.Tests.Criu.CriuWire;

namespace Migration.PageServer.Tests.Criu;

/// <summary>
/// Thousands of random and mutated byte streams (fixed seeds, so a failure reproduces): the sessions never throw,
/// always end with an outcome, and never hand the sink or ask the source anything outside the contract.
/// </summary>
public class CriuPageServerFuzzTests
{
    /// <summary>4000 streams per session kind (about a second); MIGRATE_FUZZ_STREAMS asks for a deeper run.</summary>
    private static readonly int Streams = int.TryParse(Environment.GetEnvironmentVariable("MIGRATE_FUZZ_STREAMS"), out int n) && n > 0 ? n : 4000;

    private static readonly ushort[] Commands =
    [
        PageServerCommand.Add, PageServerCommand.Hole, PageServerCommand.Open, PageServerCommand.Open2, PageServerCommand.Parent,
        PageServerCommand.AddF, PageServerCommand.Get, PageServerCommand.Close, PageServerCommand.ForceClose, 0, 8, 0xffff,
    ];

    private static readonly ulong[] Addresses = [0, 0x1000, 0x2000, 0x10000, 0x7fff_ffff_f000, (1UL << 57) - 0x1000, 1UL << 57, 0x1001, ulong.MaxValue & ~0xfffUL];

    private static readonly ulong[] Counts = [0, 1, 2, 3, 256, 257, 70000, 1UL << 22, (1UL << 22) + 1, 1UL << 32, ulong.MaxValue];

    [Fact]
    public async Task ReceivingSession_RandomAndMutatedStreams_NeverThrow_NeverBreakTheSinkContract()
    {
        var outcomes = new Dictionary<PageServerOutcome, int>();
        for (int seed = 0; seed < Streams; seed++)
        {
            var rng = new Random(seed);
            var stream = MakeStream(rng);
            int chunk = rng.Next(3) switch { 0 => 1, 1 => 2, _ => 256 };
            var sink = new RecordingPageSink(chunk) { HasParent = t => t.Id % 2 == 0 };
            var connection = new InMemoryConnection();
            await connection.SendAndEndAsync(stream);
            PageServerResult result;
            try
            {
                var session = new CriuPageServerSession(connection.ServerSide, sink, new CriuPageServerOptions { ChunkPages = chunk });
                result = await Within.Await(session.RunAsync(CancellationToken.None), $"the session of seed {seed}");
            }
            catch (Exception ex) when (ex is not TimeoutException)
            {
                Assert.Fail($"seed {seed}: the session threw {ex}");
                throw;
            }

            var replies = await Within.Await(connection.RepliesAsync(), $"the replies of seed {seed}");
            Assert.True(sink.Violations.Count == 0, $"seed {seed}: {string.Join("; ", sink.Violations)}");
            Assert.True(result.IsCompleted == (result.Error is null), $"seed {seed}: {result}");
            if (result.IsCompleted)
            {
                Assert.Equal(SinkCall.Complete, sink.Calls[^1]);
                Assert.Equal(new byte[4], replies[^4..]);
            }
            else
            {
                Assert.DoesNotContain(SinkCall.Complete, sink.Calls);
            }

            outcomes[result.Outcome] = outcomes.GetValueOrDefault(result.Outcome) + 1;
        }

        // The generator reaches the interesting ends, not only one kind of failure.
        Assert.True(outcomes.GetValueOrDefault(PageServerOutcome.Completed) > 100, Describe(outcomes));
        Assert.True(outcomes.GetValueOrDefault(PageServerOutcome.ProtocolError) > 100, Describe(outcomes));
        Assert.True(outcomes.GetValueOrDefault(PageServerOutcome.PeerClosed) > 100, Describe(outcomes));
    }

    [Fact]
    public async Task LazySession_RandomAndMutatedRequests_NeverThrow_NeverAskTheSourceOutsideTheContract()
    {
        var outcomes = new Dictionary<PageServerOutcome, int>();
        for (int seed = 0; seed < Streams; seed++)
        {
            var rng = new Random(seed);
            var stream = MakeLazyStream(rng);
            var source = new PatternPageSource(maxPages: 8) { HoldsOnly = rng.Next(2) == 0 ? null : (_, vaddr) => vaddr % 0x3000 != 0 };
            var connection = new InMemoryConnection();
            await connection.SendAndEndAsync(stream);
            PageServerResult result;
            try
            {
                var session = new CriuLazyPageServerSession(connection.ServerSide, source, new CriuPageServerOptions { MaxGetReplyPages = 8 });
                result = await Within.Await(session.RunAsync(CancellationToken.None), $"the lazy session of seed {seed}");
            }
            catch (Exception ex) when (ex is not TimeoutException)
            {
                Assert.Fail($"seed {seed}: the lazy session threw {ex}");
                throw;
            }

            var replies = await Within.Await(connection.RepliesAsync(), $"the lazy replies of seed {seed}");
            Assert.True(source.Violations.Count == 0, $"seed {seed}: {string.Join("; ", source.Violations)}");
            Assert.True(result.IsCompleted == (result.Error is null), $"seed {seed}: {result}");
            Assert.Equal(result.Counters.PagesPresent * Page, result.Counters.Bytes);
            Assert.True(replies.Length >= result.Counters.Bytes, $"seed {seed}: {replies.Length} reply bytes for {result.Counters}");
            outcomes[result.Outcome] = outcomes.GetValueOrDefault(result.Outcome) + 1;
        }

        Assert.True(outcomes.GetValueOrDefault(PageServerOutcome.Completed) > 100, Describe(outcomes));
        Assert.True(outcomes.GetValueOrDefault(PageServerOutcome.ProtocolError) > 100, Describe(outcomes));
    }

    private static string Describe(Dictionary<PageServerOutcome, int> outcomes) =>
        string.Join(", ", outcomes.Select(kv => $"{kv.Key} {kv.Value}"));

    private static byte[] MakeStream(Random rng) => rng.Next(5) switch
    {
        0 => RandomBytes(rng, rng.Next(0, 400)),
        1 => ValidDump(rng),
        2 => Mutate(rng, ValidDump(rng)),
        3 => rng.Next(2) == 0 ? Truncate(rng, ValidDump(rng)) : Mutate(rng, Mutate(rng, ValidDump(rng))),
        _ => RandomHeaders(rng),
    };

    private static byte[] MakeLazyStream(Random rng)
    {
        var parts = new List<byte[]>();
        int n = rng.Next(0, 8);
        for (int i = 0; i < n; i++)
        {
            parts.Add(Get((uint)rng.Next(1, 5), (ulong)rng.Next(0, 64) * Page, (ulong)rng.Next(1, 12)));
        }

        parts.Add(Close());
        var valid = Concat([.. parts]);
        return rng.Next(4) switch
        {
            0 => valid,
            1 => Mutate(rng, valid),
            2 => Truncate(rng, valid),
            _ => RandomHeaders(rng),
        };
    }

    /// <summary>What CRIU could send: targets opened one after another, ascending runs of every kind, PARENT queries, CLOSE.</summary>
    private static byte[] ValidDump(Random rng)
    {
        var parts = new List<byte[]>();
        int targets = rng.Next(0, 4);
        for (int t = 0; t < targets; t++)
        {
            var target = rng.Next(3) == 0 ? Shmem((uint)(t + 1) * 2) : Pid((uint)(t + 1) * (uint)rng.Next(1, 3));
            if (parts.Count > 0 && rng.Next(4) == 0)
            {
                parts.Add(Parent(target));
            }

            parts.Add(rng.Next(5) == 0 ? Open(target) : Open2(target));
            ulong vaddr = (ulong)rng.Next(0, 16) * Page;
            int runs = rng.Next(0, 5);
            for (int r = 0; r < runs; r++)
            {
                ulong nr = (ulong)rng.Next(1, 5);
                var flags = rng.Next(5) switch
                {
                    0 => PagemapFlags.Lazy,
                    1 => PagemapFlags.Present | PagemapFlags.Lazy,
                    2 when target.Id % 2 == 0 => PagemapFlags.Parent,
                    _ => PagemapFlags.Present,
                };
                parts.Add(rng.Next(6) == 0 && flags == PagemapFlags.Present
                    ? Concat(Header(PageServerCommand.Add, 0, nr, vaddr, target.DstId), PatternPages(vaddr, (int)nr))
                    : AddF(target, vaddr, nr, flags));
                vaddr += (nr + (ulong)rng.Next(0, 3)) * Page;
            }
        }

        parts.Add(rng.Next(4) == 0 ? ForceClose() : Close());
        return Concat([.. parts]);
    }

    /// <summary>Headers with fields drawn from edge values, with some or all of their page data.</summary>
    private static byte[] RandomHeaders(Random rng)
    {
        var parts = new List<byte[]>();
        int n = rng.Next(1, 10);
        for (int i = 0; i < n; i++)
        {
            ushort command = Commands[rng.Next(Commands.Length)];
            uint flags = rng.Next(4) switch { 0 => 0, 1 => 4, 2 => (uint)rng.Next(0, 8), _ => (uint)rng.Next() & 0xffff };
            ulong nr = Counts[rng.Next(Counts.Length)];
            ulong vaddr = Addresses[rng.Next(Addresses.Length)];
            ulong dst = rng.Next(4) switch
            {
                0 => Pid((uint)rng.Next(1, 4)).DstId,
                1 => Shmem((uint)rng.Next(1, 4)).DstId,
                2 => (ulong)rng.Next(0, 10),
                _ => (ulong)rng.NextInt64(),
            };
            parts.Add(new PageServerIov((flags << 16) | command, nr, vaddr, dst).ToBytes());
            if ((flags & 4) != 0 && nr < 8)
            {
                parts.Add(PatternPages(vaddr, (int)nr)[..(rng.Next(2) == 0 ? (int)nr * Page : rng.Next(0, ((int)nr * Page) + 1))]);
            }
        }

        if (rng.Next(2) == 0)
        {
            parts.Add(Close());
        }

        return Concat([.. parts]);
    }

    private static byte[] Mutate(Random rng, byte[] bytes)
    {
        var list = new List<byte>(bytes);
        int mutations = rng.Next(1, 4);
        for (int m = 0; m < mutations; m++)
        {
            if (list.Count == 0)
            {
                list.AddRange(RandomBytes(rng, rng.Next(1, 40)));
                continue;
            }

            int at = rng.Next(list.Count);
            switch (rng.Next(6))
            {
                case 0:
                    list[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    list[at] = (byte)rng.Next(256);
                    break;
                case 2:
                    list.RemoveRange(at, Math.Min(list.Count - at, rng.Next(1, 40)));
                    break;
                case 3:
                    list.InsertRange(at, RandomBytes(rng, rng.Next(1, 40)));
                    break;
                case 4:
                    // An 8-byte field at a header-aligned offset replaced by an edge value (often nr_pages, vaddr or dst_id).
                    int field = (at / PageServerIov.Size * PageServerIov.Size) + (8 * rng.Next(1, 4));
                    if (field + 8 <= list.Count)
                    {
                        var value = new byte[8];
                        BinaryPrimitives.WriteUInt64LittleEndian(value, rng.Next(2) == 0 ? Counts[rng.Next(Counts.Length)] : Addresses[rng.Next(Addresses.Length)]);
                        for (int i = 0; i < 8; i++)
                        {
                            list[field + i] = value[i];
                        }
                    }

                    break;
                default:
                    list.InsertRange(at, list.GetRange(at, Math.Min(list.Count - at, rng.Next(1, 64))));
                    break;
            }
        }

        return [.. list];
    }

    private static byte[] Truncate(Random rng, byte[] bytes) => bytes[..rng.Next(0, bytes.Length)];

    private static byte[] RandomBytes(Random rng, int length)
    {
        var bytes = new byte[length];
        rng.NextBytes(bytes);
        return bytes;
    }
}

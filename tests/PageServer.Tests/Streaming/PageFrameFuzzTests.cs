using System.Buffers;
using System.Buffers.Binary;
using Migration.Engine.Images;
using Migration.PageServer.Pages;
using Migration.PageServer.Streaming;
using Xunit;
using Xunit.Sdk;
using static Migration.PageServer.Tests.Streaming.Frames;

namespace Migration.PageServer.Tests.Streaming;

/// <summary>
/// Valid frames, mutated at random (bit flips, bytes, length fields, truncation, insertion, deletion, duplication):
/// the reader returns an outcome for every input, never throws, and every batch it decodes is one that was sent,
/// byte for byte, at the address and target it was sent to.
/// </summary>
public class PageFrameFuzzTests
{
    private const int Iterations = 6000;

    private static readonly PageTarget Shmem7 = new(7, PageImageType.Shmem);

    private readonly record struct Run(PageTarget Target, ulong Vaddr, uint NrPages, PagemapFlags Flags);

    [Fact]
    public void RandomMutations_AreRefusedOrDecodeToPagesThatWereSent()
    {
        var sent = new Dictionary<Run, byte[]>();
        var frames = new List<byte[]>();
        void Pages(PageTarget target, ulong vaddr, PagemapFlags flags, byte[] pages)
        {
            frames.Add(Write(w => w.WritePages(target, vaddr, flags, pages)));
            sent.Add(new Run(target, vaddr, (uint)(pages.Length / PageSize), flags), pages);
        }

        void Hole(PageTarget target, ulong vaddr, uint nr, PagemapFlags flags)
        {
            frames.Add(Write(w => w.WriteRun(target, vaddr, nr, flags)));
            sent.Add(new Run(target, vaddr, nr, flags), []);
        }

        frames.Add(Write(w => w.WriteHello("fuzz-migration")));
        frames.Add(Write(w => w.WriteOpen(Pid42)));
        Pages(Pid42, 0x10000, PagemapFlags.Present, PageData.Text(3, seed: 1));
        Pages(Pid42, 0x20000, PagemapFlags.Present, PageData.Mixed("tzrzo", seed: 2));
        Pages(Pid42, 0x30000, PagemapFlags.Present, PageData.Random(2, seed: 3));
        Pages(Pid42, 0x40000, PagemapFlags.Present, PageData.Zero(4));
        Pages(Shmem7, 0x10000, PagemapFlags.Present | PagemapFlags.Lazy, PageData.Mixed("ozttzzzzzt", seed: 4));
        Pages(Pid42, 0x7fff_0000_0000, PagemapFlags.Present, PageData.Text(20, seed: 5));
        Hole(Pid42, 0x50000, 9, PagemapFlags.Parent);
        Hole(Shmem7, 0x60000, 1, PagemapFlags.Lazy);
        frames.Add(Write(w => w.WriteRoundEnd(1)));
        frames.Add(Write(w => w.WriteRoundAck(1)));
        frames.Add(Write(w => w.WriteError("source gave up")));
        frames.Add(Write(w => w.WriteEnd()));

        var random = new Random(0x5eed);
        var tally = new Dictionary<string, int>();
        for (int iteration = 0; iteration < Iterations; iteration++)
        {
            int first = random.Next(frames.Count);
            int count = random.Next(1, 4);
            byte[] input = [.. frames.Skip(first).Take(count).SelectMany(f => f)];
            var (mutated, what) = Mutate(input, random);
            var buffer = random.Next(3) == 0 ? Segment.Random(mutated, random, 700) : new ReadOnlySequence<byte>(mutated);
            try
            {
                string outcome = ReadEverything(buffer, sent);
                tally[outcome] = tally.GetValueOrDefault(outcome) + 1;
            }
            catch (Exception e) when (e is not XunitException)
            {
                Assert.Fail($"iteration {iteration} ({what} of frames {first}..{first + count - 1}): {e}");
            }
            catch (XunitException e)
            {
                throw new XunitException($"iteration {iteration} ({what} of frames {first}..{first + count - 1}): {e.Message}");
            }
        }

        // The mutations must reach every kind of refusal, not only the magic check.
        string summary = string.Join(", ", tally.OrderBy(t => t.Key).Select(t => $"{t.Key} {t.Value}"));
        foreach (var code in new[]
        {
            PageStreamErrorCode.BadMagic, PageStreamErrorCode.BadBodyLength, PageStreamErrorCode.BadTarget, PageStreamErrorCode.BadFlags,
            PageStreamErrorCode.BadRange, PageStreamErrorCode.LengthMismatch, PageStreamErrorCode.ChecksumMismatch,
            PageStreamErrorCode.BadCompressedData, PageStreamErrorCode.UnknownKind,
        })
        {
            Assert.True(tally.ContainsKey(code.ToString()), $"no mutation was refused with {code}: {summary}");
        }

        Assert.True(tally.GetValueOrDefault("Incomplete") > Iterations / 20, summary);
    }

    /// <summary>Reads and decodes until the reader stops; returns how it stopped.</summary>
    private static string ReadEverything(ReadOnlySequence<byte> buffer, Dictionary<Run, byte[]> sent)
    {
        while (true)
        {
            var before = buffer;
            var status = PageFrameReader.TryReadFrame(ref buffer, out var frame, out var error);
            if (status != PageFrameStatus.Complete)
            {
                Assert.Equal(before.Start, buffer.Start);
                Assert.Equal(before.End, buffer.End);
                Assert.Equal(status == PageFrameStatus.Invalid, error.IsError);
                if (status == PageFrameStatus.Incomplete)
                {
                    return "Incomplete";
                }

                Assert.False(string.IsNullOrWhiteSpace(error.Message));
                return error.Code.ToString();
            }

            Assert.False(error.IsError);
            Assert.Equal(before.Length - buffer.Length, frame.Length);
            if (frame.Kind != PageFrameKind.Batch)
            {
                continue;
            }

            var decoded = new byte[frame.DecodedLength];
            if (!PageFrameReader.TryDecodeBatch(frame, decoded, out error))
            {
                Assert.True(error.IsError);
                Assert.True(Array.TrueForAll(decoded, b => b == 0), "a refused batch left bytes behind");
                return error.Code.ToString();
            }

            var run = new Run(frame.Target, frame.Vaddr, frame.NrPages, frame.Flags);
            Assert.True(sent.TryGetValue(run, out var pages), $"decoded a batch that was never sent: {frame}");
            Assert.True(decoded.AsSpan().SequenceEqual(pages), $"decoded wrong pages for {frame}");
        }
    }

    private static (byte[] Bytes, string What) Mutate(byte[] input, Random random)
    {
        var bytes = input;
        var what = new List<string>();
        int mutations = random.Next(1, 4);
        for (int m = 0; m < mutations && bytes.Length > 0; m++)
        {
            int at = random.Next(bytes.Length);
            switch (random.Next(9))
            {
                case 0:
                case 1:
                    bytes = (byte[])bytes.Clone();
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    what.Add($"flip bit at {at}");
                    break;
                case 2:
                    bytes = (byte[])bytes.Clone();
                    bytes[at] = (byte)random.Next(256);
                    what.Add($"byte at {at}");
                    break;
                case 3:
                    {
                        // A 32-bit field: a frame's body length (offset 8), or a batch's nr_pages, payload or
                        // uncompressed length, to an edge value or a near miss.
                        bytes = (byte[])bytes.Clone();
                        int field = Math.Min(at, bytes.Length - 4);
                        if (field < 0)
                        {
                            break;
                        }

                        field = random.Next(2) == 0 ? Math.Min(8, field) : field;
                        uint old = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(field));
                        uint value = random.Next(6) switch
                        {
                            0 => 0,
                            1 => uint.MaxValue,
                            2 => old + 1,
                            3 => old - 1,
                            4 => (uint)random.Next(),
                            _ => old + (uint)random.Next(-4096, 4096),
                        };
                        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(field), value);
                        what.Add($"u32 at {field} {old} -> {value}");
                        break;
                    }

                case 4:
                    bytes = bytes[..at];
                    what.Add($"truncate to {at}");
                    break;
                case 5:
                    {
                        var insert = new byte[random.Next(1, 17)];
                        random.NextBytes(insert);
                        bytes = [.. bytes[..at], .. insert, .. bytes[at..]];
                        what.Add($"insert {insert.Length} at {at}");
                        break;
                    }

                case 6:
                    {
                        int n = Math.Min(random.Next(1, 65), bytes.Length - at);
                        bytes = [.. bytes[..at], .. bytes[(at + n)..]];
                        what.Add($"delete {n} at {at}");
                        break;
                    }

                case 7:
                    {
                        int n = Math.Min(random.Next(1, 65), bytes.Length - at);
                        bytes = [.. bytes[..(at + n)], .. bytes[at..]];
                        what.Add($"duplicate {n} at {at}");
                        break;
                    }

                default:
                    {
                        bytes = (byte[])bytes.Clone();
                        int other = random.Next(bytes.Length);
                        (bytes[at], bytes[other]) = (bytes[other], bytes[at]);
                        what.Add($"swap {at} and {other}");
                        break;
                    }
            }
        }

        return (bytes, string.Join("; ", what));
    }
}

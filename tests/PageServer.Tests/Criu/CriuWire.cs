using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Migration.Engine.Images;
using Migration.PageServer.Criu;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Tests.Criu;

/// <summary>Builds what CRIU would put on the wire, and the page contents the tests check.</summary>
public static class CriuWire
{
    public const int Page = PageFacts.PageSize;

    public static PageTarget Pid(uint id) => new(id, PageImageType.Pid);

    public static PageTarget Shmem(uint id) => new(id, PageImageType.Shmem);

    public static byte[] Header(ushort command, PagemapFlags flags, ulong nrPages, ulong vaddr, ulong dstId)
    {
        var bytes = new byte[PageServerIov.Size];
        PageServerIov.Create(command, flags, nrPages, vaddr, dstId).Write(bytes);
        return bytes;
    }

    public static byte[] Open2(PageTarget t) => Header(PageServerCommand.Open2, 0, 0, 0, t.DstId);

    public static byte[] Open(PageTarget t) => Header(PageServerCommand.Open, 0, 0, 0, t.DstId);

    public static byte[] Parent(PageTarget t) => Header(PageServerCommand.Parent, 0, 0, 0, t.DstId);

    public static byte[] Close() => Header(PageServerCommand.Close, 0, 0, 0, 0);

    public static byte[] ForceClose() => Header(PageServerCommand.ForceClose, 0, 0, 0, 0);

    /// <summary>ADD_F with flags; with PE_PRESENT the pattern data of the pages follows.</summary>
    public static byte[] AddF(PageTarget t, ulong vaddr, ulong nrPages, PagemapFlags flags) =>
        [.. Header(PageServerCommand.AddF, flags, nrPages, vaddr, t.DstId), .. (flags & PagemapFlags.Present) != 0 ? PatternPages(vaddr, (int)nrPages) : []];

    public static byte[] Get(uint vpid, ulong vaddr, ulong nrPages) => Header(PageServerCommand.Get, 0, nrPages, vaddr, vpid);

    public static byte[] Int32(int value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, value);
        return bytes;
    }

    /// <summary>Test page content: every 8-byte word holds its own address (little-endian), so any misplaced byte shows.</summary>
    public static byte[] PatternPages(ulong vaddr, int nrPages)
    {
        var bytes = new byte[nrPages * Page];
        FillPattern(vaddr, bytes);
        return bytes;
    }

    public static void FillPattern(ulong vaddr, Span<byte> destination)
    {
        for (int o = 0; o + 8 <= destination.Length; o += 8)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(destination[o..], vaddr + (ulong)o);
        }
    }

    /// <summary>Does <paramref name="data"/> hold the pattern of the pages from <paramref name="vaddr"/>?</summary>
    public static bool HasPattern(ulong vaddr, ReadOnlySequence<byte> data)
    {
        if (data.Length % 8 != 0)
        {
            return false;
        }

        Span<byte> page = stackalloc byte[Page];
        ulong address = vaddr;
        while (!data.IsEmpty)
        {
            int n = (int)Math.Min(Page, data.Length);
            var piece = data.Slice(0, n);
            ReadOnlySpan<byte> bytes = piece.IsSingleSegment ? piece.FirstSpan : CopyTo(piece, page[..n]);
            var words = MemoryMarshal.Cast<byte, ulong>(bytes); // little-endian host, as the pattern
            for (int i = 0; i < words.Length; i++)
            {
                if (words[i] != address + ((ulong)i * 8))
                {
                    return false;
                }
            }

            address += (ulong)n;
            data = data.Slice(n);
        }

        return true;
    }

    private static ReadOnlySpan<byte> CopyTo(ReadOnlySequence<byte> source, Span<byte> destination)
    {
        source.CopyTo(destination);
        return destination;
    }

    public static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];
}

/// <summary>
/// An in-memory connection: the test plays CRIU on one end, the session sits on the other. By default neither
/// direction pauses its writer, so a test can write a whole stream before the session runs.
/// </summary>
public sealed class InMemoryConnection
{
    public InMemoryConnection(PipeOptions? toServer = null)
    {
        ToServer = new Pipe(toServer ?? new PipeOptions(pauseWriterThreshold: 0, resumeWriterThreshold: 0, useSynchronizationContext: false));
        FromServer = new Pipe(new PipeOptions(pauseWriterThreshold: 0, resumeWriterThreshold: 0, useSynchronizationContext: false));
        ServerSide = new Duplex(ToServer.Reader, FromServer.Writer);
    }

    public Pipe ToServer { get; }

    public Pipe FromServer { get; }

    public IDuplexPipe ServerSide { get; }

    /// <summary>Writes <paramref name="bytes"/> as CRIU would and ends the stream.</summary>
    public async Task SendAndEndAsync(byte[] bytes)
    {
        await ToServer.Writer.WriteAsync(bytes);
        await ToServer.Writer.CompleteAsync();
    }

    /// <summary>Everything the session answered (call once the session has ended).</summary>
    public async Task<byte[]> RepliesAsync()
    {
        await FromServer.Writer.CompleteAsync();
        var all = new List<byte>();
        while (true)
        {
            var read = await FromServer.Reader.ReadAsync();
            all.AddRange(read.Buffer.ToArray());
            FromServer.Reader.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                return [.. all];
            }
        }
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}

/// <summary>Every await in a test has a timeout, and the failure says what hung.</summary>
public static class Within
{
    public static readonly TimeSpan Default = TimeSpan.FromSeconds(30);

    public static async Task<T> Await<T>(Task<T> task, string what, TimeSpan? timeout = null)
    {
        try
        {
            return await task.WaitAsync(timeout ?? Default);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"timed out after {timeout ?? Default} waiting for {what}", ex);
        }
    }

    public static async Task Await(Task task, string what, TimeSpan? timeout = null)
    {
        try
        {
            await task.WaitAsync(timeout ?? Default);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"timed out after {timeout ?? Default} waiting for {what}", ex);
        }
    }
}

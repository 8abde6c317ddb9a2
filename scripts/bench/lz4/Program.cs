// LZ4 block compression on one core: K4os.Compression.LZ4 (managed) against the system liblz4 (P/Invoke), in the same
// run, on the page stream's batches (PageStreamProtocol.MaxBatchPages = 256 pages of 4 KiB, 1 MiB). Run it through
// scripts/bench/lz4.sh, which pins it to one CPU. Nothing here is a test: it measures, but it checks every round trip
// (and that each library decodes the other's blocks) so that it cannot report the speed of a wrong answer.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using K4os.Compression.LZ4;

namespace Lz4Bench;

internal static class Program
{
    internal const int PageSize = 4096;
    internal const int BatchPages = 256;

    private static int Main()
    {
        int batches = Env("LZ4BENCH_BATCHES", 8);
        int reps = Env("LZ4BENCH_REPS", 5);
        double seconds = Env("LZ4BENCH_SECONDS", 0.25);
        string cpus = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal))?
            .Split(':')[1].Trim() ?? "?";
        Console.WriteLine($"lz4bench: {batches} distinct batches of {BatchPages} x {PageSize} B per mix, {reps} repetitions of >= {seconds:0.00} s per cell, "
            + $"CPUs allowed: {cpus} (Environment.ProcessorCount {Environment.ProcessorCount}), .NET {Environment.Version}");
        if (Environment.ProcessorCount != 1)
        {
            Console.WriteLine("warning: not pinned to one CPU (run it through scripts/bench/lz4.sh, or taskset -c 0)");
        }

        int version = Native.LZ4_versionNumber();
        Console.WriteLine($"liblz4 {version / 10000}.{version / 100 % 100}.{version % 100} ({Native.Library}); "
            + $"K4os.Compression.LZ4 {typeof(LZ4Codec).Assembly.GetName().Version} (Enforce32 {LZ4Codec.Enforce32})");

        var codecs = new ICodec[] { new NativeCodec(1), new K4osCodec(), new NativeCodec(8) };
        var mixes = new (string Name, int Seed, Func<Random, byte[]> Batch)[]
        {
            ("typical", 1, Pages.Typical),
            ("random", 2, r => Pages.Batch(r, Pages.Random)),
            ("text", 3, r => Pages.Batch(r, Pages.Text)),
            ("mostly-zero", 4, r => Pages.Batch(r, Pages.MostlyZero)),
        };

        var rows = new List<Row>();
        var total = Stopwatch.StartNew();
        foreach (var (name, seed, make) in mixes)
        {
            var random = new Random(seed);
            var original = Enumerable.Range(0, batches).Select(_ => make(random)).ToArray();
            var cells = codecs.Select(c => new Cell(c, original)).ToArray();
            foreach (var cell in cells)
            {
                cell.Verify(codecs);
            }

            // Warm-up: every codec's both loops long enough for the JIT's tiers (and PGO) to settle.
            Measure(cells, c => c.CompressPass(), 0.3);
            Measure(cells, c => c.DecompressPass(), 0.3);

            for (int rep = 0; rep < reps; rep++)
            {
                foreach (var (cell, rate) in cells.Zip(Measure(cells, c => c.CompressPass(), seconds)))
                {
                    cell.CheckCompressed();
                    cell.CompressRates.Add(rate);
                }

                foreach (var (cell, rate) in cells.Zip(Measure(cells, c => c.DecompressPass(), seconds)))
                {
                    cell.CheckDecompressed();
                    cell.DecompressRates.Add(rate);
                }
            }

            rows.AddRange(cells.Select(c => new Row(name, c.Codec.Name, c.Ratio, c.CompressRates, c.DecompressRates)));
        }

        Print(rows, codecs[0].Name, codecs[1].Name);
        Console.WriteLine($"total {total.Elapsed.TotalSeconds:0.0} s; round trips and cross-decoding verified for every batch of every cell");
        return 0;
    }

    /// <summary>
    /// MB/s of each cell's <paramref name="pass"/>, by the CPU time of this thread, over at least <paramref name="seconds"/>
    /// of it each. The cells take turns pass by pass (a pass is every batch once, milliseconds), so that whatever else the
    /// machine runs weighs on all of them alike; and CPU time leaves out the time others had the core.
    /// </summary>
    private static double[] Measure(Cell[] cells, Func<Cell, long> pass, double seconds)
    {
        var bytes = new long[cells.Length];
        var cpu = new double[cells.Length];
        long wallStart = Stopwatch.GetTimestamp();
        double cpuTotal = 0;
        bool more = true;
        while (more)
        {
            more = false;
            for (int i = 0; i < cells.Length; i++)
            {
                if (cpu[i] >= seconds)
                {
                    continue;
                }

                double t0 = ThreadCpu.Seconds();
                bytes[i] += pass(cells[i]);
                double t = ThreadCpu.Seconds() - t0;
                cpu[i] += t;
                cpuTotal += t;
                more |= cpu[i] < seconds;
            }
        }

        double wall = Stopwatch.GetElapsedTime(wallStart).TotalSeconds;
        s_cpuSeconds += cpuTotal;
        s_wallSeconds += wall;
        return [.. bytes.Zip(cpu, (b, c) => b / c / 1e6)];
    }

    private static double s_cpuSeconds, s_wallSeconds;

    private static void Print(List<Row> rows, string baseline, string candidate)
    {
        Console.WriteLine();
        Console.WriteLine("MB/s = 10^6 bytes of uncompressed pages per CPU-second of the measuring thread, on one core (compress: input;");
        Console.WriteLine("decompress: output); median of the repetitions, [min-max]; ratio = uncompressed / compressed bytes.");
        Console.WriteLine($"The thread had the core {s_cpuSeconds / s_wallSeconds:P0} of the measured wall time (the rest went to other processes).");
        Console.WriteLine();
        Console.WriteLine($"| {"mix",-11} | {"codec",-17} | {"ratio",6} | {"compress MB/s",-22} | {"decompress MB/s",-22} |");
        Console.WriteLine($"|{new string('-', 13)}|{new string('-', 19)}|{new string('-', 7)}:|{new string('-', 24)}|{new string('-', 24)}|");
        foreach (var r in rows)
        {
            Console.WriteLine($"| {r.Mix,-11} | {r.Codec,-17} | {r.Ratio,6:0.00} | {Rate(r.Compress),-22} | {Rate(r.Decompress),-22} |");
        }

        Console.WriteLine();
        Console.WriteLine($"{candidate} against {baseline} (median / median - 1):");
        foreach (var mix in rows.Select(r => r.Mix).Distinct())
        {
            var b = rows.Single(r => r.Mix == mix && r.Codec == baseline);
            var c = rows.Single(r => r.Mix == mix && r.Codec == candidate);
            Console.WriteLine($"  {mix,-11}  compress {Delta(Median(c.Compress), Median(b.Compress)),7}   decompress {Delta(Median(c.Decompress), Median(b.Decompress)),7}"
                + $"   ratio {c.Ratio:0.000} vs {b.Ratio:0.000}");
        }
    }

    private static string Rate(List<double> rates) =>
        string.Create(CultureInfo.InvariantCulture, $"{Median(rates),6:0} [{rates.Min():0}-{rates.Max():0}]");

    private static string Delta(double candidate, double baseline) =>
        string.Create(CultureInfo.InvariantCulture, $"{(candidate / baseline - 1) * 100:+0.0;-0.0}%");

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static T Env<T>(string name, T fallback)
        where T : IParsable<T> =>
        T.TryParse(Environment.GetEnvironmentVariable(name), CultureInfo.InvariantCulture, out var v) ? v : fallback;

    private sealed record Row(string Mix, string Codec, double Ratio, List<double> Compress, List<double> Decompress);
}

/// <summary>One codec on one mix: its compressed batches (made once, checked) and the buffers its timed loops use.</summary>
internal sealed class Cell
{
    private readonly byte[][] _original;
    private readonly byte[][] _compressed;
    private readonly int[] _compressedLength;
    private readonly byte[][] _scratch;
    private readonly byte[][] _decompressed;

    public Cell(ICodec codec, byte[][] original)
    {
        Codec = codec;
        _original = original;
        int bound = Native.LZ4_compressBound(original[0].Length);
        if (bound != LZ4Codec.MaximumOutputSize(original[0].Length))
        {
            throw new InvalidOperationException($"compress bounds differ: liblz4 {bound}, K4os {LZ4Codec.MaximumOutputSize(original[0].Length)}");
        }

        // The destination has room for LZ4's worst case, as PageFrameWriter gives it (the faster, unchecked loop).
        _compressed = original.Select(_ => new byte[bound]).ToArray();
        _scratch = original.Select(_ => new byte[bound]).ToArray();
        _decompressed = original.Select(o => new byte[o.Length]).ToArray();
        _compressedLength = new int[original.Length];
        for (int i = 0; i < original.Length; i++)
        {
            _compressedLength[i] = codec.Compress(original[i], _compressed[i]);
            if (_compressedLength[i] <= 0)
            {
                throw new InvalidOperationException($"{codec.Name} failed to compress batch {i}");
            }
        }

        Ratio = (double)original.Sum(o => (long)o.Length) / _compressedLength.Sum(n => (long)n);
    }

    public ICodec Codec { get; }

    public double Ratio { get; }

    public List<double> CompressRates { get; } = [];

    public List<double> DecompressRates { get; } = [];

    /// <summary>Every batch decodes back to its original, with every codec's decoder (the block format is one).</summary>
    public void Verify(IEnumerable<ICodec> decoders)
    {
        foreach (var decoder in decoders)
        {
            for (int i = 0; i < _original.Length; i++)
            {
                Array.Clear(_decompressed[i]);
                int n = decoder.Decompress(_compressed[i].AsSpan(0, _compressedLength[i]), _decompressed[i]);
                if (n != _original[i].Length || !_decompressed[i].AsSpan().SequenceEqual(_original[i]))
                {
                    throw new InvalidOperationException($"{Codec.Name}'s batch {i} does not round-trip through {decoder.Name} ({n} bytes)");
                }
            }
        }
    }

    /// <summary>Compresses every batch once; returns the bytes it took in.</summary>
    public long CompressPass()
    {
        long bytes = 0;
        for (int i = 0; i < _original.Length; i++)
        {
            int n = Codec.Compress(_original[i], _scratch[i]);
            if (n != _compressedLength[i])
            {
                throw new InvalidOperationException($"{Codec.Name} compressed batch {i} to {n} bytes, earlier to {_compressedLength[i]}");
            }

            bytes += _original[i].Length;
        }

        return bytes;
    }

    /// <summary>The last <see cref="CompressPass"/> wrote the very blocks that <see cref="Verify"/> checked.</summary>
    public void CheckCompressed()
    {
        for (int i = 0; i < _original.Length; i++)
        {
            if (!_scratch[i].AsSpan(0, _compressedLength[i]).SequenceEqual(_compressed[i].AsSpan(0, _compressedLength[i])))
            {
                throw new InvalidOperationException($"{Codec.Name} compressed batch {i} differently from the verified block");
            }

            Array.Clear(_scratch[i]);
        }
    }

    /// <summary>Decompresses every batch once; returns the bytes it gave out.</summary>
    public long DecompressPass()
    {
        long bytes = 0;
        for (int i = 0; i < _original.Length; i++)
        {
            int n = Codec.Decompress(_compressed[i].AsSpan(0, _compressedLength[i]), _decompressed[i]);
            if (n != _original[i].Length)
            {
                throw new InvalidOperationException($"{Codec.Name} decompressed batch {i} to {n} bytes, not {_original[i].Length}");
            }

            bytes += n;
        }

        return bytes;
    }

    /// <summary>The last <see cref="DecompressPass"/> gave back the original batches.</summary>
    public void CheckDecompressed()
    {
        for (int i = 0; i < _original.Length; i++)
        {
            if (!_decompressed[i].AsSpan().SequenceEqual(_original[i]))
            {
                throw new InvalidOperationException($"{Codec.Name} decompressed batch {i} wrongly");
            }

            Array.Clear(_decompressed[i]);
        }
    }
}

internal interface ICodec
{
    string Name { get; }

    /// <summary>Compressed length, or &lt;= 0 when it did not fit.</summary>
    int Compress(ReadOnlySpan<byte> source, Span<byte> destination);

    /// <summary>Decompressed length, or &lt; 0 for a malformed block.</summary>
    int Decompress(ReadOnlySpan<byte> source, Span<byte> destination);
}

/// <summary>K4os.Compression.LZ4's block API: no acceleration in it, L00_FAST is LZ4_compress_fast at acceleration 1.</summary>
internal sealed class K4osCodec : ICodec
{
    public string Name => "K4os L00_FAST";

    public int Compress(ReadOnlySpan<byte> source, Span<byte> destination) => LZ4Codec.Encode(source, destination, LZ4Level.L00_FAST);

    public int Decompress(ReadOnlySpan<byte> source, Span<byte> destination) => LZ4Codec.Decode(source, destination);
}

internal sealed unsafe class NativeCodec(int acceleration) : ICodec
{
    public string Name => $"liblz4 fast a={acceleration}";

    public int Compress(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        fixed (byte* s = source)
        fixed (byte* d = destination)
        {
            return Native.LZ4_compress_fast(s, d, source.Length, destination.Length, acceleration);
        }
    }

    public int Decompress(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        fixed (byte* s = source)
        fixed (byte* d = destination)
        {
            return Native.LZ4_decompress_safe(s, d, source.Length, destination.Length);
        }
    }
}

/// <summary>CPU time of the calling thread (clock_gettime CLOCK_THREAD_CPUTIME_ID), nanosecond resolution.</summary>
internal static partial class ThreadCpu
{
    private const int ClockThreadCpuTime = 3;

    public static double Seconds()
    {
        if (clock_gettime(ClockThreadCpuTime, out var ts) != 0)
        {
            throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        }

        return ts.Seconds + ts.Nanoseconds * 1e-9;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", SetLastError = false)]
    private static partial int clock_gettime(int clock, out TimeSpec ts);
}

/// <summary>The benchmark's own declarations of the liblz4 entry points (lz4.h), as src/PageServer had them.</summary>
internal static unsafe partial class Native
{
    public const string Library = "liblz4.so.1";

    [LibraryImport(Library)]
    public static partial int LZ4_versionNumber();

    [LibraryImport(Library)]
    public static partial int LZ4_compressBound(int inputSize);

    [LibraryImport(Library)]
    public static partial int LZ4_compress_fast(byte* src, byte* dst, int srcSize, int dstCapacity, int acceleration);

    [LibraryImport(Library)]
    public static partial int LZ4_decompress_safe(byte* src, byte* dst, int compressedSize, int dstCapacity);
}

/// <summary>
/// Page contents. None is all zero: the page stream elides zero pages before LZ4 sees a batch, so LZ4 only ever gets
/// pages with something in them.
/// </summary>
internal static class Pages
{
    private const int PageSize = Program.PageSize;

    private static readonly string[] Words =
    [
        "the", "of", "and", "to", "in", "is", "a", "that", "for", "it", "as", "with", "was", "on", "be", "by", "at", "this", "are", "from",
        "or", "an", "have", "not", "which", "but", "all", "were", "when", "can", "there", "been", "if", "more", "will", "would", "into",
        "process", "memory", "page", "server", "client", "request", "response", "session", "user", "error", "warning", "info", "debug",
        "connection", "timeout", "retry", "cache", "buffer", "socket", "stream", "thread", "queue", "task", "handler", "config", "value",
        "string", "object", "array", "index", "table", "column", "select", "insert", "update", "delete", "where", "order", "group", "count",
        "null", "true", "false", "id", "name", "type", "status", "message", "path", "file", "directory", "http", "json", "key", "token",
        "checkpoint", "restore", "migration", "kernel", "vaddr", "pagemap", "lazy", "parent", "child", "signal", "exit", "start", "stop",
        "GetValue", "SetValue", "ToString", "Dispose", "CancellationToken", "HttpClient", "ILogger", "System.Collections.Generic",
    ];

    /// <summary>Typical heap: per batch a quarter random, a quarter text-like, half sparse structured, shuffled.</summary>
    public static byte[] Typical(Random random)
    {
        var kinds = new Action<Random, Span<byte>>[Program.BatchPages];
        for (int i = 0; i < kinds.Length; i++)
        {
            kinds[i] = i < kinds.Length / 4 ? Random : i < kinds.Length / 2 ? Text : Structured;
        }

        random.Shuffle(kinds);
        var batch = new byte[kinds.Length * PageSize];
        for (int i = 0; i < kinds.Length; i++)
        {
            kinds[i](random, batch.AsSpan(i * PageSize, PageSize));
        }

        return batch;
    }

    public static byte[] Batch(Random random, Action<Random, Span<byte>> page)
    {
        var batch = new byte[Program.BatchPages * PageSize];
        for (int i = 0; i < Program.BatchPages; i++)
        {
            page(random, batch.AsSpan(i * PageSize, PageSize));
        }

        return batch;
    }

    /// <summary>Encrypted, compressed or hashed data: incompressible.</summary>
    public static void Random(Random random, Span<byte> page) => random.NextBytes(page);

    /// <summary>
    /// Strings as a process holds them: log lines from a few templates, JSON records, prose; words of a small vocabulary
    /// (frequent ones more often), numbers that vary. A page starts anywhere in that text.
    /// </summary>
    public static void Text(Random random, Span<byte> page)
    {
        var sb = new StringBuilder(page.Length + 256);
        while (sb.Length < page.Length + random.Next(200))
        {
            switch (random.Next(3))
            {
                case 0:
                    sb.Append(CultureInfo.InvariantCulture, $"2025-03-{1 + random.Next(28):00}T{random.Next(24):00}:{random.Next(60):00}:{random.Next(60):00}.{random.Next(1000):000}Z ")
                        .Append(Levels[random.Next(Levels.Length)]).Append(" [").Append(Word(random)).Append('-').Append(random.Next(16)).Append("] ")
                        .Append(CultureInfo.InvariantCulture, $"{Word(random)} {random.Next(100_000)} {Word(random)} in {random.Next(2000)} ms\n");
                    break;
                case 1:
                    sb.Append(CultureInfo.InvariantCulture, $"{{\"id\": {random.Next(1_000_000)}, \"name\": \"{Word(random)}\", \"status\": \"{Word(random)}\", ")
                        .Append(CultureInfo.InvariantCulture, $"\"path\": \"/{Word(random)}/{Word(random)}\", \"count\": {random.Next(100)}}}\n");
                    break;
                default:
                    for (int n = 6 + random.Next(10); n > 0; n--)
                    {
                        sb.Append(Word(random)).Append(n == 1 ? ".\n" : random.Next(8) == 0 ? ", " : " ");
                    }

                    break;
            }
        }

        int skip = random.Next(sb.Length - page.Length + 1);
        for (int i = 0; i < page.Length; i++)
        {
            page[i] = (byte)sb[skip + i];
        }
    }

    private static readonly string[] Levels = ["INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"];

    private static string Word(Random random)
    {
        double r = random.NextDouble();
        return Words[(int)(r * r * Words.Length)];
    }

    /// <summary>
    /// Objects of 16 to 96 bytes, 8-aligned: a type pointer from a few, a small int field, references into a 64 MiB
    /// heap or null, zeros elsewhere; some objects freed (zero). Mostly zero bytes, pointers sharing their high bytes.
    /// </summary>
    public static void Structured(Random random, Span<byte> page)
    {
        page.Clear();
        const ulong Types = 0x0000_7f3a_1c40_0000, Heap = 0x0000_7f39_0000_0000;
        var words = MemoryMarshal.Cast<byte, ulong>(page);
        int at = 0;
        while (at < words.Length)
        {
            int size = 2 + random.Next(11);
            if (random.Next(10) >= 3 && at + 2 <= words.Length)
            {
                words[at] = Types + (ulong)random.Next(12) * 0x48;
                words[at + 1] = (ulong)random.Next(random.Next(2) == 0 ? 16 : 4096);
                for (int w = at + 2; w < Math.Min(at + size, words.Length); w++)
                {
                    int k = random.Next(10);
                    words[w] = k < 4 ? 0 : k < 7 ? Heap + ((ulong)random.Next(1 << 23) << 3) : (ulong)random.Next(1000);
                }
            }

            at += size;
        }

        words[0] |= 1; // never all zero
    }

    /// <summary>Zero pages but for one to eight 8-byte values at random places (a touched, then mostly unused page).</summary>
    public static void MostlyZero(Random random, Span<byte> page)
    {
        page.Clear();
        var words = MemoryMarshal.Cast<byte, ulong>(page);
        int n = 1 + random.Next(8);
        for (int i = 0; i < n; i++)
        {
            words[random.Next(words.Length)] = (ulong)random.NextInt64() | 1;
        }
    }
}

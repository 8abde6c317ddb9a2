using System.Text;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Tests.Streaming;

/// <summary>Page contents with known compressibility.</summary>
internal static class PageData
{
    public const int PageSize = PageFacts.PageSize;

    private static readonly string[] Words =
    [
        "migration", "page", "server", "checkpoint", "restore", "process", "memory", "socket", "kernel", "the",
        "a", "of", "to", "and", "in", "is", "stream", "batch", "vaddr", "pagemap", "image", "lazy", "parent",
    ];

    public static byte[] Zero(int pages) => new byte[pages * PageSize];

    /// <summary>Words and numbers, like heap strings and logs: LZ4 shrinks it several times.</summary>
    public static byte[] Text(int pages, int seed)
    {
        var random = new Random(seed);
        var sb = new StringBuilder(pages * PageSize);
        while (sb.Length < pages * PageSize)
        {
            sb.Append(Words[random.Next(Words.Length)]).Append(random.Next(4) == 0 ? random.Next(1000).ToString("D3", null) : "").Append(' ');
        }

        return Encoding.ASCII.GetBytes(sb.ToString(0, pages * PageSize));
    }

    /// <summary>Uniform random bytes (encrypted or already compressed data): LZ4 cannot shrink it.</summary>
    public static byte[] Random(int pages, int seed)
    {
        var data = new byte[pages * PageSize];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>Pages by pattern: 'z' zero, 't' text, 'r' random, 'o' zero but for one byte at its end.</summary>
    public static byte[] Mixed(string pattern, int seed)
    {
        var data = new byte[pattern.Length * PageSize];
        for (int i = 0; i < pattern.Length; i++)
        {
            var page = data.AsSpan(i * PageSize, PageSize);
            switch (pattern[i])
            {
                case 't':
                    Text(1, seed + i).CopyTo(page);
                    break;
                case 'r':
                    Random(1, seed + i).CopyTo(page);
                    break;
                case 'o':
                    page[^1] = 1;
                    break;
            }
        }

        return data;
    }
}

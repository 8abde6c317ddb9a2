using Microsoft.Win32.SafeHandles;
using Migration.Engine.Images;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// The pages of composed images read back by address, as <c>criu lazy-pages</c> asks for them: per task its
/// <c>pagemap-VPID.img</c> and <c>pages-N.img</c> in the images directory, and through its <c>parent</c> link the parent
/// image's (pages marked parent, or lazy without present, are there). What the lazy fill serves from when it must not
/// depend on the agent process that holds the <see cref="PageStore"/> (ARCHITECTURE.md, step 8). Everything is read
/// from files and validated: runs ascending, present runs inside their pages file, at most
/// <see cref="MaxParentDepth"/> parents. A task's images are opened at its first read and kept open (the fill owns the
/// directory until it ends). Not thread-safe: one session reads it.
/// </summary>
public sealed class ImagePageSource(string imagesDir) : IPageSource, IDisposable
{
    /// <summary>Our parent images have no parent of their own; CRIU's pre-dump chains are short. More is refused.</summary>
    public const int MaxParentDepth = 8;

    /// <summary>CRIU's name of the link to the parent image directory (criu/include/image.h CR_PARENT_LINK).</summary>
    public const string ParentLink = "parent";

    private const int PageSize = PageFacts.PageSize;

    private readonly string _dir = Path.GetFullPath(imagesDir);
    private readonly Dictionary<uint, Layer?> _tasks = [];
    private long _pagesRead;

    /// <summary>Pages handed out so far (every one a page the daemon copies into the restored tree).</summary>
    public long PagesRead => Interlocked.Read(ref _pagesRead);

    /// <summary>
    /// Copies the pages of task <paramref name="target"/> from <paramref name="vaddr"/> on, up to
    /// <paramref name="nrPages"/>, into <paramref name="destination"/>; stops at the first page the images do not hold.
    /// </summary>
    /// <exception cref="InvalidDataException">An image is malformed or does not match its pages file.</exception>
    public int ReadPages(PageTarget target, ulong vaddr, int nrPages, Span<byte> destination)
    {
        if (target.Type != PageImageType.Pid || nrPages <= 0 || vaddr % PageSize != 0 || destination.Length < nrPages * PageSize)
        {
            return 0;
        }

        if (!_tasks.TryGetValue(target.Id, out var layer))
        {
            layer = Layer.Open(_dir, target.Id, 0);
            _tasks[target.Id] = layer;
        }

        int got = layer?.Read(vaddr, nrPages, destination) ?? 0;
        Interlocked.Add(ref _pagesRead, got);
        return got;
    }

    /// <summary>Lazy pages (flag lazy) in the pagemaps of the images directory: what the fill has to bring, in all.</summary>
    public static long CountLazyPages(string imagesDir)
    {
        long pages = 0;
        foreach (var path in Directory.EnumerateFiles(imagesDir, "pagemap-*.img"))
        {
            var name = Path.GetFileName(path);
            if (name.StartsWith("pagemap-shmem-", StringComparison.Ordinal))
            {
                continue;
            }

            using var fs = File.OpenRead(path);
            pages += (long)PagemapImage.Read(fs, name).Runs.Where(r => (r.Flags & PagemapFlags.Lazy) != 0).Aggregate(0UL, (a, r) => a + r.NrPages);
        }

        return pages;
    }

    public void Dispose()
    {
        foreach (var layer in _tasks.Values)
        {
            layer?.Dispose();
        }

        _tasks.Clear();
    }

    /// <summary>One task's pagemap and pages file in one image directory, and its parent's.</summary>
    private sealed class Layer : IDisposable
    {
        private readonly PagemapRun[] _runs;
        private readonly long[] _fileOffsets; // per run: byte offset of its data in the pages file; -1 when not present
        private readonly SafeFileHandle? _pages;
        private readonly Layer? _parent;

        private Layer(PagemapRun[] runs, long[] fileOffsets, SafeFileHandle? pages, Layer? parent)
        {
            _runs = runs;
            _fileOffsets = fileOffsets;
            _pages = pages;
            _parent = parent;
        }

        /// <summary>The task's layer in <paramref name="dir"/>; null when the directory has no pagemap for it.</summary>
        public static Layer? Open(string dir, uint vpid, int depth)
        {
            var pagemapPath = Path.Combine(dir, $"pagemap-{vpid}.img");
            if (!File.Exists(pagemapPath))
            {
                return null;
            }

            PagemapImage map;
            using (var fs = File.OpenRead(pagemapPath))
            {
                map = PagemapImage.Read(fs, pagemapPath);
            }

            var runs = map.Runs.ToArray();
            var offsets = new long[runs.Length];
            long next = 0;
            bool needsParent = false;
            for (int i = 0; i < runs.Length; i++)
            {
                if ((runs[i].Flags & PagemapFlags.Present) != 0)
                {
                    offsets[i] = next;
                    next += (long)runs[i].NrPages * PageSize;
                }
                else
                {
                    offsets[i] = -1;
                    needsParent = true;
                }
            }

            SafeFileHandle? pages = null;
            Layer? parent = null;
            try
            {
                if (next > 0)
                {
                    var pagesPath = Path.Combine(dir, $"pages-{map.PagesId}.img");
                    pages = File.OpenHandle(pagesPath, FileMode.Open, FileAccess.Read);
                    long length = RandomAccess.GetLength(pages);
                    if (length < next)
                    {
                        throw new InvalidDataException($"{pagesPath} holds {length} bytes, but {pagemapPath} places {next} bytes of present pages in it");
                    }
                }

                var parentDir = Path.Combine(dir, ParentLink);
                if (needsParent && Directory.Exists(parentDir))
                {
                    if (depth >= MaxParentDepth)
                    {
                        throw new InvalidDataException($"{dir}: more than {MaxParentDepth} parent images");
                    }

                    parent = Open(Path.GetFullPath(parentDir), vpid, depth + 1);
                }

                return new Layer(runs, offsets, pages, parent);
            }
            catch
            {
                pages?.Dispose();
                parent?.Dispose();
                throw;
            }
        }

        /// <summary>Copies held pages from <paramref name="vaddr"/> on (at most <paramref name="nrPages"/>); returns how many.</summary>
        public int Read(ulong vaddr, int nrPages, Span<byte> destination)
        {
            int got = 0;
            int i = Find(vaddr);
            while (got < nrPages && i >= 0 && i < _runs.Length)
            {
                var run = _runs[i];
                ulong at = vaddr + ((ulong)got * PageSize);
                ulong runEnd = run.Vaddr + (run.NrPages * PageSize);
                if (at < run.Vaddr || at >= runEnd)
                {
                    break; // a hole between runs: not held
                }

                int want = (int)Math.Min((ulong)(nrPages - got), (runEnd - at) / PageSize);
                var into = destination.Slice(got * PageSize, want * PageSize);
                int n;
                if (_fileOffsets[i] >= 0)
                {
                    ReadExactly(_fileOffsets[i] + (long)(at - run.Vaddr), into);
                    n = want;
                }
                else
                {
                    n = _parent?.Read(at, want, into) ?? 0;
                }

                got += n;
                if (n < want)
                {
                    break;
                }

                i++;
            }

            return got;
        }

        private void ReadExactly(long offset, Span<byte> into)
        {
            while (into.Length > 0)
            {
                int n = RandomAccess.Read(_pages!, into, offset);
                if (n <= 0)
                {
                    throw new InvalidDataException($"pages file ended at offset {offset} inside a present run");
                }

                into = into[n..];
                offset += n;
            }
        }

        /// <summary>Index of the run holding <paramref name="vaddr"/>, else -1.</summary>
        private int Find(ulong vaddr)
        {
            int lo = 0, hi = _runs.Length - 1;
            while (lo <= hi)
            {
                int mid = (lo + hi) >>> 1;
                var r = _runs[mid];
                if (vaddr < r.Vaddr)
                {
                    hi = mid - 1;
                }
                else if (vaddr >= r.Vaddr + (r.NrPages * PageSize))
                {
                    lo = mid + 1;
                }
                else
                {
                    return mid;
                }
            }

            return -1;
        }

        public void Dispose()
        {
            _pages?.Dispose();
            _parent?.Dispose();
        }
    }
}

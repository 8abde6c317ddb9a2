using System.Security.Cryptography;
using Migration.Engine.Images;

namespace Migration.Target.Incoming;

/// <summary>
/// The image files of one migration as they arrive in chunks: names, offsets, sizes and file count validated against
/// the agent's limits before anything touches the disk, every file hashed as it is written, and the set checked
/// against the source's manifest. Not thread-safe: its migration serializes the calls.
/// </summary>
internal sealed class ImageReceiver(string imagesDir, ulong maxBytes, TargetOptions options) : IDisposable
{
    private readonly Dictionary<string, ReceivingFile> _files = new(StringComparer.Ordinal);

    public ulong BytesReceived { get; private set; }

    public int ChunksReceived { get; private set; }

    /// <summary>Writes one chunk. Offsets must be sequential per file; a completed file takes no more data.</summary>
    public (ulong FileBytes, ulong TotalBytes) Put(string name, ulong offset, ReadOnlySpan<byte> data, bool last)
    {
        if (!ImageName.IsValid(name))
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"image name '{PeerText.Printable(name)}' is not a plain file name");
        }

        if (data.Length > options.MaxChunkBytes)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"chunk of {data.Length} bytes exceeds {options.MaxChunkBytes}");
        }

        _files.TryGetValue(name, out var file);
        if (file is { Complete: true })
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"image {name} is already complete");
        }

        // Every check before anything touches the disk: a refused chunk leaves no trace.
        ulong expected = file?.Length ?? 0;
        if (offset != expected)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, $"image {name}: chunk at offset {offset}, expected {expected}");
        }

        if (BytesReceived + (ulong)data.Length > maxBytes)
        {
            throw new TargetRequestException(TargetError.ResourceExhausted,
                $"images exceed the {maxBytes} bytes this agent can hold for one migration (free space less reserve)");
        }

        if (file is null)
        {
            if (_files.Count >= options.MaxImageFiles)
            {
                throw new TargetRequestException(TargetError.ResourceExhausted, $"more than {options.MaxImageFiles} image files");
            }

            file = new ReceivingFile(Path.Combine(imagesDir, name));
            _files.Add(name, file);
        }

        file.Write(data);
        BytesReceived += (ulong)data.Length;
        ChunksReceived++;
        if (last)
        {
            file.Finish();
        }

        return (file.Length, BytesReceived);
    }

    /// <summary>Checks that exactly the manifest's files are held, complete, with matching sizes and hashes.</summary>
    public void Verify(IReadOnlyList<ImageFileInfo> manifest)
    {
        var distinct = new HashSet<string>(manifest.Select(m => m.Name), StringComparer.Ordinal);
        if (distinct.Count != manifest.Count)
        {
            throw new TargetRequestException(TargetError.InvalidArgument, "manifest lists a file more than once");
        }

        if (manifest.Count != _files.Count)
        {
            throw new TargetRequestException(TargetError.FailedPrecondition, $"manifest lists {manifest.Count} files, {_files.Count} were received");
        }

        foreach (var m in manifest)
        {
            if (!ImageName.IsValid(m.Name) || !_files.TryGetValue(m.Name, out var f))
            {
                throw new TargetRequestException(TargetError.FailedPrecondition, $"manifest file '{PeerText.Printable(m.Name)}' was not received");
            }

            if (!f.Complete || f.Length != m.Size)
            {
                throw new TargetRequestException(TargetError.FailedPrecondition, $"image {m.Name}: {f.Length} bytes received{(f.Complete ? "" : " (incomplete)")}, manifest says {m.Size}");
            }

            if (!CryptographicOperations.FixedTimeEquals(f.Sha256, m.Sha256))
            {
                throw new TargetRequestException(TargetError.DataLoss, $"image {m.Name}: SHA-256 differs from the manifest");
            }
        }
    }

    /// <summary>Closes every file still open (the files stay where they are).</summary>
    public void Dispose()
    {
        foreach (var f in _files.Values)
        {
            f.Dispose();
        }
    }

    private sealed class ReceivingFile(string path) : IDisposable
    {
        private FileStream? _stream = new(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public ulong Length { get; private set; }

        public bool Complete { get; private set; }

        public byte[] Sha256 { get; private set; } = [];

        public void Write(ReadOnlySpan<byte> data)
        {
            _stream!.Write(data);
            _hash.AppendData(data);
            Length += (ulong)data.Length;
        }

        public void Finish()
        {
            _stream!.Flush(flushToDisk: true);
            _stream.Dispose();
            _stream = null;
            Sha256 = _hash.GetHashAndReset();
            Complete = true;
        }

        public void Dispose()
        {
            _stream?.Dispose();
            _stream = null;
            _hash.Dispose();
        }
    }
}

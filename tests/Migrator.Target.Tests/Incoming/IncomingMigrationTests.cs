using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Images;
using Migration.Target.Incoming;
using Xunit;

namespace Migration.Target.Tests.Incoming;

public sealed class IncomingMigrationTests : IDisposable
{
    private const ulong MaxBytes = 256;

    private static readonly TargetOptions s_options = new() { MaxChunkBytes = 64, MaxImageFiles = 3 };

    /// <summary>Holds the work directory and nothing else: anything else found here escaped it.</summary>
    private readonly string _root = Directory.CreateTempSubdirectory("incoming-").FullName;
    private readonly IncomingMigration _m;

    public IncomingMigrationTests()
    {
        _m = new IncomingMigration("m1", Path.Combine(_root, "m1"), MaxBytes, s_options, NullLogger.Instance);
    }

    public void Dispose()
    {
        _m.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public void New_CreatesImagesDirUnderWorkDir_AndIsReceiving()
    {
        Assert.Equal(Path.Combine(_root, "m1", "images"), _m.ImagesDir);
        Assert.True(Directory.Exists(_m.ImagesDir));
        Assert.Equal(IncomingState.Receiving, _m.State);
        Assert.Equal(MaxBytes, _m.MaxBytes);
    }

    [Fact]
    public void SequentialChunks_ProduceTheExactFile()
    {
        var r1 = _m.PutChunk("pages-1.img", 0, "hello "u8, last: false);
        var r2 = _m.PutChunk("pages-1.img", 6, "wor"u8, last: false);
        var r3 = _m.PutChunk("pages-1.img", 9, "ld"u8, last: true);

        Assert.Equal((6ul, 6ul), r1);
        Assert.Equal((9ul, 9ul), r2);
        Assert.Equal((11ul, 11ul), r3);
        Assert.Equal("hello world"u8.ToArray(), File.ReadAllBytes(Path.Combine(_m.ImagesDir, "pages-1.img")));
        Assert.Equal(11ul, _m.BytesReceived);
        Assert.Equal(3, _m.ChunksReceived);
    }

    [Fact]
    public void InterleavedFiles_KeepSeparateOffsets_AndOneTotal()
    {
        _m.PutChunk("core-1.img", 0, "ab"u8, last: false);
        _m.PutChunk("pages-1.img", 0, "xyz"u8, last: false);
        var core = _m.PutChunk("core-1.img", 2, "cd"u8, last: true);
        var pages = _m.PutChunk("pages-1.img", 3, ""u8, last: true);

        Assert.Equal((4ul, 7ul), core);
        Assert.Equal((3ul, 7ul), pages);
        Assert.Equal("abcd"u8.ToArray(), File.ReadAllBytes(Path.Combine(_m.ImagesDir, "core-1.img")));
        Assert.Equal("xyz"u8.ToArray(), File.ReadAllBytes(Path.Combine(_m.ImagesDir, "pages-1.img")));
    }

    [Fact]
    public void EmptyFile_WithOneEmptyLastChunk_IsComplete()
    {
        _m.PutChunk("stats-dump", 0, ReadOnlySpan<byte>.Empty, last: true);

        _m.VerifyManifest([Info("stats-dump", [])]);

        Assert.Equal(0, new FileInfo(Path.Combine(_m.ImagesDir, "stats-dump")).Length);
        Assert.Equal(IncomingState.Restoring, _m.State);
    }

    [Theory]
    [InlineData(4ul)] // skips a byte
    [InlineData(2ul)] // rewinds
    [InlineData(0ul)] // resends from the start
    public void WrongOffset_IsInvalidArgument_AndTheFileStaysIntact(ulong offset)
    {
        _m.PutChunk("core-1.img", 0, "abc"u8, last: false);

        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("core-1.img", offset, "zz"u8, last: false));

        Assert.Equal(TargetError.InvalidArgument, ex.Error);
        Assert.Contains("expected 3", ex.Message, StringComparison.Ordinal);
        Assert.Equal(3ul, _m.BytesReceived);
        _m.PutChunk("core-1.img", 3, "d"u8, last: true);
        Assert.Equal("abcd"u8.ToArray(), File.ReadAllBytes(Path.Combine(_m.ImagesDir, "core-1.img")));
    }

    [Fact]
    public void FirstChunkNotAtZero_IsInvalidArgument()
    {
        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("core-1.img", 5, "abc"u8, last: false));

        Assert.Equal(TargetError.InvalidArgument, ex.Error);
        Assert.Equal(0ul, _m.BytesReceived);
    }

    [Theory]
    [InlineData("../evil")]
    [InlineData("../../evil")]
    [InlineData("a/b")]
    [InlineData("")]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData(".evil")]
    [InlineData("x\0y")]
    [InlineData("evil ")]
    public void BadName_IsInvalidArgument_AndNothingIsWritten(string name)
    {
        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk(name, 0, "payload"u8, last: true));

        Assert.Equal(TargetError.InvalidArgument, ex.Error);
        AssertOnlyEmptyImagesDir();
        Assert.Equal(0, _m.ChunksReceived);
    }

    [Fact]
    public void AbsolutePathName_IsInvalidArgument_AndNoFileIsCreatedThere()
    {
        var target = Path.Combine(_root, "abs-evil");

        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk(target, 0, "payload"u8, last: true));

        Assert.Equal(TargetError.InvalidArgument, ex.Error);
        Assert.False(File.Exists(target));
        AssertOnlyEmptyImagesDir();
    }

    [Fact]
    public void BadName_MessageShowsControlCharactersAsQuestionMarks()
    {
        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("x\0\ny", 0, "p"u8, last: true));

        Assert.Contains("'x??y'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ChunkOverMaxChunkBytes_IsInvalidArgument()
    {
        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("pages-1.img", 0, new byte[s_options.MaxChunkBytes + 1], last: false));

        Assert.Equal(TargetError.InvalidArgument, ex.Error);
        Assert.Contains($"{s_options.MaxChunkBytes + 1} bytes exceeds {s_options.MaxChunkBytes}", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0ul, _m.BytesReceived);
    }

    [Fact]
    public void ChunkOfExactlyMaxChunkBytes_IsAccepted()
    {
        var r = _m.PutChunk("pages-1.img", 0, new byte[s_options.MaxChunkBytes], last: false);

        Assert.Equal((ulong)s_options.MaxChunkBytes, r.FileBytes);
    }

    [Fact]
    public void TotalOverMaxBytes_IsResourceExhausted_AndTheChunkIsNotWritten()
    {
        var chunk = new byte[s_options.MaxChunkBytes];
        _m.PutChunk("pages-1.img", 0, chunk, last: false);
        _m.PutChunk("pages-1.img", 64, chunk, last: false);
        _m.PutChunk("pages-1.img", 128, chunk, last: false);
        _m.PutChunk("core-1.img", 0, chunk.AsSpan(0, 63), last: false); // 255 of 256

        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("core-1.img", 63, "ab"u8, last: true));

        Assert.Equal(TargetError.ResourceExhausted, ex.Error);
        Assert.Equal(255ul, _m.BytesReceived);
        // Exactly up to the limit is still accepted, and the refused chunk left nothing in the file.
        Assert.Equal((64ul, MaxBytes), _m.PutChunk("core-1.img", 63, "a"u8, last: true));
        Assert.Equal([.. chunk.AsSpan(0, 63), (byte)'a'], File.ReadAllBytes(Path.Combine(_m.ImagesDir, "core-1.img")));
    }

    [Fact]
    public void MoreFilesThanMaxImageFiles_IsResourceExhausted()
    {
        for (int i = 0; i < s_options.MaxImageFiles; i++)
        {
            _m.PutChunk($"core-{i}.img", 0, "x"u8, last: false);
        }

        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("one-too-many.img", 0, "x"u8, last: true));

        Assert.Equal(TargetError.ResourceExhausted, ex.Error);
        Assert.False(File.Exists(Path.Combine(_m.ImagesDir, "one-too-many.img")));
        // Files already open still take data.
        _m.PutChunk("core-0.img", 1, "y"u8, last: true);
    }

    [Fact]
    public void ChunkForCompletedFile_IsFailedPrecondition()
    {
        _m.PutChunk("core-1.img", 0, "abc"u8, last: true);

        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("core-1.img", 3, "d"u8, last: true));

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Contains("already complete", ex.Message, StringComparison.Ordinal);
        Assert.Equal("abc"u8.ToArray(), File.ReadAllBytes(Path.Combine(_m.ImagesDir, "core-1.img")));
    }

    [Fact]
    public void VerifyManifest_Matching_MovesToRestoring_AndRefusesMoreData()
    {
        Put("core-1.img", "core data");
        Put("pages-1.img", "page data, page data");

        _m.VerifyManifest([Info("core-1.img", "core data"), Info("pages-1.img", "page data, page data")]);

        Assert.Equal(IncomingState.Restoring, _m.State);
        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("extra.img", 0, "x"u8, last: true));
        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        var again = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "core data"), Info("pages-1.img", "page data, page data")]));
        Assert.Equal(TargetError.FailedPrecondition, again.Error);
    }

    [Fact]
    public void VerifyManifest_ListsFileNotReceived_IsFailedPrecondition()
    {
        Put("core-1.img", "core");

        var ex = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "core"), Info("pages-1.img", "pages")]));

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Equal(IncomingState.Receiving, _m.State);
    }

    [Fact]
    public void VerifyManifest_OtherFileReceivedInsteadOfListedOne_IsFailedPrecondition()
    {
        Put("core-1.img", "core");
        Put("pages-2.img", "pages");

        var ex = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "core"), Info("pages-1.img", "pages")]));

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Contains("'pages-1.img' was not received", ex.Message, StringComparison.Ordinal);
        Assert.Equal(IncomingState.Receiving, _m.State);
    }

    [Fact]
    public void VerifyManifest_ExtraFileReceived_IsFailedPrecondition()
    {
        Put("core-1.img", "core");
        Put("extra.img", "extra");

        var ex = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "core")]));

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Contains("manifest lists 1 files, 2 were received", ex.Message, StringComparison.Ordinal);
        Assert.Equal(IncomingState.Receiving, _m.State);
    }

    [Fact]
    public void VerifyManifest_SizeMismatch_IsFailedPrecondition()
    {
        Put("core-1.img", "core");

        var ex = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "core") with { Size = 5 }]));

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Contains("4 bytes received, manifest says 5", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void VerifyManifest_IncompleteFile_IsFailedPrecondition_EvenWhenSizeAndHashMatch()
    {
        _m.PutChunk("core-1.img", 0, "core"u8, last: false);

        var ex = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "core")]));

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Contains("(incomplete)", ex.Message, StringComparison.Ordinal);
        Assert.Equal(IncomingState.Receiving, _m.State);
    }

    [Fact]
    public void VerifyManifest_HashMismatch_IsDataLoss()
    {
        Put("core-1.img", "core");

        var ex = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "cord")]));

        Assert.Equal(TargetError.DataLoss, ex.Error);
        Assert.Contains("core-1.img", ex.Message, StringComparison.Ordinal);
        Assert.Equal(IncomingState.Receiving, _m.State);
    }

    [Fact]
    public void VerifyManifest_HashOfChunkedFile_IsTheHashOfTheWholeFile()
    {
        _m.PutChunk("pages-1.img", 0, "abc"u8, last: false);
        _m.PutChunk("pages-1.img", 3, "def"u8, last: true);

        _m.VerifyManifest([Info("pages-1.img", "abcdef")]);

        Assert.Equal(IncomingState.Restoring, _m.State);
    }

    [Fact]
    public void VerifyManifest_DuplicateEntry_DoesNotHideAnUnverifiedFile()
    {
        Put("core-1.img", "core");
        _m.PutChunk("pages-1.img", 0, "half"u8, last: false); // incomplete, not in the manifest

        var ex = Assert.Throws<TargetRequestException>(() => _m.VerifyManifest([Info("core-1.img", "core"), Info("core-1.img", "core")]));

        Assert.Equal(TargetError.InvalidArgument, ex.Error);
        Assert.Equal(IncomingState.Receiving, _m.State);
    }

    [Fact]
    public void RefusedFirstChunk_LeavesNoFileBehind()
    {
        Assert.Throws<TargetRequestException>(() => _m.PutChunk("core-1.img", 5, "x"u8, last: true));
        Put("pages-1.img", "pages");

        Assert.False(File.Exists(Path.Combine(_m.ImagesDir, "core-1.img")));
        _m.VerifyManifest([Info("pages-1.img", "pages")]);
    }

    [Fact]
    public void Abort_BeforeRestore_RemovesImages_AndReturnsFalse()
    {
        Put("core-1.img", "core");
        _m.PutChunk("pages-1.img", 0, "open"u8, last: false); // still open for writing

        bool killed = _m.Abort("source cancelled");

        Assert.False(killed);
        Assert.Equal(IncomingState.Aborted, _m.State);
        Assert.Equal("source cancelled", _m.Error);
        Assert.False(Directory.Exists(_m.ImagesDir));
        Assert.True(Directory.Exists(_m.WorkDir));
    }

    [Fact]
    public void Abort_AfterVerify_RemovesImages()
    {
        Put("core-1.img", "core");
        _m.VerifyManifest([Info("core-1.img", "core")]);

        Assert.False(_m.Abort("restore not wanted"));

        Assert.Equal(IncomingState.Aborted, _m.State);
        Assert.False(Directory.Exists(_m.ImagesDir));
    }

    [Fact]
    public void Abort_Twice_KeepsTheFirstReason_AndRefusesData()
    {
        _m.Abort("first");
        _m.Abort("second");

        Assert.Equal("first", _m.Error);
        var ex = Assert.Throws<TargetRequestException>(() => _m.PutChunk("core-1.img", 0, "x"u8, last: true));
        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Contains("aborted", ex.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(_m.ImagesDir));
    }

    [Fact]
    public void Commit_WhenNotRestored_IsFailedPrecondition_AndChangesNothing()
    {
        Put("core-1.img", "core");

        var ex = Assert.Throws<TargetRequestException>(() => _m.Commit());

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Contains("not restored", ex.Message, StringComparison.Ordinal);
        Assert.Equal(IncomingState.Receiving, _m.State);
        Assert.True(File.Exists(Path.Combine(_m.ImagesDir, "core-1.img")));
    }

    [Fact]
    public void Commit_WhenRestoring_IsFailedPrecondition()
    {
        Put("core-1.img", "core");
        _m.VerifyManifest([Info("core-1.img", "core")]);

        var ex = Assert.Throws<TargetRequestException>(() => _m.Commit());

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
        Assert.Equal(IncomingState.Restoring, _m.State);
    }

    [Fact]
    public void Commit_AfterAbort_IsFailedPrecondition()
    {
        _m.Abort("gone");

        var ex = Assert.Throws<TargetRequestException>(() => _m.Commit());

        Assert.Equal(TargetError.FailedPrecondition, ex.Error);
    }

    private void Put(string name, string content) => _m.PutChunk(name, 0, Encoding.ASCII.GetBytes(content), last: true);

    private static ImageFileInfo Info(string name, string content) => Info(name, Encoding.ASCII.GetBytes(content));

    private static ImageFileInfo Info(string name, byte[] content) => new(name, (ulong)content.Length, SHA256.HashData(content));

    private void AssertOnlyEmptyImagesDir()
    {
        Assert.Equal([_m.WorkDir, _m.ImagesDir], Directory.EnumerateFileSystemEntries(_root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal));
    }
}

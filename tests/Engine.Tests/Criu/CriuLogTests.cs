using Migration.Engine.Criu;
using Xunit;

namespace Migration.Engine.Tests.Criu;

public sealed class CriuLogTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("criulog-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ReadErrors_ReturnsOnlyErrorLines_WithoutTimestamp()
    {
        var path = WriteLog(
            "(00.000012) Version: 4.2 (gitid 0)",
            "(00.000100) Warn  (criu/kerndat.c:1) rlimit: Can't setup RLIMIT_NOFILE",
            "(00.000200) Dumping ...",
            "(00.001234) Error (criu/cr-restore.c:1234): Can't read pstree",
            "(00.001300) Unlock network",
            "(00.002000) Error (criu/cr-restore.c:2400): Restoring FAILED.");

        var errors = CriuLog.ReadErrors(path);

        Assert.Equal(
            [
                "Error (criu/cr-restore.c:1234): Can't read pstree",
                "Error (criu/cr-restore.c:2400): Restoring FAILED.",
            ],
            errors);
    }

    [Fact]
    public void ReadErrors_FiltersTheHarmlessRlimitLine_EvenAtErrorLevel()
    {
        var path = WriteLog(
            "(00.000100) Error (criu/util.c:10): rlimit: Can't setup RLIMIT_NOFILE for self",
            "(00.000200) Error (criu/files.c:20): Can't open file");

        var errors = CriuLog.ReadErrors(path);

        Assert.Equal(["Error (criu/files.c:20): Can't open file"], errors);
    }

    [Fact]
    public void ReadErrors_IncludesWarningsThatReportAFailure()
    {
        var path = WriteLog(
            "(00.000100) Warn  (criu/net.c:5): Unable to get socket options, failed with -1",
            "(00.000200) Warn  (criu/net.c:6): skipping unsupported option");

        var errors = CriuLog.ReadErrors(path);

        Assert.Equal(["Warn  (criu/net.c:5): Unable to get socket options, failed with -1"], errors);
    }

    [Fact]
    public void ReadErrors_IncludesErrorsFromPrefixedLines()
    {
        // Lines from the restorer blob carry a "pie: PID:" prefix before the level.
        var path = WriteLog("(00.003000) pie: 7: Error (criu/pie/restorer.c:99): Unable to restore sigactions");

        var errors = CriuLog.ReadErrors(path);

        Assert.Equal(["pie: 7: Error (criu/pie/restorer.c:99): Unable to restore sigactions"], errors);
    }

    [Fact]
    public void ReadErrors_ManyErrors_KeepsTheLastMaxErrorLines()
    {
        int total = CriuLog.MaxErrorLines + 8;
        var lines = Enumerable.Range(0, total)
            .SelectMany(i => new[] { $"(00.{i:d6}) Dumping {i}", $"(00.{i:d6}) Error (criu/x.c:{i}): error number {i}" })
            .ToArray();
        var path = WriteLog(lines);

        var errors = CriuLog.ReadErrors(path);

        var expected = Enumerable.Range(total - CriuLog.MaxErrorLines, CriuLog.MaxErrorLines)
            .Select(i => $"Error (criu/x.c:{i}): error number {i}");
        Assert.Equal(expected, errors);
    }

    [Fact]
    public void ReadErrors_ExactlyMaxErrorLines_KeepsAll()
    {
        var path = WriteLog(Enumerable.Range(0, CriuLog.MaxErrorLines).Select(i => $"(00.000001) Error (criu/x.c:{i}): e{i}").ToArray());

        Assert.Equal(CriuLog.MaxErrorLines, CriuLog.ReadErrors(path).Count);
    }

    [Fact]
    public void ReadErrors_MissingFile_IsEmpty()
    {
        Assert.Empty(CriuLog.ReadErrors(Path.Combine(_dir, "no-such.log")));
    }

    [Fact]
    public void ReadErrors_NullPath_IsEmpty()
    {
        Assert.Empty(CriuLog.ReadErrors(null));
    }

    [Fact]
    public void ReadErrors_LogWithoutErrors_IsEmpty()
    {
        var path = WriteLog("(00.000200) Dumping ...", "(00.000300) Writing image inventory");

        Assert.Empty(CriuLog.ReadErrors(path));
    }

    [Theory]
    [InlineData("(00.001234) Error (criu/a.c:1): x", "Error (criu/a.c:1): x")]
    [InlineData("   (00.001234)   Dumping", "Dumping")]
    [InlineData("no timestamp here", "no timestamp here")]
    [InlineData("(unterminated", "(unterminated")]
    public void StripTimestamp_RemovesOnlyALeadingParenthesizedPrefix(string line, string expected)
    {
        Assert.Equal(expected, CriuLog.StripTimestamp(line));
    }

    private string WriteLog(params string[] lines)
    {
        var path = Path.Combine(_dir, "restore.log");
        File.WriteAllLines(path, lines);
        return path;
    }
}

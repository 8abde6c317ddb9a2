using Migration.Target.LazyFill;
using Xunit;

namespace Migration.Target.Tests.LazyFill;

/// <summary>The fill's state file is input to a restarted agent: it round-trips, and anything else is refused with the reason.</summary>
public sealed class FillStateTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fill-state-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void RoundTrips_AndIsReplacedWhole()
    {
        var state = new FillState { Phase = FillPhase.Serving, ServerPid = 10, ServerStart = 123, CriuPid = 11, TreePid = 12, TreeStart = 456, PagesFilled = 7, LazyPages = 9 };
        state.Write(_dir);
        Assert.Equal(state, FillState.Read(_dir));
        (state with { Phase = FillPhase.Failed, Error = new string('x', 10_000) }).Write(_dir);
        var back = FillState.Read(_dir)!;
        Assert.Equal(FillPhase.Failed, back.Phase);
        Assert.True(back.Ended);
        Assert.Equal(FillState.MaxErrorChars, back.Error!.Length);
        Assert.Equal(new[] { FillState.FileName }, Directory.EnumerateFiles(_dir).Select(p => Path.GetFileName(p)).ToArray());
    }

    [Fact]
    public void NoFile_IsNoFill() => Assert.Null(FillState.Read(_dir));

    [Theory]
    [InlineData("not json")]
    [InlineData("{\"phase\":\"serving\",\"serverPid\":0}")]
    [InlineData("{\"phase\":\"serving\",\"serverPid\":5,\"treePid\":6}")]
    [InlineData("{\"phase\":\"exploded\",\"serverPid\":5}")]
    [InlineData("{\"phase\":3,\"serverPid\":5}")]
    [InlineData("{\"phase\":\"serving\",\"serverPid\":5,\"pagesFilled\":-1}")]
    [InlineData("{\"phase\":\"serving\",\"serverPid\":5,\"extra\":1}")]
    [InlineData("null")]
    public void Malformed_IsRefusedSayingWhere(string text)
    {
        File.WriteAllText(Path.Combine(_dir, FillState.FileName), text);
        var ex = Assert.Throws<InvalidDataException>(() => FillState.Read(_dir));
        Assert.Contains(FillState.FileName, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Oversized_IsRefusedBeforeParsing()
    {
        File.WriteAllBytes(Path.Combine(_dir, FillState.FileName), new byte[FillState.MaxBytes + 1]);
        var ex = Assert.Throws<InvalidDataException>(() => FillState.Read(_dir));
        Assert.Contains("at most", ex.Message, StringComparison.Ordinal);
    }
}

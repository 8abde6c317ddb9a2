using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Engine.Criu;
using Migration.Engine.Security;
using Migration.Source;
using Migration.Target.Incoming;
using Migration.Target.Outgoing;
using Xunit;
using Endpoint = Migration.Engine.Network.Endpoint;

namespace Migration.Target.Tests.Outgoing;

/// <summary>
/// The agent's outgoing migrations without a target: what StartMigration refuses at once, and runs that fail (nothing
/// listens at the target) ending with their outcome in the history, which stays bounded.
/// </summary>
public sealed class OutgoingMigrationsTests : IAsyncLifetime
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(60);

    /// <summary>Nothing listens on port 1 of loopback: the preflight call is refused at once.</summary>
    private static readonly Endpoint s_nowhere = Endpoint.Parse("127.0.0.1:1");

    private readonly string _root = Directory.CreateTempSubdirectory("migrate-outgoing-").FullName;
    private readonly TokenCredentials _credentials = TokenCredentials.FromToken(Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)));
    private readonly Process _sleeper = Process.Start("sleep", "300");
    private OutgoingMigrations _outgoing = null!;

    public Task InitializeAsync()
    {
        _outgoing = new OutgoingMigrations(new CriuClient(new CriuOptions(), NullLogger<CriuClient>.Instance), _credentials,
            new TargetOptions { WorkRoot = _root }, NullLoggerFactory.Instance, TimeProvider.System);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _outgoing.DisposeAsync();
        _sleeper.Kill();
        _sleeper.Dispose();
        _credentials.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    [Theory]
    [InlineData(0, TargetError.InvalidArgument)]
    [InlineData(1, TargetError.InvalidArgument)]
    [InlineData(5_000_000, TargetError.InvalidArgument)]
    public void PidsOutOfRangeAreRefused(int pid, TargetError error) =>
        Assert.Equal(error, Assert.Throws<TargetRequestException>(() => _outgoing.Start(pid, s_nowhere, new SourceMigrationOptions(), "auto")).Error);

    [Fact]
    public void AProcessThatDoesNotExistOrHoldsTheAgentIsRefused()
    {
        var gone = Assert.Throws<TargetRequestException>(() => _outgoing.Start(UnusedPid(), s_nowhere, new SourceMigrationOptions(), "auto"));
        Assert.Equal(TargetError.FailedPrecondition, gone.Error);
        var self = Assert.Throws<TargetRequestException>(() => _outgoing.Start(Environment.ProcessId, s_nowhere, new SourceMigrationOptions(), "auto"));
        Assert.Equal(TargetError.InvalidArgument, self.Error);
        Assert.Contains("cannot migrate itself", self.Message, StringComparison.Ordinal);
        Assert.Empty(_outgoing.List());
    }

    [Fact]
    public async Task UnknownIdsAreNotFound()
    {
        Assert.Equal(TargetError.NotFound, Assert.Throws<TargetRequestException>(() => _outgoing.Get("out-nope")).Error);
        Assert.Equal(TargetError.NotFound, (await Assert.ThrowsAsync<TargetRequestException>(() => _outgoing.CancelAsync("out-nope", "", default))).Error);
    }

    [Fact]
    public async Task ARunThatFailsEndsWithItsOutcome_ACancelAfterwardsIsRefused_AndTheHistoryStaysBounded()
    {
        var first = _outgoing.Start(_sleeper.Id, s_nowhere, new SourceMigrationOptions(), "auto");
        await first.Completion.WaitAsync(s_timeout);
        var outcome = first.Events.Outcome!;
        Assert.False(outcome.Succeeded);
        Assert.Equal("untouched", outcome.Workload);
        Assert.Equal(MigrationPhase.Preflight, outcome.FailedPhase);
        Assert.Equal("failed", first.State);
        Assert.Equal(Source.Events.MigrationEventKind.Outcome, first.Events.Snapshot()[^1].Kind);
        var late = await Assert.ThrowsAsync<TargetRequestException>(() => _outgoing.CancelAsync(first.Id, "", default));
        Assert.Equal(TargetError.FailedPrecondition, late.Error);

        for (int i = 0; i < OutgoingMigrations.MaxKept; i++)
        {
            await _outgoing.Start(_sleeper.Id, s_nowhere, new SourceMigrationOptions(), "auto").Completion.WaitAsync(s_timeout);
        }

        var kept = _outgoing.List();
        Assert.Equal(OutgoingMigrations.MaxKept, kept.Count);
        Assert.DoesNotContain(kept, m => m.Id == first.Id); // the oldest ended one went first
        Assert.Equal(TargetError.NotFound, Assert.Throws<TargetRequestException>(() => _outgoing.Get(first.Id)).Error);
    }

    private static int UnusedPid()
    {
        for (int pid = 4_000_000; ; pid--)
        {
            if (!Directory.Exists($"/proc/{pid}"))
            {
                return pid;
            }
        }
    }
}

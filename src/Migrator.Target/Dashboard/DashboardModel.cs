using System.Text.Json.Serialization;

namespace Migration.Target.Dashboard;

/// <summary>What the dashboard shows: every migration this host holds, both ways, as of <see cref="At"/>.</summary>
public sealed record DashboardState(string Host, string Version, DateTimeOffset At, bool CanCancel, IReadOnlyList<DashboardMigration> Migrations);

/// <summary>One migration as the dashboard draws it: its phases on a timeline, its pre-copy iterations, its numbers.</summary>
public sealed record DashboardMigration
{
    public required string Id { get; init; }

    /// <summary>outgoing (this host is the source) or incoming (the target).</summary>
    public required string Direction { get; init; }

    /// <summary>The other host.</summary>
    public required string Peer { get; init; }

    public int Pid { get; init; }

    public string Mode { get; init; } = "";

    /// <summary>running, succeeded, failed, cancelled (outgoing); receiving ... committed, aborted, failed (incoming).</summary>
    public required string State { get; init; }

    public bool Finished { get; init; }

    public DateTimeOffset StartedAt { get; init; }

    public IReadOnlyList<DashboardPhase> Phases { get; init; } = [];

    public IReadOnlyList<DashboardIteration> Iterations { get; init; } = [];

    /// <summary>Freeze to resume, once known.</summary>
    public double? DowntimeMs { get; init; }

    public ulong? BytesSent { get; init; }

    public ulong? PagesMoved { get; init; }

    /// <summary>Incoming: the lazy fill after the commit (null: none).</summary>
    public DashboardLazyFill? LazyFill { get; init; }

    /// <summary>Where the workload runs, when the migration ended.</summary>
    public string? Workload { get; init; }

    public string? Error { get; init; }

    public string? FailedPhase { get; init; }

    /// <summary>Notes the source role wrote (warnings, fallbacks), the last few.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}

public sealed record DashboardPhase(string Name, DateTimeOffset Start, DateTimeOffset? End);

public sealed record DashboardIteration(int Number, ulong PagesSent, ulong DirtyPages, double Ms, double MibPerSecond, int ThrottlePercent);

/// <summary>Pages filled after the resume; <see cref="Total"/> 0 when the count is not known.</summary>
public sealed record DashboardLazyFill(string State, ulong Filled, ulong Total);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(DashboardState))]
[JsonSerializable(typeof(LoginRequest))]
internal sealed partial class DashboardJson : JsonSerializerContext;

public sealed record LoginRequest(string? Token);

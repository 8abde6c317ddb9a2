using Migration.Engine.Criu;
using Migration.Engine.Network;
using Migration.Source.Events;
using Migration.Source.Precopy;
using Wire = Migration.Control.V1;

namespace Migration.Source.Agent;

/// <summary>
/// The source role's events and options as the control API carries them (proto/migrate/v1/agent.proto): one mapping
/// each way, used by the agent that runs migrations, by <c>migrate --via-agent</c> that asks it to, and by
/// <c>migrate --events jsonl</c>, whose lines are these messages in protobuf's JSON form.
/// </summary>
public static class MigrationWire
{
    /// <summary>Bounds on what a caller may ask (validated on every StartMigration).</summary>
    public const uint MaxIterations = 1000;

    public const uint MaxDowntimeMs = 600_000;

    public const uint MaxTimeoutSeconds = 86_400;

    public const int MaxAddresses = 16;

    /// <summary>"precopy", "final-round", ...: a phase as the wire names it.</summary>
    public static string PhaseName(MigrationPhase phase) => phase switch
    {
        MigrationPhase.FinalRound => "final-round",
        _ => phase.ToString().ToLowerInvariant(),
    };

    public static string KindName(MigrationEventKind kind) => kind switch
    {
        MigrationEventKind.PhaseStarted => "phase-started",
        MigrationEventKind.PhaseEnded => "phase-ended",
        MigrationEventKind.Iteration => "iteration",
        MigrationEventKind.Note => "note",
        _ => "outcome",
    };

    public static Wire.MigrationEvent ToWire(MigrationEvent e, long seq)
    {
        var w = new Wire.MigrationEvent
        {
            Seq = (ulong)seq,
            Kind = KindName(e.Kind),
            Phase = PhaseName(e.Phase),
            AtUnixMicros = (e.At - DateTimeOffset.UnixEpoch).Ticks / 10,
            Message = e.Message,
            ElapsedMs = e.Elapsed is { } elapsed ? (ulong)elapsed.TotalMilliseconds : 0,
            TargetMigrationId = e.TargetMigrationId ?? "",
        };
        if (e.Iteration is { } it)
        {
            w.Iteration = ToWire(it, e.EstimatedRemaining, e.StopReason);
        }

        if (e.Outcome is { } o)
        {
            w.Outcome = ToWire(o);
        }

        return w;
    }

    private static Wire.PrecopyIterationEvent ToWire(PrecopyIteration it, TimeSpan? remaining, string? stop) => new()
    {
        Index = (uint)it.Index,
        PagesSent = (ulong)it.PagesSent,
        WireBytes = (ulong)it.BytesOnWire,
        DirtyPages = (ulong)it.DirtyPagesFound,
        Ms = (ulong)it.Elapsed.TotalMilliseconds,
        BytesPerSecond = it.BytesPerSecond,
        EstimatedRemainingMs = remaining is { } r ? (ulong)Math.Min(r.TotalMilliseconds, ulong.MaxValue / 2) : 0,
        ThrottlePercent = (uint)it.ThrottlePercent,
        StopReason = stop ?? "",
    };

    public static Wire.MigrationOutcome ToWire(MigrationOutcome o) => new()
    {
        Succeeded = o.Succeeded,
        Workload = o.Workload,
        ExitCode = o.ExitCode,
        FailedPhase = o.FailedPhase is { } p ? PhaseName(p) : "",
        Error = o.Error ?? "",
        Cancelled = o.Cancelled,
        TargetPid = o.Result?.TargetPid ?? 0,
        FrozenMs = o.Result is { } r ? (ulong)r.Frozen.TotalMilliseconds : 0,
        TotalMs = o.Result is { } t ? (ulong)t.Total.TotalMilliseconds : 0,
        BytesSent = o.Result?.BytesSent ?? 0,
    };

    /// <summary><paramref name="o"/> as StartMigration carries it; <paramref name="compress"/> is the page stream's LZ4 choice.</summary>
    public static Wire.MigrationOptions ToWire(SourceMigrationOptions o, string compress)
    {
        var w = new Wire.MigrationOptions
        {
            Mode = o.Mode,
            FinalDump = o.FinalDump,
            RestorePages = o.LazyRestore ? "lazy" : "eager",
            MaxIterations = (uint)o.Precopy.MaxIterations,
            MaxDowntimeMs = (uint)o.Precopy.MaxDowntime.TotalMilliseconds,
            AutoConverge = o.Precopy.AutoConverge ? "on" : "off",
            TimeoutSeconds = (uint)o.CutoverTimeout.TotalSeconds,
            Compress = compress,
            DryRun = o.DryRun,
            KeepImages = o.KeepImages,
        };
        w.CriuFlags.AddRange(o.Criu.Names);
        w.MoveAddresses.AddRange(o.MoveAddresses.Select(a => a.ToString()));
        return w;
    }

    /// <summary>
    /// The options a StartMigration asks for, checked: each value known and in bounds, the defaults where a field is
    /// empty, the rest (work directory, address hook) from <paramref name="local"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A value is unknown or out of bounds; the message names it.</exception>
    public static (SourceMigrationOptions Options, string Compress) FromWire(Wire.MigrationOptions? w, SourceMigrationOptions local)
    {
        w ??= new Wire.MigrationOptions();
        string mode = OneOf("mode", w.Mode, "precopy", "precopy", "cold");
        string finalDump = OneOf("final_dump", w.FinalDump, "lazy", "lazy", "full");
        string restorePages = OneOf("restore_pages", w.RestorePages, "lazy", "lazy", "eager");
        string autoConverge = OneOf("auto_converge", w.AutoConverge, "on", "on", "off");
        string compress = OneOf("compress", w.Compress, "auto", "auto", "always", "never");
        var defaults = new PrecopyPolicy();
        var criu = CriuFlags.FromNames(w.CriuFlags);
        if (w.MoveAddresses.Count > MaxAddresses)
        {
            throw new ArgumentException($"{w.MoveAddresses.Count} service addresses; at most {MaxAddresses} are taken");
        }

        var addresses = new List<ServiceAddress>();
        foreach (var text in w.MoveAddresses)
        {
            if (!ServiceAddress.TryParse(text, out var a, out var error))
            {
                throw new ArgumentException($"move_addresses: {error}");
            }

            addresses.Add(a);
        }

        return (local with
        {
            Mode = mode,
            FinalDump = finalDump,
            LazyRestore = restorePages == "lazy",
            Criu = criu,
            MoveAddresses = addresses,
            CutoverTimeout = TimeSpan.FromSeconds(Bounded("timeout_seconds", w.TimeoutSeconds, 600, MaxTimeoutSeconds)),
            DryRun = w.DryRun,
            KeepImages = w.KeepImages,
            Precopy = defaults with
            {
                MaxIterations = (int)Bounded("max_iterations", w.MaxIterations, (uint)defaults.MaxIterations, MaxIterations),
                MaxDowntime = TimeSpan.FromMilliseconds(Bounded("max_downtime_ms", w.MaxDowntimeMs, (uint)defaults.MaxDowntime.TotalMilliseconds, MaxDowntimeMs)),
                AutoConverge = autoConverge == "on",
            },
        }, compress);
    }

    private static string OneOf(string field, string value, string fallback, params string[] known)
    {
        if (value.Length == 0)
        {
            return fallback;
        }

        return known.Contains(value, StringComparer.Ordinal) ? value
            : throw new ArgumentException($"{field} '{Clip(value)}' is not one of {string.Join(", ", known)}");
    }

    private static uint Bounded(string field, uint value, uint fallback, uint max) =>
        value == 0 ? fallback : value <= max ? value : throw new ArgumentException($"{field} {value} is more than {max}");

    private static string Clip(string s) => new(s.Take(40).Select(c => char.IsControl(c) ? '?' : c).ToArray());
}

using System.Diagnostics.Metrics;

namespace Migration.Engine.Telemetry;

/// <summary>
/// The migration metrics both roles record, on one <see cref="Meter"/> (<see cref="MeterName"/>). Recording is cheap
/// and harmless where nothing listens (the standalone <c>migrate</c>); <c>migrate-agent --metrics-listen</c> exports
/// them in the Prometheus text format. Instrument names carry no prefix: the exporter adds <c>migrate_</c>. Names follow Prometheus' conventions as exported: base units in the name
/// (<c>_seconds</c>, <c>_bytes</c>), counters end in <c>_total</c> (the exporter adds it). Labels are few and bounded:
/// <c>role</c> (source, target), <c>mode</c> (cold, precopy), <c>outcome</c>, <c>phase</c>.
/// </summary>
public static class MigrationMetrics
{
    public const string MeterName = "Migrate";

    public const string RoleSource = "source";

    public const string RoleTarget = "target";

    /// <summary>Histogram buckets of the downtime (freeze to resume): tens of milliseconds to a minute.</summary>
    public static readonly double[] DowntimeBuckets = [0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60];

    /// <summary>Histogram buckets of a whole migration and of a restore: a tenth of a second to an hour.</summary>
    public static readonly double[] DurationBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

    /// <summary>The buckets of histogram <paramref name="name"/>.</summary>
    public static double[] BucketsOf(string name) => name switch
    {
        "downtime_seconds" => DowntimeBuckets,
        _ => DurationBuckets,
    };

    private static readonly Meter Meter = new(MeterName, BuildInfo.Version);

    private static readonly Counter<long> Started = Meter.CreateCounter<long>("migrations_started",
        description: "Migrations begun, by role (source: started here; target: received here) and mode.");

    private static readonly Counter<long> Finished = Meter.CreateCounter<long>("migrations_finished",
        description: "Migrations ended, by role, mode, outcome (succeeded, failed, rolled_back, aborted, lost) and the phase they ended in.");

    private static readonly Histogram<double> Downtime = Meter.CreateHistogram<double>("downtime_seconds",
        description: "Source: from the freeze to the restored tree's resume on the target, per successful migration.");

    private static readonly Histogram<double> Duration = Meter.CreateHistogram<double>("migration_duration_seconds",
        description: "Whole migrations, first call to outcome, by role, mode and outcome.");

    private static readonly Histogram<double> RestoreDuration = Meter.CreateHistogram<double>("restore_duration_seconds",
        description: "Target: criu restore of a migrated tree (composing its page images included), by mode.");

    private static readonly Counter<long> Pages = Meter.CreateCounter<long>("pages",
        description: "Pages moved on page streams (zero pages included), by role.");

    private static readonly Counter<long> ZeroPages = Meter.CreateCounter<long>("zero_pages",
        description: "Pages moved as a bit because they held only zeros, by role.");

    private static readonly Counter<long> PageBytes = Meter.CreateCounter<long>("page_bytes",
        description: "Raw bytes of the pages moved on page streams (pages x 4096), by role.");

    private static readonly Counter<long> WireBytes = Meter.CreateCounter<long>("wire_bytes",
        description: "Bytes that crossed the link, by role and channel (pages: page stream frames; images: metadata images).");

    private static readonly Counter<long> LazyPages = Meter.CreateCounter<long>("lazy_pages_filled",
        description: "Target: pages the lazy fill put into restored trees after their resume.");

    private static readonly Counter<long> Iterations = Meter.CreateCounter<long>("precopy_iterations",
        description: "Source: pre-copy iterations run, by mode.");

    /// <summary>
    /// Registers the gauges read at each scrape: migrations in progress and stopped copies waiting for their commit
    /// decision (in doubt), per role. Called once per process by the role that owns the state; later calls add nothing.
    /// </summary>
    public static void ObserveState(string role, Func<int> inProgress, Func<int>? inDoubt = null)
    {
        lock (Registered)
        {
            if (!Registered.Add(role))
            {
                return;
            }

            var roleTag = new KeyValuePair<string, object?>("role", role);
            Meter.CreateObservableGauge("migrations_in_progress", () => new Measurement<int>(inProgress(), roleTag),
                description: "Migrations begun and not yet ended, by role.");
            if (inDoubt is not null)
            {
                Meter.CreateObservableGauge("in_doubt_copies", () => new Measurement<int>(inDoubt(), roleTag),
                    description: "Restored copies held stopped, waiting for the source's commit or abort.");
            }
        }
    }

    private static readonly HashSet<string> Registered = [];

    /// <summary>migrate_build_info{version,criu} 1: which build and which CRIU this process runs.</summary>
    public static void ObserveBuild(Func<string> criuVersion) =>
        Meter.CreateObservableGauge("build_info", () => new Measurement<int>(1,
            new KeyValuePair<string, object?>("version", BuildInfo.Version), new KeyValuePair<string, object?>("criu", criuVersion())),
            description: "Always 1; its labels name the build and the CRIU it runs.");

    public static void RecordStarted(string role, string mode) => Started.Add(1, Tag("role", role), Tag("mode", mode));

    public static void RecordFinished(string role, string mode, string outcome, string phase, TimeSpan took)
    {
        Finished.Add(1, Tag("role", role), Tag("mode", mode), Tag("outcome", outcome), Tag("phase", phase));
        Duration.Record(took.TotalSeconds, Tag("role", role), Tag("mode", mode), Tag("outcome", outcome));
    }

    public static void RecordDowntime(string mode, TimeSpan frozen) => Downtime.Record(frozen.TotalSeconds, Tag("mode", mode));

    public static void RecordRestore(string mode, TimeSpan took) => RestoreDuration.Record(took.TotalSeconds, Tag("mode", mode));

    /// <summary>A page stream's totals, once it ended (the source's as sent, the target's as received).</summary>
    public static void RecordPages(string role, ulong pages, ulong zeroPages, ulong wireBytes)
    {
        var roleTag = Tag("role", role);
        Pages.Add(Clamp(pages), roleTag);
        ZeroPages.Add(Clamp(zeroPages), roleTag);
        PageBytes.Add(Clamp(pages) * 4096, roleTag);
        WireBytes.Add(Clamp(wireBytes), roleTag, Tag("channel", "pages"));
    }

    public static void RecordImageBytes(string role, ulong bytes) => WireBytes.Add(Clamp(bytes), Tag("role", role), Tag("channel", "images"));

    public static void RecordLazyPages(long pages) => LazyPages.Add(Math.Max(0, pages));

    public static void RecordIterations(string mode, int count) => Iterations.Add(count, Tag("mode", mode));

    private static KeyValuePair<string, object?> Tag(string name, string value) => new(name, value);

    private static long Clamp(ulong v) => v > long.MaxValue / 4096 ? long.MaxValue / 4096 : (long)v;
}

using Migration.Engine.Telemetry;
using Prometheus;
using Xunit;

namespace Migration.Target.Tests;

/// <summary>What the agent's /metrics shows of the migration meter: Prometheus types and names, as prometheus-net writes them.</summary>
public sealed class MeterBridgeTests
{
    [Fact]
    public async Task CountersAreCountersWithTotalAndHistogramsHaveTheirBuckets()
    {
        var registry = Metrics.NewCustomRegistry();
        using var bridge = MeterBridge.Create(registry);
        MigrationMetrics.RecordStarted(MigrationMetrics.RoleTarget, "cold");
        MigrationMetrics.RecordStarted(MigrationMetrics.RoleTarget, "cold");
        MigrationMetrics.RecordFinished(MigrationMetrics.RoleTarget, "cold", "succeeded", "restored", TimeSpan.FromSeconds(3));
        MigrationMetrics.RecordDowntime("precopy", TimeSpan.FromMilliseconds(120));

        using var stream = new MemoryStream();
        await registry.CollectAndExportAsTextAsync(stream);
        var text = System.Text.Encoding.UTF8.GetString(stream.ToArray());

        Assert.Contains("# TYPE migrate_migrations_started_total counter", text, StringComparison.Ordinal);
        Assert.Contains("migrate_migrations_started_total{mode=\"cold\",role=\"target\"} 2", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE migrate_migration_duration_seconds histogram", text, StringComparison.Ordinal);
        Assert.Contains("migrate_migration_duration_seconds_bucket{mode=\"cold\",outcome=\"succeeded\",role=\"target\",le=\"5\"} 1", text, StringComparison.Ordinal);
        // Downtime has its own, finer buckets: 120 ms falls between 0.1 and 0.2 s.
        Assert.Contains("migrate_downtime_seconds_bucket{mode=\"precopy\",le=\"0.1\"} 0", text, StringComparison.Ordinal);
        Assert.Contains("migrate_downtime_seconds_bucket{mode=\"precopy\",le=\"0.2\"} 1", text, StringComparison.Ordinal);
    }
}

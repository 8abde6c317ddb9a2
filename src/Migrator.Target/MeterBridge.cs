using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Migration.Engine.Telemetry;
using Prometheus;

namespace Migration.Target;

/// <summary>
/// Publishes the <see cref="MigrationMetrics"/> meter through prometheus-net's own metric types, which write the
/// exposition: a .NET <see cref="Counter{T}"/> becomes a Prometheus counter named <c>migrate_NAME_total</c>, a
/// histogram a histogram with the buckets <see cref="MigrationMetrics"/> gives, an observable gauge a gauge read at
/// each scrape. Label names are the tags' names, sorted (each instrument records one fixed set of tags).
/// </summary>
internal sealed class MeterBridge : IDisposable
{
    private const string Prefix = "migrate_";

    private readonly MeterListener _listener = new();
    private readonly IMetricFactory _factory;
    private readonly ConcurrentDictionary<Instrument, Collector> _collectors = new();

    private MeterBridge(CollectorRegistry registry)
    {
        _factory = Metrics.WithCustomRegistry(registry);
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == MigrationMetrics.MeterName)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Record(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Record(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Record(i, v, tags));
        _listener.Start();
        // Observable gauges report when asked: at every scrape, just before prometheus-net writes the exposition.
        registry.AddBeforeCollectCallback(_listener.RecordObservableInstruments);
    }

    private static MeterBridge? _started;

    /// <summary>Starts publishing into <paramref name="registry"/> (once per process).</summary>
    public static void Start(CollectorRegistry registry) => _started ??= new MeterBridge(registry);

    /// <summary>A bridge into <paramref name="registry"/> that the caller disposes (tests).</summary>
    internal static MeterBridge Create(CollectorRegistry registry) => new(registry);

    /// <summary>
    /// Runs inside the code that records (a migration's state change, under its lock): it must never throw there. A
    /// measurement that prometheus-net refuses is dropped, with a trace line.
    /// </summary>
    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        try
        {
            RecordOrThrow(instrument, value, tags);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            System.Diagnostics.Trace.WriteLine($"metric {instrument.Name}: measurement {value} dropped: {ex.Message}");
        }
    }

    private void RecordOrThrow(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var sorted = tags.ToArray();
        Array.Sort(sorted, (a, b) => string.CompareOrdinal(a.Key, b.Key));
        var values = sorted.Select(t => t.Value?.ToString() ?? "").ToArray();
        var collector = _collectors.GetOrAdd(instrument, i => Create(i, sorted.Select(t => t.Key).ToArray()));
        switch (collector)
        {
            case Counter c:
                c.WithLabels(values).Inc(value);
                break;
            case Histogram h:
                h.WithLabels(values).Observe(value);
                break;
            case Gauge g:
                g.WithLabels(values).Set(value);
                break;
        }
    }

    private Collector Create(Instrument instrument, string[] labels)
    {
        string help = instrument.Description ?? instrument.Name;
        return instrument switch
        {
            Counter<long> or Counter<int> or Counter<double> => _factory.CreateCounter(Prefix + instrument.Name + "_total", help, labels),
            Histogram<double> => _factory.CreateHistogram(Prefix + instrument.Name, help, labels,
                new HistogramConfiguration { Buckets = MigrationMetrics.BucketsOf(instrument.Name) }),
            _ => _factory.CreateGauge(Prefix + instrument.Name, help, labels),
        };
    }

    public void Dispose() => _listener.Dispose();
}

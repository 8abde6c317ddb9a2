using Migration.Engine.Criu;
using Migration.Engine.Telemetry;
using Prometheus;
using Endpoint = Migration.Engine.Network.Endpoint;

namespace Migration.Target;

/// <summary>
/// The agent's Prometheus endpoint (<c>--metrics-listen</c>): prometheus-net serves the <see cref="MigrationMetrics"/>
/// meter (through <see cref="MeterBridge"/>) and its own process metrics (memory, CPU, open fds) on a Kestrel server
/// of its own, plain HTTP, apart from the control API's mutual TLS port.
/// </summary>
internal static class AgentMetrics
{
    /// <summary>Starts exporting; the caller disposes the server to stop it.</summary>
    public static async Task<IAsyncDisposable> StartAsync(Endpoint endpoint, CriuClient criu, CancellationToken ct)
    {
        string criuVersion;
        try
        {
            criuVersion = (await criu.GetVersionAsync(ct).ConfigureAwait(false)).ToString();
        }
        catch (CriuException)
        {
            criuVersion = "unavailable";
        }

        MigrationMetrics.ObserveBuild(() => criuVersion);
        // Process metrics stay (RSS, CPU, open fds: what a soak watches). prometheus-net's own adapter of .NET meters is
        // off: it publishes every counter as a gauge (a meter it does not own may be re-created and start again from
        // zero), which ours never are; MeterBridge publishes them as counters.
        Metrics.SuppressDefaultMetrics(new SuppressDefaultMetricOptions { SuppressEventCounters = true, SuppressDebugMetrics = true, SuppressMeters = true });
        MeterBridge.Start(Metrics.DefaultRegistry);
        var server = new KestrelMetricServer(new KestrelMetricServerOptions
        {
            Hostname = endpoint.Host.Contains(':') ? $"[{endpoint.Host}]" : endpoint.Host,
            Port = (ushort)endpoint.Port,
        });
        server.Start();
        return new Stopper(server);
    }

    private sealed class Stopper(IMetricServer server) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await server.StopAsync().ConfigureAwait(false);
    }
}

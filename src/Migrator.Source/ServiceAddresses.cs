using Microsoft.Extensions.Logging;
using Migration.Engine.Network;

namespace Migration.Source;

/// <summary>
/// The service addresses that leave this host with the tree (<c>--move-address</c>): checked in the preflight, taken
/// off their interface while the tree is frozen and its network locked (after the dump, before the restore on the
/// target, which brings them up there first), and put back if the workload resumes here.
/// </summary>
internal sealed partial class ServiceAddresses(IReadOnlyList<ServiceAddress> addresses, AddressMover mover, ILogger logger)
{
    private readonly List<(ServiceAddress Address, string Interface)> _down = [];

    public bool Any => addresses.Count > 0;

    /// <summary>Each address is on an interface of this host (without a hook); else the migration is refused before anything is frozen.</summary>
    public async Task CheckAsync(CancellationToken ct)
    {
        foreach (var a in addresses)
        {
            if (mover.Hook is null && await AddressMover.InterfaceHoldingAsync(a.Address, ct).ConfigureAwait(false) is null)
            {
                throw new MigrationException(MigrationPhase.Preflight, WorkloadOutcome.Untouched,
                    $"--move-address {a}: no interface of this host holds {a.Address}; give the address the service answers on, or --address-hook for one that is not an interface address");
            }
        }
    }

    /// <summary>Takes every address off this host. On a failure, those already taken are put back before it throws.</summary>
    public async Task TakeDownAsync(CancellationToken ct)
    {
        try
        {
            foreach (var a in addresses)
            {
                string iface = await AddressMover.InterfaceHoldingAsync(a.Address, ct).ConfigureAwait(false) ?? "-";
                await mover.DownAsync(a, iface, ct).ConfigureAwait(false);
                _down.Add((a, iface));
            }
        }
        catch (Exception ex) when (ex is IOException or TimeoutException)
        {
            await BringBackAsync().ConfigureAwait(false);
            throw new IOException($"moving the service address: {ex.Message}", ex);
        }
    }

    /// <summary>The workload resumes here: every address taken off goes back. Never throws; a failure is logged as the error it is.</summary>
    public async Task BringBackAsync()
    {
        foreach (var (a, iface) in _down)
        {
            try
            {
                await mover.UpAsync(a, iface, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or TimeoutException)
            {
                LogBringBackFailed(a.ToString(), iface, ex.Message);
            }
        }

        _down.Clear();
    }

    [LoggerMessage(EventId = 227, Level = LogLevel.Error, Message = "service address {Address} could not be put back on {Interface}: {Reason}; the workload runs here without it: add it by hand (ip addr add {Address} dev {Interface})")]
    private partial void LogBringBackFailed(string address, string @interface, string reason);
}

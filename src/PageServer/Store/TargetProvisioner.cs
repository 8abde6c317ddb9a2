using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>
/// Makes room for targets' pages before they come (a cold migration, before its freeze): creates a target's data file
/// and fills its first bytes with zeros, holds it until the target's first run adopts it (<see cref="Take"/>), and
/// deletes what no run adopted. One per store; the caller holds the store's lock.
/// </summary>
/// <remarks>
/// Why: a cold migration writes every page into the store while the workload is frozen, and on a host whose free
/// memory went back to its hypervisor (a VM with free page reporting or a balloon) the first write into each new
/// page-cache folio costs many times more than later writes into it. Here, 1500 MiB written into a new file after 30 s
/// of quiet took 0.026 s per 100 MiB until 1300 MiB, then 0.15-0.30 s per 100 MiB; a 1 GiB cold migration's
/// freeze-to-stored time fell from 0.80-1.43 s to 0.68-0.84 s with its store provisioned (5 runs each, alternating).
/// The cost moves before the freeze, where the workload still runs: 1 GiB took 0.5-1.9 s written into a new file,
/// 0.2 s into allocated blocks (the first writes skip delayed allocation, and the pages' own writes after them too).
/// Not with <see cref="PageStoreOptions.SyncToDisk"/>: its syncs would write the zeros to disk too.
/// </remarks>
internal sealed class TargetProvisioner(string directory, PageStoreOptions options, Preallocator space, ILogger logger)
{
    private const int PageSize = PageFacts.PageSize;

    /// <summary>Targets whose data file <see cref="Provision"/> made and which no run has opened yet.</summary>
    private readonly Dictionary<PageTarget, TargetData> _provisioned = [];

    /// <summary>Bytes of disk <see cref="Provision"/> took in all, adopted or not.</summary>
    private long _provisionedBytes;

    /// <summary>
    /// Creates <paramref name="target"/>'s data file, allocates its first <paramref name="bytes"/> (rounded down to
    /// pages; where <see cref="Preallocator.Enabled"/>) and fills them with zeros, in writes of
    /// <see cref="DataFileWriter.WriteChunkBytes"/>, until done or until <paramref name="deadline"/> (a
    /// <see cref="Stopwatch"/> timestamp). Returns the bytes written; 0, making nothing, when the store syncs to disk,
    /// it <paramref name="held"/> the target already, the target limit (with <paramref name="heldTargets"/> targets
    /// held) or half of <see cref="PageStoreOptions.MaxBytes"/> is reached, or a write failed (the file is removed again).
    /// </summary>
    public long Provision(PageTarget target, long bytes, long deadline, bool held, int heldTargets)
    {
        bytes = Math.Min(Math.Max(0, bytes), (options.MaxBytes / 2) - _provisionedBytes) / PageSize * PageSize;
        if (bytes <= 0 || options.SyncToDisk || held || _provisioned.ContainsKey(target)
            || heldTargets + _provisioned.Count >= options.MaxTargets)
        {
            return 0;
        }

        var chunk = ZeroChunk(DataFileWriter.WriteChunkBytes);
        TargetData? t = null;
        long written = 0, allocated = 0;
        try
        {
            t = TargetData.Create(target, directory);
            if (space.Enabled)
            {
                // The zeros then go into allocated blocks, without delayed allocation's bookkeeping per block
                // (FileSpace); a refusal only leaves that to the writes.
                allocated = FileSpace.TryAllocate(t.File.SafeFileHandle, 0, bytes) ? bytes : 0;
            }

            while (written < bytes && Stopwatch.GetTimestamp() < deadline)
            {
                long n = Math.Min(DataFileWriter.WriteChunkBytes, bytes - written);
                RandomAccess.Write(t.File.SafeFileHandle, n == DataFileWriter.WriteChunkBytes ? chunk : ZeroChunk(n), written);
                written += n;
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A store without room made is a store all the same: the pages then go into new folios, as without this.
            PageStoreLog.ProvisionFailed(logger, target.ToString(), ex.Message);
            t?.Delete(logger);
            return 0;
        }

        if (written == 0)
        {
            t.Delete(logger);
            return 0;
        }

        // Overwrites up to here; holes punched out of it (DataFileWriter.SkipHole); preallocation resumes past it (Preallocator.Reserve).
        t.Allocated = Math.Max(written, allocated);
        _provisioned.Add(target, t);
        _provisionedBytes += t.Allocated;
        PageStoreLog.Provisioned(logger, target.ToString(), written);
        return written;
    }

    /// <summary>The data file made ahead for <paramref name="target"/>, no longer held as such; null when there is none.</summary>
    public TargetData? Take(PageTarget target) => _provisioned.Remove(target, out var t) ? t : null;

    /// <summary>
    /// Closes and deletes the data files made ahead for targets that never came (they hold no pages); with
    /// <paramref name="report"/>, says so: the images are being written, so the room was made for a task the dump did
    /// not name that way.
    /// </summary>
    public void Drop(bool report)
    {
        foreach (var t in _provisioned.Values)
        {
            if (report)
            {
                PageStoreLog.ProvisionUnused(logger, t.Target.ToString(), t.Allocated);
            }

            t.Delete(logger);
        }

        _provisioned.Clear();
    }

    /// <summary>
    /// <paramref name="bytes"/> (whole pages, at most <see cref="DataFileWriter.WriteChunkBytes"/>) of zeros for one
    /// provisioning write, as pieces of <see cref="DataFileWriter.ZeroBlock"/>.
    /// </summary>
    private static List<ReadOnlyMemory<byte>> ZeroChunk(long bytes)
    {
        var list = new List<ReadOnlyMemory<byte>>();
        for (long left = bytes; left > 0; left -= DataFileWriter.ZeroBlock.Length)
        {
            list.Add(DataFileWriter.ZeroBlock.AsMemory(0, (int)Math.Min(left, DataFileWriter.ZeroBlock.Length)));
        }

        return list;
    }
}

using System.Diagnostics;
using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>Room made for a target's pages before they come (a cold migration, before its freeze).</summary>
public sealed partial class PageStore
{
    /// <summary>Targets whose data file <see cref="Provision"/> made and which no run has opened yet.</summary>
    private readonly Dictionary<PageTarget, TargetData> _provisioned = [];

    /// <summary>Bytes of disk <see cref="Provision"/> took in all, adopted or not.</summary>
    private long _provisionedBytes;

    /// <summary>
    /// Makes room for <paramref name="target"/>'s pages before they come: creates its data file, allocates its first
    /// <paramref name="bytes"/> (rounded down to pages; on ext4, <see cref="FileSpace"/>) and fills them with zeros, in
    /// writes of <see cref="WriteChunkBytes"/>, until
    /// done or until <paramref name="deadline"/> (a <see cref="Stopwatch"/> timestamp). Pages that come later for the
    /// target are written over those zeros into page-cache folios (and disk blocks) that exist already; long zero
    /// stretches are punched out as usual, and what the pages do not use is cut off when the images are written, or
    /// deleted with the store. Returns the bytes written (0 when nothing was: the store syncs to disk, it already
    /// holds the target, the target limit or half of <see cref="PageStoreOptions.MaxBytes"/> is reached, or a write
    /// failed, in which case the file is removed again). Call it before the page stream starts: it holds the store's
    /// lock throughout.
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
    public long Provision(PageTarget target, long bytes, long deadline)
    {
        ThrowIfInvalid(target);

        lock (_gate)
        {
            ThrowIfNotWritable();
            bytes = Math.Min(Math.Max(0, bytes), (_options.MaxBytes / 2) - _provisionedBytes) / PageSize * PageSize;
            if (bytes <= 0 || _options.SyncToDisk || _targets.ContainsKey(target) || _provisioned.ContainsKey(target)
                || _targets.Count + _provisioned.Count >= _options.MaxTargets)
            {
                return 0;
            }

            var chunk = ZeroChunk(WriteChunkBytes);
            TargetData? t = null;
            long written = 0, allocated = 0;
            try
            {
                t = TargetData.Create(target, _directory);
                if (_preallocate)
                {
                    // The zeros then go into allocated blocks, without delayed allocation's bookkeeping per block
                    // (FileSpace); a refusal only leaves that to the writes.
                    allocated = FileSpace.TryAllocate(t.File.SafeFileHandle, 0, bytes) ? bytes : 0;
                }

                while (written < bytes && Stopwatch.GetTimestamp() < deadline)
                {
                    long n = Math.Min(WriteChunkBytes, bytes - written);
                    RandomAccess.Write(t.File.SafeFileHandle, n == WriteChunkBytes ? chunk : ZeroChunk(n), written);
                    written += n;
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // A store without room made is a store all the same: the pages then go into new folios, as without this.
                Log.ProvisionFailed(_logger, target.ToString(), ex.Message);
                if (t is not null)
                {
                    DeleteData(t);
                }

                return 0;
            }

            if (written == 0)
            {
                DeleteData(t);
                return 0;
            }

            // Overwrites up to here; holes punched out of it (SkipHole); preallocation resumes past it (Reserve).
            t.Allocated = Math.Max(written, allocated);
            _provisioned.Add(target, t);
            _provisionedBytes += t.Allocated;
            Log.Provisioned(_logger, target.ToString(), written);
            return written;
        }
    }

    /// <summary><paramref name="bytes"/> (whole pages, at most <see cref="WriteChunkBytes"/>) of zeros for one provisioning write, as pieces of <see cref="ZeroBlock"/>.</summary>
    private static List<ReadOnlyMemory<byte>> ZeroChunk(long bytes)
    {
        var list = new List<ReadOnlyMemory<byte>>();
        for (long left = bytes; left > 0; left -= ZeroBlock.Length)
        {
            list.Add(ZeroBlock.AsMemory(0, (int)Math.Min(left, ZeroBlock.Length)));
        }

        return list;
    }

    /// <summary>The data file the store made ahead for <paramref name="target"/>, no longer held as such; null when there is none.</summary>
    private TargetData? TakeProvisioned(PageTarget target) => _provisioned.Remove(target, out var t) ? t : null;

    /// <summary>
    /// Closes and deletes the data files made ahead for targets that never came (they hold no pages); with
    /// <paramref name="report"/>, says so: the images are being written, so the room was made for a task the dump did
    /// not name that way.
    /// </summary>
    private void DropProvisioned(bool report)
    {
        foreach (var t in _provisioned.Values)
        {
            if (report)
            {
                Log.ProvisionUnused(_logger, t.Target.ToString(), t.Allocated);
            }

            DeleteData(t);
        }

        _provisioned.Clear();
    }

    /// <summary>Closes <paramref name="t"/>'s data file and deletes it; a failure to delete is logged, not thrown.</summary>
    private void DeleteData(TargetData t)
    {
        t.Dispose();
        if (t.DataPath is null)
        {
            return;
        }

        try
        {
            File.Delete(t.DataPath);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Safe to swallow: the file lies in the migration's own directory, which its owner removes with the
            // migration; failing here would hide the error that ended the migration.
            Log.DeleteFailed(_logger, t.DataPath, ex.Message);
        }
    }
}

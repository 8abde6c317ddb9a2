namespace Migration.PageServer.Pages;

/// <summary>What a page-server <c>dst_id</c> names (criu/page-xfer.c): a task's pagemap or a shmem segment's.</summary>
public enum PageImageType : byte
{
    /// <summary><c>pagemap-&lt;vpid&gt;.img</c> (CRIU's PS_TYPE_PID).</summary>
    Pid = 1,

    /// <summary><c>pagemap-shmem-&lt;shmid&gt;.img</c> (CRIU's PS_TYPE_SHMEM).</summary>
    Shmem = 2,
}

/// <summary>A destination image: <c>dst_id = id &lt;&lt; 8 | type</c> on CRIU's wire.</summary>
public readonly record struct PageTarget(uint Id, PageImageType Type)
{
    /// <summary>Largest id accepted: CRIU's pids and shmids fit in 32 bits; dst_id keeps 56.</summary>
    public const ulong MaxId = uint.MaxValue;

    public ulong DstId => ((ulong)Id << 8) | (byte)Type;

    public static bool TryDecode(ulong dstId, out PageTarget target)
    {
        target = default;
        var type = (PageImageType)(dstId & 0xff);
        ulong id = dstId >> 8;
        if (type is not (PageImageType.Pid or PageImageType.Shmem) || id == 0 || id > MaxId)
        {
            return false;
        }

        target = new PageTarget((uint)id, type);
        return true;
    }

    /// <summary>The pagemap image file CRIU reads for this target.</summary>
    public string PagemapFileName => Type == PageImageType.Pid ? $"pagemap-{Id}.img" : $"pagemap-shmem-{Id}.img";

    public override string ToString() => Type == PageImageType.Pid ? $"pid {Id}" : $"shmem {Id}";
}

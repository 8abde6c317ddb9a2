namespace Migration.Engine.Processes;

/// <summary>This host's memory, as /proc/meminfo reports it.</summary>
public static class HostMemory
{
    /// <summary>MemAvailable: what can be allocated without swapping, page cache that can be dropped included.</summary>
    public static ulong AvailableBytes() => ProcFields.KiB("/proc/meminfo", "MemAvailable") * 1024;
}

using System.Runtime.InteropServices;

namespace Migration.Engine.Tracking;

/// <summary>
/// P/Invoke surface of native/tracker/track.h (libmigrate_track.so). Layouts and constants mirror that header;
/// <see cref="AbiVersion"/> is checked against <c>mt_abi_version()</c> before first use.
/// </summary>
internal static unsafe partial class TrackerNative
{
    public const string LibraryName = "libmigrate_track";

    /// <summary>MT_ABI_VERSION of track.h that these declarations match.</summary>
    public const int AbiVersion = 1;

    // mt_caps.flags (MT_CAP_*)
    public const uint CapUffd = 1u << 0;
    public const uint CapWpAsync = 1u << 1;
    public const uint CapWpUnpopulated = 1u << 2;
    public const uint CapUserModeOnly = 1u << 3;
    public const uint CapPagemapScan = 1u << 4;
    public const uint CapSoftDirty = 1u << 5;
    public const uint CapInjection = 1u << 6;

    // mt_info.flags (MT_INFO_*)
    public const uint InfoUserModeOnly = 1u << 0;

    // mt_attach() flags
    public const uint AttachAllowSeccomp = 1u << 0;

    // mt_harvest() / mt_refresh() result bits
    public const int More = 1 << 0;
    public const int LayoutChanged = 1 << 1;

    // mt_set_log() levels
    public const int LogErr = 0;
    public const int LogWarn = 1;
    public const int LogInfo = 2;
    public const int LogDebug = 3;

    static TrackerNative() => TrackerLibrary.EnsureResolver();

    [StructLayout(LayoutKind.Sequential)]
    public struct Caps
    {
        public ulong UffdFeatures;
        public int UffdError;
        public int PagemapScanError;
        public uint Flags;
        public uint Reserved;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Range
    {
        public ulong Start;
        public ulong Pages;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Info
    {
        public long AttachNs;
        public long StopNs;
        public long RegisterNs;
        public ulong UffdFeatures;
        public ulong TrackedBytes;
        public uint TrackedVmas;
        public uint FailedVmas;
        public int Pid;
        public int Tid;
        public uint Flags;
        public uint RedeliveredSignals;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Vma
    {
        public ulong Start;
        public ulong End;
        public int State;
        public int Error;
        public fixed byte Perms[8];
    }

    [LibraryImport(LibraryName)]
    public static partial int mt_abi_version();

    [LibraryImport(LibraryName)]
    public static partial void mt_set_log(delegate* unmanaged<int, byte*, void> fn, int maxLevel);

    /// <summary>A static string owned by the library: never freed by the caller.</summary>
    [LibraryImport(LibraryName)]
    public static partial nint mt_last_step();

    [LibraryImport(LibraryName)]
    public static partial int mt_probe(Caps* caps);

    [LibraryImport(LibraryName)]
    public static partial int mt_attach(int pid, uint flags, out TrackerHandle tracker);

    [LibraryImport(LibraryName)]
    public static partial int mt_harvest(TrackerHandle tracker, Range* output, nuint capacity, out nuint count);

    [LibraryImport(LibraryName)]
    public static partial int mt_refresh(TrackerHandle tracker, Range* output, nuint capacity, out nuint count);

    [LibraryImport(LibraryName)]
    public static partial int mt_get_info(TrackerHandle tracker, Info* info);

    [LibraryImport(LibraryName)]
    public static partial int mt_get_vmas(TrackerHandle tracker, Vma* output, nuint capacity, out nuint count);

    [LibraryImport(LibraryName)]
    public static partial int mt_detach(nint tracker);

    public static string LastStep() => Marshal.PtrToStringUTF8(mt_last_step()) ?? "";
}

/// <summary>An <c>struct mt_tracker *</c>. Released with <c>mt_detach()</c> if <see cref="DirtyTracker.Detach"/> was not called.</summary>
internal sealed class TrackerHandle : SafeHandle
{
    public TrackerHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        // Finalizer or Dispose path: nobody is left to see an error. mt_detach frees the tracker in any case.
        TrackerNative.mt_detach(handle);
        return true;
    }
}

namespace Migration.Engine.Criu;

/// <summary>What to dump and how. Directories must exist; CRIU writes its log into <see cref="WorkDir"/>.</summary>
public sealed record DumpSpec
{
    public required int Pid { get; init; }
    public required string ImagesDir { get; init; }
    public required string WorkDir { get; init; }
    public string LogFile { get; init; } = "dump.log";

    /// <summary>The user's CRIU options (the same set the restore on the target gets).</summary>
    public CriuFlags Flags { get; init; } = CriuFlags.None;

    /// <summary>Keep the tree running after the dump (pre-dump style); false kills it when post-dump is acknowledged.</summary>
    public bool LeaveRunning { get; init; }

    /// <summary>Leave the tree stopped instead of killing it after a successful dump.</summary>
    public bool LeaveStopped { get; init; }

    /// <summary>
    /// Anonymous private pages are not dumped: their pagemap entries are marked lazy (no data), and the caller reads
    /// them from the frozen tree itself (from post-dump until CRIU answers). CRIU's own lazy page server is ended at
    /// once. Other pages (stacks, file-backed private pages) are written to the pages images as usual.
    /// </summary>
    public bool LazyPages { get; init; }

    /// <summary>Network lock method when TCP connections are dumped ("nftables" here: CRIU links libnftables).</summary>
    public Rpc.CriuNetworkLockMethod NetworkLock { get; init; } = Rpc.CriuNetworkLockMethod.Nftables;

    /// <summary>Send pages to this page server instead of writing pages images (CRIU's --page-server --address).</summary>
    public string? PageServerAddress { get; init; }

    public int PageServerPort { get; init; }

    /// <summary>
    /// Send pages over this connected stream socket instead (CRIU's --page-server with --ps-socket): one end of a
    /// socket pair whose other end a page server in this process serves. No port is opened. The client hands it to
    /// CRIU and disposes it, whatever happens.
    /// </summary>
    public System.Net.Sockets.Socket? PageServerConnection { get; init; }
}

/// <summary>What to restore and how.</summary>
public sealed record RestoreSpec
{
    public required string ImagesDir { get; init; }
    public required string WorkDir { get; init; }
    public string LogFile { get; init; } = "restore.log";

    /// <summary>The user's CRIU options, as the source's dump had them.</summary>
    public CriuFlags Flags { get; init; } = CriuFlags.None;

    /// <summary>Tasks stay stopped after restore until the migration commits (they are then sent SIGCONT).</summary>
    public bool LeaveStopped { get; init; } = true;
    public bool LazyPages { get; init; }
    public Rpc.CriuNetworkLockMethod NetworkLock { get; init; } = Rpc.CriuNetworkLockMethod.Nftables;
}

/// <summary>CRIU's version as its VERSION request reports it.</summary>
public sealed record CriuVersionInfo(int Major, int Minor, int Sublevel, string Text)
{
    public Version AsVersion => new(Major, Minor, Math.Max(0, Sublevel));

    public override string ToString() => Text;
}

/// <summary>FEATURE_CHECK answer: soft-dirty memory tracking and lazy pages.</summary>
public sealed record CriuFeatureSet(bool MemTrack, bool LazyPages);

/// <summary>CRIU notification names (criu/include/action-scripts.h) the engine reacts to.</summary>
public static class CriuScripts
{
    public const string PreDump = "pre-dump";
    public const string PostDump = "post-dump";
    public const string NetworkLock = "network-lock";
    public const string NetworkUnlock = "network-unlock";
    public const string PreRestore = "pre-restore";
    public const string PostRestore = "post-restore";
    public const string PreResume = "pre-resume";
    public const string PostResume = "post-resume";
    public const string StatusReady = "status-ready";
}

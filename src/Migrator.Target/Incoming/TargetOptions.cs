namespace Migration.Target.Incoming;

/// <summary>Target agent limits. Every limit bounds what an authenticated but faulty peer can make the agent hold.</summary>
public sealed record TargetOptions
{
    /// <summary>Per-migration work directories are created here and nowhere else.</summary>
    public string WorkRoot { get; init; } = "/var/lib/migrate/agent";

    /// <summary>Free space the agent never gives to images: the host's own needs.</summary>
    public ulong ReserveBytes { get; init; } = 256UL << 20;

    /// <summary>CRIU writes a few files per task; 100k files is far beyond any real tree.</summary>
    public int MaxImageFiles { get; init; } = 100_000;

    /// <summary>Largest accepted chunk (the client sends 1 MiB).</summary>
    public int MaxChunkBytes { get; init; } = 4 << 20;

    /// <summary>Migrations receiving or restoring at once.</summary>
    public int MaxConcurrentMigrations { get; init; } = 4;

    /// <summary>
    /// Room a cold migration's page store makes for the pages before the freeze (<see cref="IIncomingPages.Provision"/>),
    /// at most: 4 GiB. 0 turns it off.
    /// </summary>
    public ulong ProvisionMaxBytes { get; init; } = 4UL << 30;

    /// <summary>How long making that room may hold up the start of a cold migration (whatever is done by then is used): 10 s.</summary>
    public TimeSpan ProvisionTimeLimit { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The interface service addresses come up on (<c>--service-interface</c>; by default the one holding the
    /// <c>--listen</c> address). Null: this agent takes no service address.
    /// </summary>
    public string? ServiceInterface { get; init; }

    /// <summary>An operator's program that brings service addresses up and down instead of iproute2 (<c>--address-hook</c>).</summary>
    public string? AddressHook { get; init; }

    /// <summary>
    /// Whether the clients of a restored tree's connections on its service addresses are prompted to retransmit at
    /// once after the restore (<see cref="Engine.Network.ClientPrompter"/>, <c>--prompt-clients</c>): on by default,
    /// since a client whose packets were dropped during the freeze otherwise waits out a retransmission timeout that
    /// doubled each time (up to twice the freeze).
    /// </summary>
    public bool PromptClients { get; init; } = true;

    /// <summary>Named fault points for tests (see <see cref="Faults"/>); empty in production.</summary>
    public IReadOnlySet<string> Faults { get; init; } = new HashSet<string>();
}

/// <summary>Fault points the agent can be told to hit, one test each.</summary>
public static class Faults
{
    /// <summary>The restore fails inside CRIU: an image is damaged just before criu restore reads it.</summary>
    public const string Restore = "restore";

    /// <summary>The transfer is cut: the agent drops the connection on the second image chunk.</summary>
    public const string CutTransfer = "cut-transfer";

    /// <summary>The page stream breaks: the agent's page store fails after the first batches of pages.</summary>
    public const string CutPages = "cut-pages";

    /// <summary>GetMigration stalls until its call is cancelled, having logged the deadline it was given (deadlines travel).</summary>
    public const string StallGetMigration = "stall-get-migration";

    /// <summary>
    /// The lazy-pages daemon dies once started, just before the restore (and so before the commit). It used to die just
    /// after the restore, but a small tree's fill can then be complete before the kill lands.
    /// </summary>
    public const string KillLazyPages = "kill-lazy-pages";

    public static readonly string[] All = [Restore, CutTransfer, CutPages, StallGetMigration, KillLazyPages];
}

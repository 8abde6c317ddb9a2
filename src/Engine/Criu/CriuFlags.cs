using System.Collections.Frozen;

namespace Migration.Engine.Criu;

/// <summary>One CRIU option a user may set: its name (the command-line flag without dashes), what it does, and the RPC field it sets.</summary>
public sealed record CriuFlag(string Name, string Help, Action<Rpc.CriuOpts> Set);

/// <summary>
/// The CRIU options a user sets for one migration: one contract from the command line through <c>Begin</c> to the
/// target, applied alike to the dump on the source and the restore on the target (CRIU wants each on both sides).
/// Adding an option is one entry in <see cref="All"/>: the CLI makes a flag of it, the wire carries it by name, the
/// agent accepts it, and <see cref="ApplyTo"/> sets it for every CRIU request.
/// </summary>
public sealed record CriuFlags
{
    /// <summary>Every option a user may set, in the order --help lists them.</summary>
    public static readonly IReadOnlyList<CriuFlag> All =
    [
        new("tcp-established", "Migrate established TCP connections: CRIU dumps and restores them in repair mode, the network locked (nftables) meanwhile, so their peers see a pause, not a reset",
            o => o.TcpEstablished = true),
        new("shell-job", "The tree is a job of a shell: its session or process group leader (and terminal) is outside the tree",
            o => o.ShellJob = true),
        new("file-locks", "Migrate the file locks (flock, POSIX, OFD) the tree holds. Not for files on storage the target shares: the restore there waits for the locks the frozen source copy still holds",
            o => o.FileLocks = true),
        new("ext-unix-sk", "Allow unix sockets connected to a process outside the tree. CRIU restores only a named datagram peer (such as /dev/log), which must exist on the target as well; a stream connection to an outside process cannot move",
            o => o.ExtUnixSk = true),
    ];

    private static readonly FrozenDictionary<string, CriuFlag> s_byName = All.ToFrozenDictionary(f => f.Name, StringComparer.Ordinal);

    /// <summary>No option set.</summary>
    public static readonly CriuFlags None = new([]);

    private readonly FrozenSet<string> _set;

    private CriuFlags(IEnumerable<string> names) => _set = names.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>The names set, in <see cref="All"/>'s order.</summary>
    public IReadOnlyList<string> Names => All.Where(f => _set.Contains(f.Name)).Select(f => f.Name).ToArray();

    public bool Has(string name) => _set.Contains(name);

    public bool TcpEstablished => Has("tcp-established");

    public bool ExtUnixSk => Has("ext-unix-sk");

    /// <summary>Options by name; unknown names are refused with one message that lists them and what is known.</summary>
    /// <exception cref="ArgumentException">A name is not an option of <see cref="All"/>.</exception>
    public static CriuFlags FromNames(IEnumerable<string> names)
    {
        var list = names.Take(MaxNames + 1).ToArray();
        if (list.Length > MaxNames)
        {
            throw new ArgumentException($"more than {MaxNames} CRIU options named; there are {All.Count}", nameof(names));
        }

        var unknown = list.Where(n => !s_byName.ContainsKey(n)).Distinct(StringComparer.Ordinal).ToArray();
        if (unknown.Length > 0)
        {
            throw new ArgumentException(
                $"unknown CRIU option(s) {string.Join(", ", unknown.Select(n => $"'{Clip(n)}'"))}; known: {string.Join(", ", All.Select(f => f.Name))}", nameof(names));
        }

        return new CriuFlags(list);
    }

    /// <summary>Sets every option of this set in a CRIU request (dump, pre-dump or restore).</summary>
    public void ApplyTo(Rpc.CriuOpts opts)
    {
        foreach (var name in _set)
        {
            s_byName[name].Set(opts);
        }
    }

    public bool Equals(CriuFlags? other) => other is not null && _set.SetEquals(other._set);

    public override int GetHashCode() => string.Join(',', Names).GetHashCode(StringComparison.Ordinal);

    /// <summary>"--tcp-established --shell-job", or "none".</summary>
    public override string ToString() => _set.Count == 0 ? "none" : string.Join(' ', Names.Select(n => "--" + n));

    /// <summary>Names accepted in one set, repeats included: anything longer is not a user's set of options.</summary>
    public const int MaxNames = 64;

    /// <summary>A name as it may be shown: at most 40 characters, control and other unprintable characters as '?'.</summary>
    private static string Clip(string s)
    {
        var shown = s.Length <= 40 ? s : s[..40];
        var chars = shown.Select(c => char.IsControl(c) || char.IsSurrogate(c) || c == '\uFFFD' ? '?' : c).ToArray();
        return new string(chars) + (s.Length > 40 ? "..." : "");
    }
}

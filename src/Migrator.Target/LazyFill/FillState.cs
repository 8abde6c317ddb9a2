using System.Text.Json;
using System.Text.Json.Serialization;

namespace Migration.Target.LazyFill;

/// <summary>Where a lazy fill is (<see cref="FillState.Phase"/>).</summary>
public enum FillPhase
{
    /// <summary>The fill process runs; <c>criu lazy-pages</c> is not started yet.</summary>
    Starting,

    /// <summary><c>criu lazy-pages</c> runs and its pages are served.</summary>
    Serving,

    /// <summary>Every lazy page was filled (or the restored tree exited): the fill process has removed the data.</summary>
    Done,

    /// <summary>The fill failed; the restored tree, if one was handed over, was killed.</summary>
    Failed,
}

/// <summary>
/// The state file of a lazy fill, <see cref="FileName"/> in the migration's work directory: written by the fill process
/// (<see cref="FillServer"/>) at every change and every <see cref="FillServer.ProgressPeriod"/>, replaced atomically
/// (write then rename), so a reader sees a whole one. An agent reads it for progress and, after a restart, to tell a
/// fill still running (not to be swept) from one that ended or died (its data to be removed, and a tree it left
/// unfilled to be killed). Read back with every field validated: the file is input like any other.
/// </summary>
public sealed record FillState
{
    public const string FileName = "lazy-fill.json";

    /// <summary>A state file is a few hundred bytes; anything much larger is not one.</summary>
    public const int MaxBytes = 64 * 1024;

    /// <summary>Longest error text kept.</summary>
    public const int MaxErrorChars = 4096;

    public FillPhase Phase { get; init; }

    /// <summary>The fill process, and its start time (clock ticks since boot, /proc/PID/stat) against pid reuse.</summary>
    public int ServerPid { get; init; }

    public ulong ServerStart { get; init; }

    /// <summary><c>criu lazy-pages</c>, a child of the fill process; 0 until it runs.</summary>
    public int CriuPid { get; init; }

    /// <summary>The restored tree's root and its start time, once the agent handed it over (after the restore); else 0.</summary>
    public int TreePid { get; init; }

    public ulong TreeStart { get; init; }

    /// <summary>Pages served to the daemon so far (each one copied into the restored tree).</summary>
    public long PagesFilled { get; init; }

    /// <summary>Pages marked lazy in the images: what the fill has to bring; 0 until the tree was handed over.</summary>
    public long LazyPages { get; init; }

    /// <summary>Why the fill failed; null otherwise.</summary>
    public string? Error { get; init; }

    /// <summary>Whether the phase is final (the fill process exits right after writing it).</summary>
    [JsonIgnore]
    public bool Ended => Phase is FillPhase.Done or FillPhase.Failed;

    private static readonly JsonSerializerOptions s_json = new()
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase, allowIntegerValues: false) },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Writes this state into <paramref name="workDir"/>, replacing the previous one atomically.</summary>
    public void Write(string workDir)
    {
        var path = Path.Combine(workDir, FileName);
        var temp = path + ".tmp";
        File.WriteAllBytes(temp, JsonSerializer.SerializeToUtf8Bytes(this with { Error = Truncate(Error) }, s_json));
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>
    /// The state in <paramref name="workDir"/>; null when there is none. A file that is not a valid state (too large,
    /// not JSON, a field out of range) throws <see cref="InvalidDataException"/> saying which.
    /// </summary>
    public static FillState? Read(string workDir)
    {
        var path = Path.Combine(workDir, FileName);
        byte[] bytes;
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read);
            if (fs.Length > MaxBytes)
            {
                throw new InvalidDataException($"{path}: {fs.Length} bytes; a fill state is at most {MaxBytes}");
            }

            bytes = new byte[fs.Length];
            fs.ReadExactly(bytes);
        }
        catch (FileNotFoundException)
        {
            return null;
        }

        FillState? state;
        try
        {
            state = JsonSerializer.Deserialize<FillState>(bytes, s_json);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: not a fill state: {ex.Message}");
        }

        if (state is null || !Enum.IsDefined(state.Phase) || state.ServerPid <= 0 || state.CriuPid < 0 || state.TreePid < 0 || state.PagesFilled < 0
            || state.LazyPages < 0 || (state.TreePid > 0 && state.TreeStart == 0) || state.Error is { Length: > MaxErrorChars })
        {
            throw new InvalidDataException($"{path}: a field is out of range (phase, pids, counts or error)");
        }

        return state;
    }

    private static string? Truncate(string? s) => s is { Length: > MaxErrorChars } ? s[..MaxErrorChars] : s;
}

/// <summary>
/// What an agent can tell of a lazy fill in progress (for metrics and GetMigration): a snapshot of the state file.
/// </summary>
/// <param name="Phase">Where the fill is.</param>
/// <param name="PagesFilled">Pages brought into the restored tree so far.</param>
/// <param name="LazyPages">Pages it has to bring in all (0 until known).</param>
/// <param name="Error">Why it failed, if it did.</param>
public readonly record struct LazyFillProgress(FillPhase Phase, long PagesFilled, long LazyPages, string? Error)
{
    public static LazyFillProgress From(FillState s) => new(s.Phase, s.PagesFilled, s.LazyPages, s.Error);
}

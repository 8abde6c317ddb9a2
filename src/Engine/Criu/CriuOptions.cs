namespace Migration.Engine.Criu;

/// <summary>Where CRIU is and how verbose its logs are.</summary>
public sealed record CriuOptions
{
    /// <summary>Paths tried in order when <see cref="CriuPath"/> is not given: the setup script's install first.</summary>
    public static readonly string[] DefaultSearchPaths = ["/opt/migrate/criu/sbin/criu", "/usr/local/sbin/criu", "/usr/sbin/criu"];

    /// <summary>CRIU 4.2 is the oldest that dumps and restores on the kernels this targets (ARCHITECTURE.md).</summary>
    public static readonly Version MinimumVersion = new(4, 2);

    /// <summary>CRIU's log level 4 (debug) costs little and is what a failed migration needs to be explained.</summary>
    public const int DefaultLogLevel = 4;

    public string CriuPath { get; init; } = Locate();

    public int LogLevel { get; init; } = DefaultLogLevel;

    /// <summary>The criu binary: $MIGRATE_CRIU, else the first of <see cref="DefaultSearchPaths"/> that exists, else "criu" on PATH.</summary>
    public static string Locate()
    {
        var env = Environment.GetEnvironmentVariable("MIGRATE_CRIU");
        if (!string.IsNullOrEmpty(env))
        {
            return env;
        }

        return DefaultSearchPaths.FirstOrDefault(File.Exists) ?? "criu";
    }
}

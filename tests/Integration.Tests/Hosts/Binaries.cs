namespace Migration.Integration.Tests.Hosts;

/// <summary>
/// The executables the tests run: by default the ones built from this checkout with the tests
/// (src/*/bin/CONFIG/net10.0, native/bin); MIGRATE_BIN_DIR points at an installed set instead.
/// </summary>
public static class Binaries
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Migrate => Find("migrate", "src/Migrator.Source/Cli", "migrate.d/migrate");

    public static string Agent => Find("migrate-agent", "src/Migrator.Target", "migrate-agent.d/migrate-agent");

    public static string Memwork => Native("memwork");

    /// <summary>The TCP sequence server and client (native/workload/tcpseq.c).</summary>
    public static string Tcpseq => Native("tcpseq");

    private static string Native(string name)
    {
        var dir = Environment.GetEnvironmentVariable("MIGRATE_BIN_DIR");
        var path = dir is not null ? Path.Combine(dir, name) : Path.Combine(RepoRoot, "native/bin", name);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing: run make -C native (scripts/setup.sh does)");
    }

    private static string Find(string name, string project, string installed)
    {
        var dir = Environment.GetEnvironmentVariable("MIGRATE_BIN_DIR");
        if (dir is not null)
        {
            return Path.Combine(dir, installed);
        }

#if DEBUG
        const string config = "Debug";
#else
        const string config = "Release";
#endif
        var path = Path.Combine(RepoRoot, project, "bin", config, "net10.0", name);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing: it is built with the test project");
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "Migration.sln")))
            {
                return d.FullName;
            }
        }

        throw new DirectoryNotFoundException("Migration.sln not found above the test directory");
    }
}

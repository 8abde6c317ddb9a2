using Xunit;

namespace Migration.Tests.Common;

/// <summary>
/// A fact that needs root, CRIU 4.2+ and network namespaces. Where they are missing it is skipped with the
/// reason, except under CI (CI=true), where the machine has them all and a missing one must fail the run.
/// </summary>
public sealed class RequiresRootFactAttribute : FactAttribute
{
    public RequiresRootFactAttribute()
    {
        var why = Environment.GetEnvironmentVariable("CI") == "true" ? null : Prerequisites.Missing();
        if (why is not null)
        {
            Skip = why;
        }
    }
}

/// <summary>The theory form of <see cref="RequiresRootFactAttribute"/>: same prerequisites, same rule under CI.</summary>
public sealed class RequiresRootTheoryAttribute : TheoryAttribute
{
    public RequiresRootTheoryAttribute()
    {
        var why = Environment.GetEnvironmentVariable("CI") == "true" ? null : Prerequisites.Missing();
        if (why is not null)
        {
            Skip = why;
        }
    }
}

public static class Prerequisites
{
    private static readonly Lazy<string?> s_missing = new(Probe);

    /// <summary>Why the real-CRIU tests cannot run here, or null when they can.</summary>
    public static string? Missing() => s_missing.Value;

    private static string? Probe()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "needs Linux";
        }

        if (GetUid() != 0)
        {
            return "needs root (CRIU dumps and restores processes; the tests create network namespaces)";
        }

        if (Migration.Engine.Criu.CriuOptions.Locate() == "criu")
        {
            return "needs CRIU 4.2+ installed by scripts/setup.sh (or MIGRATE_CRIU)";
        }

        return null;
    }

    private static uint GetUid()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("Uid:", StringComparison.Ordinal))
            {
                return uint.Parse(line.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return uint.MaxValue;
    }
}

namespace Migration.Engine;

/// <summary>The version both roles report (preflight, agent start, metrics): the assemblies are built together.</summary>
public static class BuildInfo
{
    public static readonly string Version = typeof(BuildInfo).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";
}

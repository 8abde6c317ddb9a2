namespace Migration.PageServer.Control;

/// <summary>Method paths of the Agent service (proto/migrate/v1/agent.proto).</summary>
public static class AgentMethods
{
    public const string Service = "migrate.v1.Agent";
    public const string Preflight = "/migrate.v1.Agent/Preflight";
    public const string Begin = "/migrate.v1.Agent/Begin";
    public const string PutImage = "/migrate.v1.Agent/PutImage";
    public const string PrepareCutover = "/migrate.v1.Agent/PrepareCutover";
    public const string Restore = "/migrate.v1.Agent/Restore";
    public const string Commit = "/migrate.v1.Agent/Commit";
    public const string Abort = "/migrate.v1.Agent/Abort";
    public const string GetMigration = "/migrate.v1.Agent/GetMigration";
}

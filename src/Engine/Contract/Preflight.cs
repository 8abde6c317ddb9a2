using Migration.Engine.Criu;

namespace Migration.Engine.Contract;

/// <summary>What the source sends in preflight.</summary>
public sealed record SourcePreflight(string SourceHost, string SourceVersion, CriuVersionInfo Criu, byte[] CpuInfoImage, ulong BytesNeeded, string Mode);

/// <summary>One preflight check on the target.</summary>
public sealed record PreflightCheckResult(string Name, bool Ok, string Detail);

/// <summary>The target's preflight answer.</summary>
public sealed record TargetPreflight(bool Ok, string AgentVersion, string Hostname, CriuVersionInfo? Criu, ulong FreeBytes, IReadOnlyList<PreflightCheckResult> Checks);

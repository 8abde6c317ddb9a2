namespace Migration.Engine.Contract;

/// <summary>Limits of the control API (proto/migrate/v1/agent.proto) that both its client and its server apply.</summary>
public static class ControlApi
{
    /// <summary>
    /// Largest message either side sends or accepts: twice an image chunk (the source sends 2 MiB of data a call),
    /// so a chunk and its other fields always fit. Checked from a message's length prefix, before its body is awaited.
    /// </summary>
    public const int MaxMessageBytes = 4 << 20;

    /// <summary>gRPC's prefix of each message on the wire: a compressed flag and a 4-byte length (grpc/doc/PROTOCOL-HTTP2.md).</summary>
    public const int MessagePrefixBytes = 5;

    /// <summary>
    /// Connections the agent's control port holds at once (each carries up to 64 calls). A source needs one; what is
    /// past the bound is closed at once by Kestrel, so a flood of idle connections cannot exhaust the agent.
    /// </summary>
    public const int MaxConnections = 128;
}

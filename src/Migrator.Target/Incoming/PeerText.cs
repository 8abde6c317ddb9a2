namespace Migration.Target.Incoming;

/// <summary>Text a peer sent, made safe to put into logs and messages: bounded, without control characters.</summary>
internal static class PeerText
{
    public static string Printable(string? s, int max = 64) =>
        s is null ? "" : new string(s.Take(max).Select(c => char.IsControl(c) ? '?' : c).ToArray());
}

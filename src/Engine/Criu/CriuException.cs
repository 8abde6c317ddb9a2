namespace Migration.Engine.Criu;

/// <summary>
/// A CRIU request that failed. The message carries CRIU's own error lines (from its log file and its
/// answer), so the caller sees why, not only that it failed.
/// </summary>
public sealed class CriuException : Exception
{
    public CriuException(string operation, string message, IReadOnlyList<string> criuErrors, string? logPath, Exception? inner = null)
        : base(Compose(operation, message, criuErrors, logPath), inner)
    {
        Operation = operation;
        CriuErrors = criuErrors;
        LogPath = logPath;
    }

    public string Operation { get; }

    /// <summary>Error lines CRIU wrote (its log's "Error" lines, last ones first cut to a few).</summary>
    public IReadOnlyList<string> CriuErrors { get; }

    public string? LogPath { get; }

    private static string Compose(string operation, string message, IReadOnlyList<string> errors, string? logPath)
    {
        var text = $"criu {operation} failed: {message}";
        if (errors.Count > 0)
        {
            text += Environment.NewLine + "  criu: " + string.Join(Environment.NewLine + "  criu: ", errors);
        }

        if (logPath is not null)
        {
            text += Environment.NewLine + $"  (full CRIU log: {logPath})";
        }

        return text;
    }
}

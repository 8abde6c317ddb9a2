namespace Migration.Engine.Criu;

/// <summary>Reads the error lines out of a CRIU log file.</summary>
public static class CriuLog
{
    /// <summary>Lines CRIU prints for every run here and that explain nothing (see ARCHITECTURE.md).</summary>
    private static readonly string[] s_harmless = ["Can't setup RLIMIT_NOFILE"];

    /// <summary>At most this many error lines are carried into an exception message.</summary>
    public const int MaxErrorLines = 12;

    /// <summary>
    /// Returns the "Error" lines of a CRIU log (format "(00.012345) Error (criu/file.c:123): text"),
    /// the last <see cref="MaxErrorLines"/> of them, without the timestamp. Missing file: empty.
    /// </summary>
    public static IReadOnlyList<string> ReadErrors(string? path)
    {
        if (path is null || !File.Exists(path))
        {
            return [];
        }

        var errors = new List<string>();
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                var text = StripTimestamp(line);
                if (IsError(text) && !s_harmless.Any(h => text.Contains(h, StringComparison.Ordinal)))
                {
                    errors.Add(text);
                }
            }
        }
        catch (IOException)
        {
            // The log is diagnostic only; an unreadable log must not hide the original failure.
            return errors;
        }

        return errors.Count <= MaxErrorLines ? errors : errors.GetRange(errors.Count - MaxErrorLines, MaxErrorLines);
    }

    internal static string StripTimestamp(string line)
    {
        var t = line.TrimStart();
        if (t.StartsWith('('))
        {
            int close = t.IndexOf(')');
            if (close > 0)
            {
                return t[(close + 1)..].TrimStart();
            }
        }

        return t;
    }

    internal static bool IsError(string text) =>
        text.StartsWith("Error", StringComparison.Ordinal) || text.Contains(" Error ", StringComparison.Ordinal)
        || text.StartsWith("Warn", StringComparison.Ordinal) && text.Contains("fail", StringComparison.OrdinalIgnoreCase);
}

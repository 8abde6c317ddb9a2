using System.Globalization;

namespace Migration.Engine.Processes;

/// <summary>Fields of /proc's "Name:  value kB" files (/proc/PID/status, /proc/meminfo).</summary>
internal static class ProcFields
{
    /// <summary>
    /// The value of <paramref name="field"/> in <paramref name="path"/>, in KiB; 0 when the field is missing or the file
    /// cannot be read (a process that exited while we looked holds no memory).
    /// </summary>
    public static ulong KiB(string path, string field)
    {
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                {
                    var num = line[(field.Length + 1)..].Trim().Split(' ')[0];
                    return ulong.TryParse(num, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : 0;
                }
            }
        }
        catch (IOException)
        {
            // Gone or unreadable: nothing known, as documented.
        }

        return 0;
    }
}

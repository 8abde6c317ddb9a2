using System.Text;

namespace Migration.Engine.Criu;

/// <summary>
/// What a criu process printed on stdout and stderr, kept up to a bound: criu logs to its log file, and this output is
/// only the fallback diagnostic for failures before the log exists. Thread-safe (both streams append).
/// </summary>
internal sealed class BoundedOutput(int limit)
{
    private readonly StringBuilder _text = new();

    /// <summary>Collects <paramref name="process"/>'s stdout and stderr lines (both redirected) from now on.</summary>
    public void Capture(System.Diagnostics.Process process)
    {
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_text)
        {
            if (_text.Length < limit)
            {
                _text.AppendLine(line);
            }
        }
    }

    public override string ToString()
    {
        lock (_text)
        {
            return _text.ToString();
        }
    }
}

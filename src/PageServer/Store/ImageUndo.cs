using Microsoft.Extensions.Logging;

namespace Migration.PageServer.Store;

/// <summary>
/// What <see cref="PageStore.WriteImages"/> changed in an images directory, to put it back when it fails part way:
/// files it created are deleted, data files it renamed into place are renamed back.
/// </summary>
internal sealed class ImageUndo
{
    private readonly ILogger _logger;
    private readonly List<string> _created = [];
    private readonly List<(string Now, string Back)> _moved = [];

    public ImageUndo(ILogger logger) => _logger = logger;

    public void Created(string path) => _created.Add(path);

    public void Moved(string now, string back) => _moved.Add((now, back));

    public bool WasMoved(string now) => _moved.Exists(m => m.Now == now);

    /// <summary>Undoes everything, newest first; a step that fails is logged and the others still run.</summary>
    public void Rollback()
    {
        for (int i = _created.Count - 1; i >= 0; i--)
        {
            Try(_created[i], () => File.Delete(_created[i]));
        }

        for (int i = _moved.Count - 1; i >= 0; i--)
        {
            var (now, back) = _moved[i];
            Try(now, () => File.Move(now, back, overwrite: false));
        }
    }

    private void Try(string path, Action step)
    {
        try
        {
            step();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Safe to swallow: the exception that made us undo is the one the caller must see; this one is logged.
            PageStoreLog.UndoFailed(_logger, path, ex.Message);
        }
    }
}

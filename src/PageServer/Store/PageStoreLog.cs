using Microsoft.Extensions.Logging;

namespace Migration.PageServer.Store;

/// <summary>Log definitions of the page store and its parts (event ids 800-819).</summary>
internal static partial class PageStoreLog
{
    [LoggerMessage(EventId = 800, Level = LogLevel.Debug, Message = "page store: {Target} opened, data file {Path}")]
    public static partial void TargetOpened(ILogger logger, string target, string path);

    [LoggerMessage(EventId = 801, Level = LogLevel.Debug, Message = "page store: round {Round} durable, {Files} data files synced in {Ms:0.0} ms")]
    public static partial void RoundDurable(ILogger logger, int round, int files, double ms);

    [LoggerMessage(EventId = 802, Level = LogLevel.Information, Message = "page store: images of {Targets} targets written into {Directory} in {Ms:0.0} ms")]
    public static partial void ImagesWritten(ILogger logger, int targets, string directory, double ms);

    [LoggerMessage(EventId = 803, Level = LogLevel.Debug, Message = "page store: {Pagemap} ({Entries} entries) and {Pages} ({PresentPages} pages, {Mode}) in {Ms:0.0} ms")]
    public static partial void ImageComposed(ILogger logger, string pagemap, string pages, int entries, long presentPages, string mode, double ms);

    [LoggerMessage(EventId = 804, Level = LogLevel.Warning, Message = "page store: cannot delete data file {Path}: {Error}")]
    public static partial void DeleteFailed(ILogger logger, string path, string error);

    [LoggerMessage(EventId = 805, Level = LogLevel.Warning, Message = "page store: undoing a failed image write, {Path} could not be put back: {Error}")]
    public static partial void UndoFailed(ILogger logger, string path, string error);

    [LoggerMessage(EventId = 806, Level = LogLevel.Debug, Message = "page store: {Target} provisioned, {Bytes} bytes of room made ahead of its pages")]
    public static partial void Provisioned(ILogger logger, string target, long bytes);

    [LoggerMessage(EventId = 808, Level = LogLevel.Information, Message = "page store: the {Bytes} bytes of room made for {Target} went unused: the dump has no such target")]
    public static partial void ProvisionUnused(ILogger logger, string target, long bytes);

    [LoggerMessage(EventId = 807, Level = LogLevel.Warning, Message = "page store: no room made ahead for {Target} (its pages go into new space): {Error}")]
    public static partial void ProvisionFailed(ILogger logger, string target, string error);
}

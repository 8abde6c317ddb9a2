using Migration.PageServer.Pages;

namespace Migration.PageServer.Store;

/// <summary>What <see cref="PageStore.WriteImages"/> wrote for one target.</summary>
/// <param name="Target">The task or shmem segment.</param>
/// <param name="PagesId">The <c>pages_id</c> of the pagemap head: <see cref="PagesPath"/> is <c>pages-&lt;PagesId&gt;.img</c>.</param>
/// <param name="PagemapPath">The <c>pagemap-*.img</c> written.</param>
/// <param name="PagesPath">The <c>pages-N.img</c> written or moved into place.</param>
/// <param name="Entries">Pagemap entries (runs of adjacent pages of one kind).</param>
/// <param name="PresentPages">Pages in <see cref="PagesPath"/>.</param>
/// <param name="Moved">The data file was renamed into place (it already was in pagemap order) instead of copied.</param>
public sealed record ComposedImage(PageTarget Target, uint PagesId, string PagemapPath, string PagesPath, int Entries, long PresentPages, bool Moved);

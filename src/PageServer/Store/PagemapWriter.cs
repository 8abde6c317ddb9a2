using Migration.Engine.Images;
using Migration.Engine.Images.Pb;

namespace Migration.PageServer.Store;

/// <summary>
/// Writes a <c>pagemap-*.img</c> exactly as CRIU 4.2 does (criu/page-xfer.c write_pagemap_loc): every entry
/// carries <c>compat_nr_pages = 0</c> besides <c>nr_pages</c> and <c>flags</c>, because images/pagemap.proto declares
/// field 2 <c>required</c> and CRIU's protobuf-c refuses an entry without it ("Failed unpacking object").
/// </summary>
/// <remarks>
/// <see cref="PagemapImage.Write"/> leaves field 2 out (proto/criu/pagemap.proto has it optional), and
/// <c>criu restore</c> fails on such an image; measured with CRIU 4.2.1. Once Engine writes the field, the store
/// can use <see cref="PagemapImage.Write"/> again.
/// </remarks>
internal static class PagemapWriter
{
    public static void Write(FileStream file, uint pagesId, IReadOnlyList<PagemapRun> runs)
    {
        ImageFile.WriteHeader(file, ImageFile.PagemapMagic);
        ImageFile.WriteEntry(file, new PagemapHead { PagesId = pagesId });
        var entry = new PagemapEntry();
        foreach (var run in runs)
        {
            entry.Vaddr = run.Vaddr;
            entry.CompatNrPages = 0;
            entry.NrPages = run.NrPages;
            entry.Flags = (uint)run.Flags;
            ImageFile.WriteEntry(file, entry);
        }
    }
}

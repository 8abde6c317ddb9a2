using System.Buffers;
using System.Buffers.Binary;
using Migration.Engine.Images;

namespace Migration.PageServer.Criu;

/// <summary>
/// Command numbers of CRIU's page-server protocol: the low 16 bits of <see cref="PageServerIov.Cmd"/>
/// (criu/page-xfer.c, <c>PS_IOV_*</c>; unchanged since CRIU 3.x and the same in 4.2.1).
/// </summary>
public static class PageServerCommand
{
    /// <summary><c>PS_IOV_ADD</c>: legacy "pages present", nr_pages * 4096 bytes follow. Means ADD_F with PE_PRESENT.</summary>
    public const ushort Add = 1;

    /// <summary><c>PS_IOV_HOLE</c>: legacy "pages are in the parent image", header only. Means ADD_F with PE_PARENT.</summary>
    public const ushort Hole = 2;

    /// <summary><c>PS_IOV_OPEN</c>: legacy open of dst_id's pagemap, no answer.</summary>
    public const ushort Open = 3;

    /// <summary><c>PS_IOV_OPEN2</c>: open dst_id's pagemap; the server answers one byte, has_parent (open_page_server_xfer).</summary>
    public const ushort Open2 = 4;

    /// <summary><c>PS_IOV_PARENT</c>: does dst_id have a parent image? The server answers an int32 (check_parent_server_xfer, pre-dump).</summary>
    public const ushort Parent = 5;

    /// <summary><c>PS_IOV_ADD_F</c>: a run of pages with PE_* flags in the high 16 bits of cmd (write_pagemap_to_server).</summary>
    public const ushort AddF = 6;

    /// <summary><c>PS_IOV_GET</c>: the lazy-pages daemon asks for pages; dst_id is the raw vpid (request_remote_pages).</summary>
    public const ushort Get = 7;

    /// <summary><c>PS_IOV_CLOSE</c>: end of the session; the server answers int32 0 once it has everything (disconnect_from_page_server).</summary>
    public const ushort Close = 0x1023;

    /// <summary><c>PS_IOV_FORCE_CLOSE</c>: as CLOSE, sent when CRIU was handed the socket (--ps-socket) and cannot just close it.</summary>
    public const ushort ForceClose = 0x1024;

    /// <summary>Bits of cmd that hold the command; the flags sit above them (criu/page-xfer.c <c>PS_CMD_BITS</c>).</summary>
    public const int CommandBits = 16;

    /// <summary>The PE_* flags the protocol knows (criu/include/pagemap.h: PE_PARENT 1, PE_LAZY 2, PE_PRESENT 4).</summary>
    public const PagemapFlags KnownFlags = PagemapFlags.Parent | PagemapFlags.Lazy | PagemapFlags.Present;

    /// <summary>The flag sets CRIU 4.2.1 produces: pages (PRESENT, PRESENT|LAZY, LAZY; ppb_xfer_flags) and holes (PARENT; get_hole_flags).</summary>
    internal static bool IsRunFlags(PagemapFlags flags) => flags is PagemapFlags.Present or (PagemapFlags.Present | PagemapFlags.Lazy)
        or PagemapFlags.Lazy or PagemapFlags.Parent;

    /// <summary>Name of a command for messages ("ADD_F", "0x1234" for unknown ones).</summary>
    public static string Name(uint command) => command switch
    {
        Add => "ADD",
        Hole => "HOLE",
        Open => "OPEN",
        Open2 => "OPEN2",
        Parent => "PARENT",
        AddF => "ADD_F",
        Get => "GET",
        Close => "CLOSE",
        ForceClose => "FORCE_CLOSE",
        _ => $"0x{command:x}",
    };
}

/// <summary>
/// CRIU's <c>struct page_server_iov</c>: <c>u32 cmd; u32 pad; u64 nr_pages; u64 vaddr; u64 dst_id;</c> = 32 bytes,
/// no magic, in the native byte order of the CRIU host. Every platform this project runs on (x86_64, arm64) is
/// little-endian, so it is read and written little-endian explicitly (BinaryPrimitives), not with the host's order.
/// The pad is the compiler's alignment hole before nr_pages: CRIU fills headers with designated initializers,
/// which do not promise zero padding, so it is ignored on read and written as zero.
/// </summary>
public readonly record struct PageServerIov(uint Cmd, ulong NrPages, ulong Vaddr, ulong DstId)
{
    /// <summary>Bytes of one header on the wire.</summary>
    public const int Size = 32;

    private const int CmdOffset = 0;
    private const int NrPagesOffset = 8;
    private const int VaddrOffset = 16;
    private const int DstIdOffset = 24;
    private const uint CommandMask = (1u << PageServerCommand.CommandBits) - 1;

    /// <summary>A header for <paramref name="command"/> with <paramref name="flags"/> in cmd's high bits.</summary>
    public static PageServerIov Create(ushort command, PagemapFlags flags, ulong nrPages, ulong vaddr, ulong dstId) =>
        new(EncodeCmd(command, flags), nrPages, vaddr, dstId);

    /// <summary><c>cmd = flags &lt;&lt; 16 | command</c> (criu/page-xfer.c encode_ps_cmd).</summary>
    public static uint EncodeCmd(ushort command, PagemapFlags flags) => ((uint)flags << PageServerCommand.CommandBits) | command;

    /// <summary>The command: cmd's low 16 bits (decode_ps_cmd).</summary>
    public ushort Command => (ushort)(Cmd & CommandMask);

    /// <summary>The raw flag bits: cmd's high 16 bits (decode_ps_flags); may hold bits no PE_* names.</summary>
    public uint FlagBits => Cmd >> PageServerCommand.CommandBits;

    /// <summary>The flags as PE_* values (only meaningful once <see cref="FlagBits"/> was checked against <see cref="PageServerCommand.KnownFlags"/>).</summary>
    public PagemapFlags Flags => (PagemapFlags)FlagBits;

    /// <summary>
    /// What a run command means in PE_* terms, as CRIU's page server reads it: legacy ADD is PE_PRESENT,
    /// legacy HOLE is PE_PARENT, ADD_F carries its own flags. Other commands: <see cref="PagemapFlags.None"/>.
    /// </summary>
    public PagemapFlags RunFlags => Command switch
    {
        PageServerCommand.Add => PagemapFlags.Present,
        PageServerCommand.Hole => PagemapFlags.Parent,
        PageServerCommand.AddF => Flags,
        _ => PagemapFlags.None,
    };

    /// <summary>Reads one header from the front of <paramref name="buffer"/>.</summary>
    /// <returns>False, leaving <paramref name="buffer"/> untouched, when fewer than 32 bytes are there; otherwise
    /// true with <paramref name="buffer"/> sliced past the header.</returns>
    public static bool TryRead(ref ReadOnlySequence<byte> buffer, out PageServerIov iov)
    {
        if (buffer.Length < Size)
        {
            iov = default;
            return false;
        }

        var first = buffer.FirstSpan;
        if (first.Length >= Size)
        {
            iov = Read(first);
        }
        else
        {
            // The header spans segments: copy it out once.
            Span<byte> copy = stackalloc byte[Size];
            buffer.Slice(0, Size).CopyTo(copy);
            iov = Read(copy);
        }

        buffer = buffer.Slice(Size);
        return true;
    }

    /// <summary>Reads a header from the first 32 bytes of <paramref name="source"/>.</summary>
    public static PageServerIov Read(ReadOnlySpan<byte> source)
    {
        if (source.Length < Size)
        {
            throw new ArgumentException($"a page_server_iov is {Size} bytes, got {source.Length}", nameof(source));
        }

        return new PageServerIov(
            BinaryPrimitives.ReadUInt32LittleEndian(source[CmdOffset..]),
            BinaryPrimitives.ReadUInt64LittleEndian(source[NrPagesOffset..]),
            BinaryPrimitives.ReadUInt64LittleEndian(source[VaddrOffset..]),
            BinaryPrimitives.ReadUInt64LittleEndian(source[DstIdOffset..]));
    }

    /// <summary>Writes the 32 bytes of this header (pad zero) to the front of <paramref name="destination"/>.</summary>
    public void Write(Span<byte> destination)
    {
        if (destination.Length < Size)
        {
            throw new ArgumentException($"a page_server_iov needs {Size} bytes, got {destination.Length}", nameof(destination));
        }

        BinaryPrimitives.WriteUInt32LittleEndian(destination[CmdOffset..], Cmd);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[(CmdOffset + 4)..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[NrPagesOffset..], NrPages);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[VaddrOffset..], Vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[DstIdOffset..], DstId);
    }

    public override string ToString() =>
        $"{PageServerCommand.Name(Command)} flags 0x{FlagBits:x} nr_pages {NrPages} vaddr 0x{Vaddr:x} dst_id 0x{DstId:x}";
}

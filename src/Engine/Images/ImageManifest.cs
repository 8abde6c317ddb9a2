using System.Security.Cryptography;

namespace Migration.Engine.Images;

/// <summary>An image file as the target must hold it.</summary>
public sealed record ImageFileInfo(string Name, ulong Size, byte[] Sha256);

/// <summary>The list of image files of a dump directory, with sizes and SHA-256, in name order.</summary>
public static class ImageManifest
{
    public static IReadOnlyList<ImageFileInfo> Build(string imagesDir)
    {
        var files = new List<ImageFileInfo>();
        foreach (var path in Directory.EnumerateFiles(imagesDir).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(path);
            if (!ImageName.IsValid(name))
            {
                throw new InvalidDataException($"dump directory holds a file the target would refuse: '{name}'");
            }

            using var fs = File.OpenRead(path);
            var hash = SHA256.HashData(fs);
            files.Add(new ImageFileInfo(name, (ulong)fs.Length, hash));
        }

        return files;
    }

    public static ulong TotalBytes(IReadOnlyList<ImageFileInfo> manifest) => manifest.Aggregate(0UL, (a, f) => a + f.Size);
}

/// <summary>Names an image file may have: a plain file name CRIU writes, nothing that leaves the directory.</summary>
public static class ImageName
{
    public const int MaxLength = 128;

    public static bool IsValid(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxLength || name == "." || name == "..")
        {
            return false;
        }

        if (!char.IsAsciiLetterOrDigit(name[0]))
        {
            return false;
        }

        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_'))
            {
                return false;
            }
        }

        return true;
    }
}

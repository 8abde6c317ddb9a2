using System.Security.Cryptography;
using System.Text;
using Migration.Engine.Images;
using Migration.Engine.Processes;
using Xunit;

namespace Migration.Engine.Tests.Images;

public class ImageNameTests
{
    [Theory]
    [InlineData("core-1.img")]
    [InlineData("pagemap-42.img")]
    [InlineData("pages-1.img")]
    [InlineData("inventory.img")]
    [InlineData("tcp-stream-3f.img")]
    [InlineData("cpuinfo.img")]
    [InlineData("stats-dump")]
    [InlineData("ids-1_2.img")]
    [InlineData("9p.img")]
    public void IsValid_AcceptsCriuImageNames(string name)
    {
        Assert.True(ImageName.IsValid(name));
    }

    [Theory]
    [InlineData("")]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData("../x")]
    [InlineData("a/b")]
    [InlineData("/etc/passwd")]
    [InlineData(".hidden")]
    [InlineData("-rf")]
    [InlineData("_x")]
    [InlineData("x\0y")]
    [InlineData("x\ny")]
    [InlineData("a\\b")]
    [InlineData("name with space")]
    [InlineData("core-1.img ")]
    [InlineData("naïve.img")]
    [InlineData("образ.img")]
    [InlineData("ｃore.img")] // fullwidth 'c'
    [InlineData("core\u0661.img")] // Arabic-Indic digit one
    public void IsValid_RejectsNamesThatAreNotPlainAsciiFileNames(string name)
    {
        Assert.False(ImageName.IsValid(name));
    }

    [Fact]
    public void IsValid_Null_IsFalse()
    {
        Assert.False(ImageName.IsValid(null));
    }

    [Fact]
    public void IsValid_LengthLimit_IsMaxLengthInclusive()
    {
        Assert.Equal(128, ImageName.MaxLength);
        Assert.True(ImageName.IsValid(new string('a', ImageName.MaxLength)));
        Assert.False(ImageName.IsValid(new string('a', ImageName.MaxLength + 1)));
    }
}

public sealed class ImageManifestTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("manifest-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Build_ListsFilesInOrdinalNameOrder_WithSizeAndSha256()
    {
        var contents = new Dictionary<string, byte[]>
        {
            ["pages-1.img"] = RandomNumberGenerator.GetBytes(10_000),
            ["core-1.img"] = Encoding.ASCII.GetBytes("core"),
            ["Zz.img"] = [],
            ["inventory.img"] = [1, 2, 3],
            ["core-10.img"] = [4],
        };
        foreach (var (name, data) in contents)
        {
            File.WriteAllBytes(Path.Combine(_dir, name), data);
        }

        var manifest = ImageManifest.Build(_dir);

        // Ordinal: upper case before lower case, "core-1.img" before "core-10.img".
        Assert.Equal(["Zz.img", "core-1.img", "core-10.img", "inventory.img", "pages-1.img"], manifest.Select(f => f.Name));
        Assert.All(manifest, f =>
        {
            Assert.Equal((ulong)contents[f.Name].Length, f.Size);
            Assert.Equal(SHA256.HashData(contents[f.Name]), f.Sha256);
        });
        Assert.Equal(
            Convert.FromHexString("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), // SHA-256 of nothing
            manifest[0].Sha256);
        Assert.Equal(10_000ul + 4 + 3 + 1, ImageManifest.TotalBytes(manifest));
    }

    [Fact]
    public void Build_EmptyDirectory_IsEmpty()
    {
        var manifest = ImageManifest.Build(_dir);

        Assert.Empty(manifest);
        Assert.Equal(0ul, ImageManifest.TotalBytes(manifest));
    }

    [Fact]
    public void Build_IgnoresSubdirectories()
    {
        File.WriteAllBytes(Path.Combine(_dir, "core-1.img"), [1]);
        Directory.CreateDirectory(Path.Combine(_dir, "sub"));

        var manifest = ImageManifest.Build(_dir);

        Assert.Equal("core-1.img", Assert.Single(manifest).Name);
    }

    [Theory]
    [InlineData(".hidden")]
    [InlineData("name with space")]
    [InlineData("naïve.img")]
    public void Build_FileWithInvalidName_Throws(string badName)
    {
        File.WriteAllBytes(Path.Combine(_dir, "core-1.img"), [1]);
        File.WriteAllBytes(Path.Combine(_dir, badName), [2]);

        var ex = Assert.Throws<InvalidDataException>(() => ImageManifest.Build(_dir));

        Assert.Contains($"'{badName}'", ex.Message, StringComparison.Ordinal);
    }
}

using Migration.Fuzz.Harness;

namespace Migration.Fuzz.Targets;

/// <summary>Every decoder that reads the network or an image file, by name.</summary>
public static class FuzzTargets
{
    public static readonly string[] Names =
        ["page-frame", "page-stream", "criu-page-server", "criu-lazy-pages", "criu-image", "grpc-control", "grpc-put-image", "manifest"];

    public static FuzzTarget Create(string name) => name switch
    {
        "page-frame" => new PageFrameTarget(),
        "page-stream" => new PageStreamTarget(),
        "criu-page-server" => new CriuPageServerTarget(),
        "criu-lazy-pages" => new CriuLazyPagesTarget(),
        "criu-image" => new PagemapImageTarget(),
        "grpc-control" => new GrpcControlTarget(),
        "grpc-put-image" => new GrpcPutImageTarget(),
        "manifest" => new ManifestTarget(),
        _ => throw new ArgumentException($"unknown fuzz target '{name}'; the targets are {string.Join(", ", Names)}", nameof(name)),
    };
}

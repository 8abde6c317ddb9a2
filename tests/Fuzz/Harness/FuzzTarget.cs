namespace Migration.Fuzz.Harness;

/// <summary>How a decoder answered one input.</summary>
public enum FuzzOutcome
{
    /// <summary>Refused the way the decoder documents (its outcome value or its rejection exception).</summary>
    Rejected,

    /// <summary>Taken as valid.</summary>
    Accepted,
}

/// <summary>A length or count field of a seed: where it is, how wide, how it is encoded.</summary>
public readonly record struct SeedField(int Offset, int Width, FieldEncoding Encoding = FieldEncoding.LittleEndian);

public enum FieldEncoding
{
    /// <summary>A fixed-width little-endian integer (page stream, page_server_iov, image entry lengths).</summary>
    LittleEndian,

    /// <summary>A protobuf varint (a tag, a length prefix or an integer field); <see cref="SeedField.Width"/> is its bytes.</summary>
    Varint,
}

/// <summary>A valid encoding made by our own encoders, with the fields a structure-aware mutation lies in.</summary>
public sealed record Seed(string Name, byte[] Bytes, IReadOnlyList<SeedField> Fields);

/// <summary>
/// One decoder under attack: its seed corpus (valid encodings from our own encoders), how one input is fed to it, and
/// which exceptions are its documented rejection. Any other exception is a crash.
/// </summary>
public abstract class FuzzTarget : IDisposable
{
    public abstract string Name { get; }

    /// <summary>What is fed, for the table and the docs.</summary>
    public abstract string Description { get; }

    public abstract IReadOnlyList<Seed> Seeds { get; }

    /// <summary>Bytes one input may allocate whatever its length fields say: a constant plus a multiple of its length.</summary>
    public virtual long AllocationBudget(int inputLength) => (256 << 10) + (16L * inputLength);

    /// <summary>Feeds one input to the decoder. Throws only the decoder's rejection (see <see cref="IsRejection"/>) or a bug.</summary>
    public abstract ValueTask<FuzzOutcome> RunAsync(byte[] input);

    /// <summary>
    /// Makes a mutated input consistent again where a check would otherwise stop almost every mutation at the same
    /// place (a checksum): the mutation then reaches what comes after it. Deterministic; the input as is by default.
    /// </summary>
    public virtual byte[] FixUp(byte[] input) => input;

    /// <summary>The decoder's documented rejection exceptions; none by default (decoders that answer with a value).</summary>
    public virtual bool IsRejection(Exception ex) => false;

    public virtual void Dispose() => GC.SuppressFinalize(this);
}

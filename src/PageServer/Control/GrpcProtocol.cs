using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace Migration.PageServer.Control;

/// <summary>gRPC status codes (grpc/doc/statuscodes.md).</summary>
public enum GrpcStatusCode
{
    OK = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// <summary>A failed call: the status the server (or the transport) gave and its message.</summary>
public sealed class GrpcCallException(GrpcStatusCode status, string message, Exception? inner = null)
    : Exception($"{status}: {message}", inner)
{
    public GrpcStatusCode Status { get; } = status;

    public string Detail { get; } = message;
}

/// <summary>
/// gRPC over HTTP/2 wire facts (grpc/doc/PROTOCOL-HTTP2.md): length-prefixed messages (1-byte compressed
/// flag, 4-byte big-endian length), the content type, the status trailers and the timeout header.
/// </summary>
public static class GrpcProtocol
{
    public const string ContentType = "application/grpc";
    public const string StatusTrailer = "grpc-status";
    public const string MessageTrailer = "grpc-message";
    public const string TimeoutHeader = "grpc-timeout";
    public const int FrameHeaderSize = 5;

    /// <summary>Largest message either side accepts: an image chunk (4 MiB) plus framing, with room.</summary>
    public const int MaxMessageBytes = 8 << 20;

    public enum FrameStatus
    {
        Complete,
        Incomplete,
    }

    /// <summary>Writes one uncompressed message frame.</summary>
    public static byte[] Frame(ReadOnlySpan<byte> message)
    {
        var frame = new byte[FrameHeaderSize + message.Length];
        frame[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)message.Length);
        message.CopyTo(frame.AsSpan(FrameHeaderSize));
        return frame;
    }

    /// <summary>
    /// Parses one frame from <paramref name="buffer"/>. On <see cref="FrameStatus.Complete"/> the payload is
    /// sliced out and <paramref name="buffer"/> advanced past it; otherwise nothing is consumed. The length is
    /// checked against <paramref name="maxMessageBytes"/> before waiting for the body; a compressed frame is
    /// refused (no grpc-encoding is negotiated).
    /// </summary>
    public static FrameStatus TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxMessageBytes, out ReadOnlySequence<byte> payload)
    {
        payload = default;
        if (buffer.Length < FrameHeaderSize)
        {
            return FrameStatus.Incomplete;
        }

        Span<byte> header = stackalloc byte[FrameHeaderSize];
        if (buffer.First.Length >= FrameHeaderSize)
        {
            buffer.First.Span[..FrameHeaderSize].CopyTo(header);
        }
        else
        {
            buffer.Slice(0, FrameHeaderSize).CopyTo(header);
        }

        if (header[0] != 0)
        {
            throw new GrpcCallException(header[0] == 1 ? GrpcStatusCode.Unimplemented : GrpcStatusCode.Internal,
                header[0] == 1 ? "compressed messages are not supported (send grpc-encoding identity)" : $"invalid frame flag {header[0]}");
        }

        uint length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxMessageBytes)
        {
            throw new GrpcCallException(GrpcStatusCode.ResourceExhausted, $"message of {length} bytes exceeds the {maxMessageBytes} byte limit");
        }

        if (buffer.Length < FrameHeaderSize + length)
        {
            return FrameStatus.Incomplete;
        }

        payload = buffer.Slice(FrameHeaderSize, length);
        buffer = buffer.Slice(FrameHeaderSize + length);
        return FrameStatus.Complete;
    }

    /// <summary>grpc-timeout value: at most 8 digits and a unit; milliseconds unless that overflows.</summary>
    public static string EncodeTimeout(TimeSpan timeout)
    {
        long ms = Math.Max(1, (long)Math.Ceiling(timeout.TotalMilliseconds));
        return ms < 100_000_000 ? $"{ms}m" : $"{Math.Min(99_999_999, ms / 1000)}S";
    }

    public static bool TryParseTimeout(string? value, out TimeSpan timeout)
    {
        timeout = default;
        if (string.IsNullOrEmpty(value) || value.Length < 2 || value.Length > 9)
        {
            return false;
        }

        if (!long.TryParse(value.AsSpan(0, value.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out long n))
        {
            return false;
        }

        timeout = value[^1] switch
        {
            'H' => TimeSpan.FromHours(n),
            'M' => TimeSpan.FromMinutes(n),
            'S' => TimeSpan.FromSeconds(n),
            'm' => TimeSpan.FromMilliseconds(n),
            'u' => TimeSpan.FromMicroseconds(n),
            'n' => TimeSpan.FromTicks(n / 100),
            _ => TimeSpan.MinValue,
        };
        return timeout != TimeSpan.MinValue;
    }

    /// <summary>Percent-encodes a grpc-message (bytes outside printable ASCII, and '%').</summary>
    public static string EncodeMessage(string message)
    {
        var sb = new StringBuilder(message.Length);
        foreach (var b in Encoding.UTF8.GetBytes(message))
        {
            if (b is >= 0x20 and <= 0x7e && b != (byte)'%')
            {
                sb.Append((char)b);
            }
            else
            {
                sb.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return sb.ToString();
    }

    public static string DecodeMessage(string? encoded)
    {
        if (string.IsNullOrEmpty(encoded))
        {
            return "";
        }

        var bytes = new List<byte>(encoded.Length);
        for (int i = 0; i < encoded.Length; i++)
        {
            if (encoded[i] == '%' && i + 2 < encoded.Length
                && char.IsAsciiHexDigit(encoded[i + 1]) && char.IsAsciiHexDigit(encoded[i + 2])
                && byte.TryParse(encoded.AsSpan(i + 1, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
            {
                bytes.Add(b);
                i += 2;
            }
            else
            {
                bytes.Add((byte)encoded[i]);
            }
        }

        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}

using Migration.PageServer.Pages;
using Proto = Migration.Control.V1;

namespace Migration.PageServer.Transport;

/// <summary>
/// What a target has received on one page stream: totals as frames are checked, and each round once it is durable
/// and acknowledged. Written by the stream's receiver, read at any time by anyone (the agent's GetMigration).
/// </summary>
public sealed class PageStreamProgress(TimeProvider? time = null)
{
    /// <summary>Rounds kept for <see cref="Snapshot"/>: the last 64 (pre-copy stops long before).</summary>
    public const int MaxRounds = 64;

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Lock _gate = new();
    private readonly Queue<Proto.RoundProgress> _rounds = new();
    private readonly Queue<(Proto.RoundProgress Round, long Started)> _pending = new();
    private long _started = -1;
    private long _ended = -1;
    private ulong _pages;
    private ulong _zeroPages;
    private ulong _wireBytes;
    private uint _acknowledged;

    // The round being received: its counts so far and when its first frame came (ROUND_END hands them to _pending).
    private ulong _roundPages;
    private ulong _roundZeroPages;
    private ulong _roundWireBytes;
    private long _roundStarted = -1;

    /// <summary>A frame of <paramref name="wireBytes"/> bytes arrived (HELLO starts the clock).</summary>
    public void Frame(long wireBytes)
    {
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            if (_started < 0)
            {
                _started = now;
            }

            if (_roundStarted < 0)
            {
                _roundStarted = now;
            }

            _wireBytes += (ulong)wireBytes;
            _roundWireBytes += (ulong)wireBytes;
        }
    }

    /// <summary>A batch with data of <paramref name="pages"/> pages, <paramref name="zeroPages"/> of them zero, was checked.</summary>
    public void Pages(uint pages, int zeroPages)
    {
        lock (_gate)
        {
            _pages += pages;
            _zeroPages += (ulong)zeroPages;
            _roundPages += pages;
            _roundZeroPages += (ulong)zeroPages;
        }
    }

    /// <summary>ROUND_END of <paramref name="round"/> arrived: everything counted since the previous one belongs to it.</summary>
    public void RoundEnded(ulong round)
    {
        lock (_gate)
        {
            _pending.Enqueue((new Proto.RoundProgress { Round = round, Pages = _roundPages, ZeroPages = _roundZeroPages, WireBytes = _roundWireBytes }, _roundStarted));
            _roundPages = _roundZeroPages = _roundWireBytes = 0;
            _roundStarted = -1;
        }
    }

    /// <summary>Round <paramref name="round"/> (ended earlier) is durable and acknowledged.</summary>
    public void RoundAcknowledged(ulong round)
    {
        lock (_gate)
        {
            // The receiver acknowledges rounds in the order they ended; counting never fails a stream, so a mismatch is only skipped.
            if (!_pending.TryDequeue(out var ended) || ended.Round.Round != round)
            {
                return;
            }

            ended.Round.Ms = ended.Started < 0 ? 0 : (ulong)_time.GetElapsedTime(ended.Started).TotalMilliseconds;
            _rounds.Enqueue(ended.Round);
            while (_rounds.Count > MaxRounds)
            {
                _rounds.Dequeue();
            }

            _acknowledged++;
        }
    }

    /// <summary>The stream ended, however it did: the clock stops.</summary>
    public void End()
    {
        lock (_gate)
        {
            if (_ended < 0)
            {
                _ended = _time.GetTimestamp();
            }
        }
    }

    public Proto.PageStreamProgress Snapshot()
    {
        lock (_gate)
        {
            ulong pageBytes = _pages * PageFacts.PageSize;
            ulong ms = _started < 0 ? 0 : (ulong)(_ended < 0 ? _time.GetElapsedTime(_started) : _time.GetElapsedTime(_started, _ended)).TotalMilliseconds;
            var p = new Proto.PageStreamProgress
            {
                Pages = _pages,
                ZeroPages = _zeroPages,
                PageBytes = pageBytes,
                WireBytes = _wireBytes,
                CompressionRatio = _wireBytes == 0 ? 0 : (double)pageBytes / _wireBytes,
                RoundsAcknowledged = _acknowledged,
                ElapsedMs = ms,
                PageBytesPerSecond = ms == 0 ? 0 : pageBytes * 1000 / ms,
                Ended = _ended >= 0,
            };
            p.Rounds.AddRange(_rounds);
            return p;
        }
    }
}

/// <summary>A sink whose stream's <see cref="PageStreamProgress"/> the receiver keeps up to date.</summary>
public interface IProgressReportingSink
{
    PageStreamProgress? Progress { get; }
}

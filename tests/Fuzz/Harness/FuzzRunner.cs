using System.Diagnostics;

namespace Migration.Fuzz.Harness;

/// <summary>What one target's run found. <see cref="Stalls"/>: inputs over the time bound once but not when run again.</summary>
public sealed record FuzzReport(
    string Target, long Inputs, long Rejected, long Accepted, long Crashes, long Hangs, long Stalls, long OverBudget,
    double MaxMs, long MaxAllocatedBytes, long PeakRssBytes, TimeSpan Elapsed, IReadOnlyList<string> Failures)
{
    /// <summary>No crash, no hang, no input that allocated beyond its budget.</summary>
    public bool Clean => Crashes == 0 && Hangs == 0 && OverBudget == 0;
}

/// <summary>What one input did: <see cref="Rejection"/> is the decoder's refusal when it threw one.</summary>
public readonly record struct OneInput(FuzzOutcome Outcome, Exception? Rejection, Exception? Crash, TimeSpan Elapsed, long AllocatedBytes);

/// <summary>Limits of a run.</summary>
public sealed record FuzzOptions
{
    /// <summary>An input that takes longer than this, twice, is a hang: 1 s (a valid input of any target takes well under 10 ms).</summary>
    public TimeSpan HangLimit { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>An input still running after this long stops the process (it cannot be preempted): 30 s.</summary>
    public TimeSpan AbortLimit { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Where failing inputs are written (null: nowhere).</summary>
    public string? FailureDir { get; init; }

    /// <summary>Failures described in the report, at most.</summary>
    public int MaxFailuresListed { get; init; } = 10;
}

/// <summary>
/// Feeds a target <c>iterations</c> inputs, each a seed mutated by a <see cref="Random"/> seeded from (seed, iteration),
/// so one input reproduces alone (<see cref="Input"/>); half of them are fixed up (<see cref="FuzzTarget.FixUp"/>).
/// Every 64th input is a seed as it is, so the accepting paths run
/// too. Counts outcomes, crashes (an exception that is not the target's rejection), hangs (an input over
/// <see cref="FuzzOptions.HangLimit"/>, and again when rerun), inputs allocating over their budget, the slowest input and the peak RSS.
/// </summary>
public static class FuzzRunner
{
    /// <summary>The input of iteration <paramref name="iteration"/> of a run with <paramref name="seed"/>.</summary>
    public static byte[] Input(FuzzTarget target, int seed, long iteration)
    {
        var rng = new Random(HashCode.Combine(seed, iteration, target.Name.Length));
        var seeds = target.Seeds;
        var s = seeds[rng.Next(seeds.Count)];
        if (iteration % 64 == 0)
        {
            return (byte[])s.Bytes.Clone();
        }

        var mutated = Mutator.Mutate(s, seeds, rng);
        return rng.Next(2) == 0 ? target.FixUp(mutated) : mutated;
    }

    public static async Task<FuzzReport> RunAsync(FuzzTarget target, long iterations, int seed, FuzzOptions? options = null)
    {
        options ??= new FuzzOptions();
        long rejected = 0, accepted = 0, crashes = 0, hangs = 0, stalls = 0, overBudget = 0, maxAlloc = 0;
        long maxTicks = 0;
        var failures = new List<string>();
        long running = 0; // Stopwatch timestamp of the input in progress, 0 between inputs
        long current = -1;
        using var watchdog = new Timer(_ =>
        {
            long started = Interlocked.Read(ref running);
            if (started != 0 && Stopwatch.GetElapsedTime(started) > options.AbortLimit)
            {
                Environment.FailFast($"fuzz {target.Name}: input {current} (seed {seed}) still running after {options.AbortLimit.TotalSeconds} s: a hang; " +
                    $"replay it with SEED={seed} ITERATION={current}");
            }
        }, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        // Each seed once, not counted: the first call of a path compiles it, which is not the decoder's time.
        foreach (var s in target.Seeds)
        {
            await target.RunAsync((byte[])s.Bytes.Clone()).ConfigureAwait(false);
        }

        var total = Stopwatch.StartNew();
        for (long i = 0; i < iterations; i++)
        {
            var input = Input(target, seed, i);
            current = i;
            Interlocked.Exchange(ref running, Stopwatch.GetTimestamp());
            var one = await RunOneAsync(target, input).ConfigureAwait(false);
            Interlocked.Exchange(ref running, 0);
            long slowest = maxTicks;
            maxTicks = Math.Max(maxTicks, one.Elapsed.Ticks);
            long allocatedBefore = maxAlloc;
            maxAlloc = Math.Max(maxAlloc, one.AllocatedBytes);
            string? failure = null;
            if (one.Crash is { } crash)
            {
                crashes++;
                failure = $"crash at input {i}: {crash.GetType().FullName}: {crash.Message}\n{crash.StackTrace}";
            }
            else if (one.Outcome == FuzzOutcome.Accepted)
            {
                accepted++;
            }
            else
            {
                rejected++;
            }

            if (failure is null && one.Elapsed > options.HangLimit)
            {
                // On a shared machine a slow input may be a descheduled one: it is a hang only if it is slow again.
                Interlocked.Exchange(ref running, Stopwatch.GetTimestamp());
                var again = await RunOneAsync(target, input).ConfigureAwait(false);
                Interlocked.Exchange(ref running, 0);
                if (again.Elapsed > options.HangLimit)
                {
                    hangs++;
                    failure = $"hang at input {i}: {one.Elapsed.TotalMilliseconds:0} ms and {again.Elapsed.TotalMilliseconds:0} ms again, " +
                        $"over the {options.HangLimit.TotalMilliseconds:0} ms bound";
                }
                else
                {
                    stalls++;
                    maxTicks = Math.Max(slowest, again.Elapsed.Ticks); // the decoder's time is the second run's
                    if (failures.Count < options.MaxFailuresListed)
                    {
                        failures.Add($"{target.Name} (SEED={seed} ITERATION={i}): note: {one.Elapsed.TotalMilliseconds:0} ms once, " +
                            $"{again.Elapsed.TotalMilliseconds:0} ms when run again: the machine, not the decoder (not counted as a hang)");
                    }
                }
            }

            long budget = target.AllocationBudget(input.Length);
            if (failure is null && one.AllocatedBytes > budget)
            {
                // A pooled buffer the pool had let go of is allocated anew by whichever input comes next: over budget
                // only if it is over again when rerun, with the pool refilled.
                var again = await RunOneAsync(target, input).ConfigureAwait(false);
                if (again.AllocatedBytes > budget)
                {
                    overBudget++;
                    failure = $"input {i} of {input.Length} bytes allocated {one.AllocatedBytes} bytes, and {again.AllocatedBytes} again, " +
                        $"over its budget of {budget}: an allocation driven by a length field?";
                }
                else
                {
                    maxAlloc = Math.Max(allocatedBefore, again.AllocatedBytes);
                }
            }

            if (failure is not null)
            {
                Record(target, seed, i, input, failure, failures, options);
            }
        }

        return new FuzzReport(target.Name, iterations, rejected, accepted, crashes, hangs, stalls, overBudget,
            TimeSpan.FromTicks(maxTicks).TotalMilliseconds, maxAlloc, PeakRssBytes(), total.Elapsed, failures);
    }

    /// <summary>One input fed to the target: its outcome, or the exception that was not a rejection; its time and allocation.</summary>
    public static async Task<OneInput> RunOneAsync(FuzzTarget target, byte[] input)
    {
        // Process-wide, not per thread: an input's work may hop threads (a receiver's store loop, async continuations),
        // and its allocations are all its own (inputs run one at a time).
        long alloc0 = GC.GetTotalAllocatedBytes(precise: true);
        long t0 = Stopwatch.GetTimestamp();
        FuzzOutcome outcome = FuzzOutcome.Rejected;
        Exception? crash = null, rejection = null;
        try
        {
            outcome = await target.RunAsync(input).ConfigureAwait(false);
        }
        catch (Exception ex) when (target.IsRejection(ex))
        {
            rejection = ex;
        }
        catch (Exception ex)
        {
            crash = ex;
        }

        var elapsed = Stopwatch.GetElapsedTime(t0);
        return new OneInput(outcome, rejection, crash, elapsed, GC.GetTotalAllocatedBytes(precise: true) - alloc0);
    }

    private static void Record(FuzzTarget target, int seed, long i, byte[] input, string failure, List<string> failures, FuzzOptions options)
    {
        if (failures.Count < options.MaxFailuresListed)
        {
            failures.Add($"{target.Name} (SEED={seed} ITERATION={i}): {failure}");
        }

        if (options.FailureDir is { } dir)
        {
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Combine(dir, $"{target.Name}-{seed}-{i}.bin"), input);
        }
    }

    /// <summary>The process's peak resident set (VmHWM), 0 where /proc does not say.</summary>
    public static long PeakRssBytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                {
                    return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), System.Globalization.CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        catch (IOException)
        {
            // Not Linux's /proc: the peak is unknown, which the table shows as 0.
        }

        return 0;
    }
}

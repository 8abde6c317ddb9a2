using System.Globalization;
using Migration.Fuzz.Harness;
using Migration.Fuzz.Targets;

namespace Migration.Fuzz;

/// <summary>
/// The fuzzer's command line (scripts/fuzz.sh runs it): <c>Migration.Fuzz [--iterations N] [--seed S] [--targets a,b]
/// [--iteration I] [--failures DIR]</c>. Prints one tab-separated row per target; exits 1 if any input crashed, hung
/// or allocated beyond its budget. <c>--iteration I</c> replays that one input of the run (with its seed).
/// </summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        long iterations = 1_000_000;
        int seed = 1;
        long? replay = null;
        string? failures = null;
        var targets = FuzzTargets.Names;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            string value = args[i + 1];
            switch (args[i])
            {
                case "--iterations":
                    iterations = long.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "--seed":
                    seed = int.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "--targets":
                    targets = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    break;
                case "--iteration":
                    replay = long.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "--failures":
                    failures = value;
                    break;
                default:
                    await Console.Error.WriteLineAsync($"unknown option {args[i]}").ConfigureAwait(false);
                    return 2;
            }
        }

        bool clean = true;
        foreach (var name in targets)
        {
            using var target = FuzzTargets.Create(name);
            if (replay is { } iteration)
            {
                var input = FuzzRunner.Input(target, seed, iteration);
                Console.WriteLine($"{name} input {iteration} (seed {seed}), {input.Length} bytes: {Convert.ToHexString(input)}");
                foreach (var s in target.Seeds)
                {
                    await FuzzRunner.RunOneAsync(target, (byte[])s.Bytes.Clone()).ConfigureAwait(false); // warm up, as a run does
                }

                var one = await FuzzRunner.RunOneAsync(target, input).ConfigureAwait(false);
                string what = one.Crash is { } crash ? $"CRASH {crash}"
                    : one.Rejection is { } refused ? $"rejected: {refused.GetType().Name}: {refused.Message}"
                    : one.Outcome.ToString();
                Console.WriteLine($"{name}: {what} ({one.Elapsed.TotalMilliseconds:0.0} ms, {one.AllocatedBytes} bytes allocated, " +
                    $"budget {target.AllocationBudget(input.Length)})");
                continue;
            }

            var report = await FuzzRunner.RunAsync(target, iterations, seed, new FuzzOptions { FailureDir = failures }).ConfigureAwait(false);
            Console.WriteLine(string.Join('\t', report.Target, report.Inputs, report.Rejected, report.Accepted, report.Crashes, report.Hangs,
                report.Stalls, report.OverBudget, report.MaxMs.ToString("0.0", CultureInfo.InvariantCulture), report.MaxAllocatedBytes / 1024,
                report.PeakRssBytes >> 20, report.Elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)));
            foreach (var failure in report.Failures)
            {
                await Console.Error.WriteLineAsync(failure).ConfigureAwait(false);
            }

            clean &= report.Clean;
        }

        return clean ? 0 : 1;
    }
}

using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Migration.Engine.Tracking;

/// <summary>
/// Finds and loads libmigrate_track.so, checks its ABI version, and routes its log lines to the logger of the
/// call in progress.
/// </summary>
/// <remarks>
/// The library is looked for, in order, in <c>$MIGRATE_NATIVE_DIR</c>, the application's base directory, and
/// <c>native/bin</c> of the first parent directory of the base directory that has one (a source checkout).
/// <see cref="NativeLibrary.SetDllImportResolver"/> allows one resolver per assembly: this is the Engine
/// assembly's. It answers only for <see cref="TrackerNative.LibraryName"/>; every other name falls through to the
/// default probing, so another native library of the Engine can be added to <see cref="Resolve"/> here.
/// </remarks>
public static class TrackerLibrary
{
    public const string FileName = "libmigrate_track.so";

    /// <summary>Overrides where the native helpers (the library, trackee) are looked for.</summary>
    public const string DirectoryVariable = "MIGRATE_NATIVE_DIR";

    private static int s_resolverSet;
    private static readonly Lazy<string?> s_abiProblem = new(CheckAbi);

    [ThreadStatic]
    private static ILogger? t_logger;

    /// <summary>The library's path as the resolver would load it, or null when it is nowhere to be found.</summary>
    public static string? Locate() => Candidates(FileName).FirstOrDefault(File.Exists);

    /// <summary>
    /// A file of native/bin (the library, or a helper such as trackee): <c>$MIGRATE_NATIVE_DIR</c>, the base
    /// directory, then <c>native/bin</c> of a parent of the base directory.
    /// </summary>
    public static IEnumerable<string> Candidates(string fileName)
    {
        var env = Environment.GetEnvironmentVariable(DirectoryVariable);
        if (!string.IsNullOrEmpty(env))
        {
            yield return Path.Combine(env, fileName);
        }

        yield return Path.Combine(AppContext.BaseDirectory, fileName);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "native", "bin", fileName);
            if (File.Exists(candidate))
            {
                yield return candidate;
                yield break;
            }
        }
    }

    internal static void EnsureResolver()
    {
        if (Interlocked.Exchange(ref s_resolverSet, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(TrackerLibrary).Assembly, Resolve);
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != TrackerNative.LibraryName)
        {
            return IntPtr.Zero;
        }

        foreach (var candidate in Candidates(FileName))
        {
            if (File.Exists(candidate) && NativeLibrary.TryLoad(candidate, out var handle))
            {
                return handle;
            }
        }

        return IntPtr.Zero;
    }

    /// <summary>
    /// Throws <see cref="TrackerException"/> when the library cannot be loaded or was built from another track.h.
    /// Every public entry point calls this first.
    /// </summary>
    internal static void EnsureLoaded()
    {
        if (s_abiProblem.Value is { } problem)
        {
            throw new TrackerException(problem, 0, "load");
        }
    }

    private static unsafe string? CheckAbi()
    {
        try
        {
            int version = TrackerNative.mt_abi_version();
            if (version != TrackerNative.AbiVersion)
            {
                return $"{FileName} has ABI version {version}, this build expects {TrackerNative.AbiVersion}: rebuild with make -C native";
            }

            TrackerNative.mt_set_log(&OnNativeLog, TrackerNative.LogDebug);
            return null;
        }
        catch (DllNotFoundException e)
        {
            return $"cannot load {FileName} (looked in ${DirectoryVariable}, {AppContext.BaseDirectory} and native/bin above it): " +
                $"build it with make -C native. {e.Message}";
        }
    }

    /// <summary>Native log lines written during the calls made inside the returned scope go to <paramref name="logger"/>.</summary>
    internal static LogScope Logging(ILogger logger)
    {
        var previous = t_logger;
        t_logger = logger;
        return new LogScope(previous);
    }

    internal readonly struct LogScope(ILogger? previous) : IDisposable
    {
        public void Dispose() => t_logger = previous;
    }

    /// <summary>Called by the library on the thread of the call that logs (every mt_* call is synchronous).</summary>
    [UnmanagedCallersOnly]
    private static unsafe void OnNativeLog(int level, byte* message)
    {
        try
        {
            var logger = t_logger;
            if (logger is null)
            {
                return;
            }

            var text = Marshal.PtrToStringUTF8((nint)message)?.TrimEnd('\n') ?? "";
            var logLevel = level switch
            {
                TrackerNative.LogErr => LogLevel.Error,
                TrackerNative.LogWarn => LogLevel.Warning,
                TrackerNative.LogInfo => LogLevel.Information,
                _ => LogLevel.Debug,
            };
            TrackerLog.Native(logger, logLevel, text);
        }
        catch (Exception)
        {
            // An exception must never unwind into C; a lost log line is the lesser harm.
        }
    }
}

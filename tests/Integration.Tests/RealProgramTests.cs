using System.Globalization;
using Migration.Integration.Tests.Hosts;
using Migration.Tests.Common;
using Xunit;
using Xunit.Abstractions;

namespace Migration.Integration.Tests;

/// <summary>
/// Servers nobody here wrote, migrated live with the defaults (pre-copy, lazy restore) and checked through their own
/// protocol and their own clients: data written before is read after, on the target, and the server takes new writes
/// there. Among them a multi-threaded tree (redis-server, the JVM) and a multi-process one (nginx: a master and two
/// workers). Afterwards exactly one copy runs, on the target.
/// </summary>
public sealed class RealProgramTests(ITestOutputHelper output)
{
    private static readonly TimeSpan s_ready = TimeSpan.FromSeconds(30);

    [RequiresRootFact]
    public async Task RedisKeepsItsDataThroughLiveMigration()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        var conf = Path.Combine(hosts.Root, $"redis-{Guid.NewGuid():N}.conf");
        // No persistence: the data lives in its memory only, so only a faithful copy of that memory keeps it.
        await File.WriteAllTextAsync(conf, $"""
            port 6379
            bind 0.0.0.0
            protected-mode no
            save ""
            appendonly no
            daemonize no
            set-proc-title no
            enable-debug-command yes
            dir {hosts.Root}
            logfile {Path.Combine(hosts.Root, "redis.log")}
            """);
        await using var redis = await ServerTree.StartAsync(hosts.Source, conf, ["redis-server", conf],
            async () => await RedisAsync(hosts.Source, "PING") == "PONG", s_ready);
        // 200,000 keys (DEBUG POPULATE: key:N -> value:N) and one written by hand.
        Assert.Equal("OK", await RedisAsync(hosts.Source, "DEBUG", "POPULATE", "200000"));
        Assert.Equal("OK", await RedisAsync(hosts.Source, "SET", "greeting", "written before the migration"));
        int pid = redis.SingleRoot();
        Assert.True(redis.Processes().Count == 1, "redis-server is one process (with threads)");
        Assert.True(Directory.GetDirectories($"/proc/{pid}/task").Length > 1, "redis-server runs several threads");

        await MigrateAsync(hosts, agent, token, pid);

        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(redis.SingleRoot()));
        Assert.Equal("200001", await RedisAsync(hosts.Target, "DBSIZE"));
        Assert.Equal("written before the migration", await RedisAsync(hosts.Target, "GET", "greeting"));
        Assert.Equal("value:123456", await RedisAsync(hosts.Target, "GET", "key:123456"));
        Assert.Equal("OK", await RedisAsync(hosts.Target, "SET", "after", "written on the target"));
        Assert.Equal("written on the target", await RedisAsync(hosts.Target, "GET", "after"));
    }

    [RequiresRootFact]
    public async Task NginxMasterAndWorkersServeAfterLiveMigration()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        var prefix = Directory.CreateDirectory(Path.Combine(hosts.Root, $"nginx-{Guid.NewGuid():N}")).FullName;
        var www = Directory.CreateDirectory(Path.Combine(prefix, "www")).FullName;
        var page = $"served by nginx {Guid.NewGuid():N}";
        await File.WriteAllTextAsync(Path.Combine(www, "index.html"), page);
        var conf = Path.Combine(prefix, "nginx.conf");
        await File.WriteAllTextAsync(conf, $$"""
            daemon off;
            user root;
            master_process on;
            worker_processes 2;
            pid {{prefix}}/nginx.pid;
            error_log {{prefix}}/error.log;
            events { worker_connections 64; }
            http {
                access_log off;
                client_body_temp_path {{prefix}}/body;
                proxy_temp_path {{prefix}}/proxy;
                fastcgi_temp_path {{prefix}}/fastcgi;
                uwsgi_temp_path {{prefix}}/uwsgi;
                scgi_temp_path {{prefix}}/scgi;
                server { listen 8080; root {{www}}; }
            }
            """);
        await using var nginx = await ServerTree.StartAsync(hosts.Source, conf, ["nginx", "-c", conf, "-p", prefix],
            async () => await HttpGetAsync(hosts.Source, 8080, "/index.html") == page, s_ready);
        for (var deadline = DateTime.UtcNow + s_ready; nginx.Processes().Count < 3; await Task.Delay(100))
        {
            Assert.True(DateTime.UtcNow < deadline, $"nginx did not start its two workers: {nginx.Output}");
        }

        int pid = nginx.SingleRoot();

        await MigrateAsync(hosts, agent, token, pid);

        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(nginx.SingleRoot()));
        Assert.Equal(3, nginx.Processes().Count);
        // Several requests: both workers may take them.
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(page, await HttpGetAsync(hosts.Target, 8080, "/index.html"));
        }
    }

    [RequiresRootFact]
    public async Task PythonHttpServerServesAfterLiveMigration()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        var www = Directory.CreateDirectory(Path.Combine(hosts.Root, $"www-{Guid.NewGuid():N}")).FullName;
        var text = $"served by python3 -m http.server {Guid.NewGuid():N}";
        await File.WriteAllTextAsync(Path.Combine(www, "file.txt"), text);
        // It logs every request to stderr: to a file, as a supervisor would have it (a pipe to a process outside the
        // tree would have no reader after the migration; the preflight warns of that).
        var log = Path.Combine(hosts.Root, "http.server.log");
        await using var server = await ServerTree.StartAsync(hosts.Source, www,
            ["sh", "-c", $"exec python3 -m http.server 8000 --bind 0.0.0.0 --directory {www} >{log} 2>&1"],
            async () => await HttpGetAsync(hosts.Source, 8000, "/file.txt") == text, s_ready);
        int pid = server.SingleRoot();

        await MigrateAsync(hosts, agent, token, pid);

        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(server.SingleRoot()));
        Assert.Equal(text, await HttpGetAsync(hosts.Target, 8000, "/file.txt"));
    }

    /// <summary>
    /// A JVM (many threads: the program's two counters, the JIT, the GC) whose state is only in its heap: two threads
    /// count, each in its own array slot, and every answer carries both counts and a checksum of a 16 MiB array filled
    /// at start. After the migration the counts go on from where they were and the checksum is the same.
    /// </summary>
    [RequiresRootFact]
    public async Task JvmCountsOnFromWhereItWasAfterLiveMigration()
    {
        await using var hosts = await TestHosts.CreateAsync();
        var token = hosts.NewToken();
        await using var agent = await Agent.StartAsync(hosts, token);
        var source = Path.Combine(hosts.Root, $"Counter{Guid.NewGuid():N}.java");
        await File.WriteAllTextAsync(source, """
            import java.io.*;
            import java.net.*;
            import java.util.concurrent.atomic.AtomicLongArray;

            public class Counter {
                public static void main(String[] args) throws Exception {
                    long[] data = new long[2 << 20];
                    long seed = 0x9E3779B97F4A7C15L;
                    for (int i = 0; i < data.length; i++) { seed ^= seed << 13; seed ^= seed >>> 7; seed ^= seed << 17; data[i] = seed; }
                    AtomicLongArray counts = new AtomicLongArray(2);
                    for (int t = 0; t < 2; t++) {
                        final int slot = t;
                        Thread th = new Thread(() -> { while (true) { counts.incrementAndGet(slot); try { Thread.sleep(1); } catch (InterruptedException e) { return; } } });
                        th.setDaemon(true);
                        th.start();
                    }
                    try (ServerSocket server = new ServerSocket(8090)) {
                        while (true) {
                            try (Socket c = server.accept()) {
                                new BufferedReader(new InputStreamReader(c.getInputStream())).readLine();
                                long sum = 0;
                                for (long v : data) sum = sum * 31 + v;
                                c.getOutputStream().write((counts.get(0) + " " + counts.get(1) + " " + Long.toHexString(sum) + "\n").getBytes());
                            }
                        }
                    }
                }
            }
            """);
        await using var jvm = await ServerTree.StartAsync(hosts.Source, source,
            ["java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xshare:off", source],
            async () => (await NetNs.QueryAsync(hosts.Source, 8090, "count", TimeSpan.FromSeconds(5))).Split(' ').Length == 3, TimeSpan.FromSeconds(60));
        int pid = jvm.SingleRoot();
        Assert.True(Directory.GetDirectories($"/proc/{pid}/task").Length > 4, "the JVM runs many threads");
        var before = (await NetNs.QueryAsync(hosts.Source, 8090, "count", TimeSpan.FromSeconds(10))).Split(' ');

        await MigrateAsync(hosts, agent, token, pid);

        Assert.Equal(hosts.TargetNetns, NetNs.OfProcess(jvm.SingleRoot()));
        var after = (await NetNs.QueryAsync(hosts.Target, 8090, "count", TimeSpan.FromSeconds(20))).Split(' ');
        Assert.Equal(before[2], after[2]);
        for (int slot = 0; slot < 2; slot++)
        {
            Assert.True(long.Parse(after[slot], CultureInfo.InvariantCulture) > long.Parse(before[slot], CultureInfo.InvariantCulture),
                $"counter {slot}: {before[slot]} before, {after[slot]} after");
        }
    }

    /// <summary>Live migration with the defaults; it must succeed and leave nothing of the tree on the source.</summary>
    private async Task MigrateAsync(TestHosts hosts, Agent agent, string token, int pid)
    {
        var (result, json) = await MigrateCommand.RunAsync(hosts, agent.Endpoint, token, pid);
        output.WriteLine(result.ToString());
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("migrated", json.GetProperty("status").GetString());
        Assert.Equal("precopy", json.GetProperty("mode").GetString());
        Assert.False(Directory.Exists($"/proc/{pid}") && NetNs.OfProcess(pid) == hosts.SourceNetns, "the source copy must be gone");
    }

    private static async Task<string> RedisAsync(string netns, params string[] command)
    {
        var result = await Run.CommandAsync("nsenter", [.. TestHosts.On(netns), "redis-cli", "-p", "6379", .. command], TimeSpan.FromSeconds(30), "redis-cli");
        return result.ExitCode == 0 ? result.Stdout.Trim() : throw new InvalidOperationException($"redis-cli {string.Join(' ', command)}: {result}");
    }

    private static async Task<string> HttpGetAsync(string netns, int port, string path)
    {
        var result = await Run.CommandAsync("nsenter", [.. TestHosts.On(netns), "curl", "-sS", "--max-time", "10", $"http://127.0.0.1:{port}{path}"],
            TimeSpan.FromSeconds(20), "curl");
        return result.ExitCode == 0 ? result.Stdout : throw new InvalidOperationException($"curl {path}: {result}");
    }
}

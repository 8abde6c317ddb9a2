/*
 * test_tools - tests of memwork's rate reporting (OPS, --write-rate max, the largest gap's start) and of
 * track-pid against a running memwork.
 *
 * Usage: test_tools [TEST...]
 * Needs root (track-pid ptraces a process that is not its child); without it every test is skipped with
 * the reason. memwork and track-pid are taken from this executable's directory.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include "harness.h"

#define START_TIMEOUT_MS 20000

struct memwork {
	pid_t pid;
	int port;
};

struct tool_run {
	pid_t pid;
	FILE *out; /* its stdout */
};

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* A port nothing listens on now (the kernel's choice for port 0). */
static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) && !getsockname(fd, (struct sockaddr *)&sa, &len))
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* Send one command line to memwork, read its one-line answer (without '\n'). */
static int query(const struct memwork *m, const char *cmd, char *out, size_t len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)m->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { 5, 0 };
	char line[64];
	size_t got = 0;
	int fd, n;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	n = snprintf(line, sizeof(line), "%s\n", cmd);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) || send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return -EIO;
	}
	while (got < len - 1) {
		ssize_t r = recv(fd, out + got, len - 1 - got, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	out[got] = '\0';
	if (got && out[got - 1] == '\n')
		out[--got] = '\0';
	return got ? 0 : -EIO;
}

/* Start memwork with --mib and --write-rate (NULL: none), wait for READY. */
static int memwork_start(struct memwork *m, const char *mib, const char *rate)
{
	char path[PATH_MAX + 16], port[16], fdarg[16], file[64], line[64];
	struct pollfd pfd;
	int p[2];
	ssize_t r;

	memset(m, 0, sizeof(*m));
	m->port = free_port();
	if (m->port < 0 || pipe(p))
		return -EIO;
	snprintf(path, sizeof(path), "%s/memwork", bin_dir());
	snprintf(port, sizeof(port), "%d", m->port);
	snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
	snprintf(file, sizeof(file), "/tmp/test_tools-memwork-%d", getpid());
	m->pid = fork();
	if (m->pid < 0)
		return -errno;
	if (!m->pid) {
		close(p[0]);
		if (rate)
			execl(path, path, "--mib", mib, "--port", port, "--file", file, "--write-rate", rate,
			      "--ready-fd", fdarg, (char *)NULL);
		else
			execl(path, path, "--mib", mib, "--port", port, "--file", file, "--ready-fd", fdarg,
			      (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	pfd = (struct pollfd){ .fd = p[0], .events = POLLIN };
	r = poll(&pfd, 1, START_TIMEOUT_MS) == 1 ? read(p[0], line, sizeof(line) - 1) : -1;
	close(p[0]);
	unlink(file);
	if (r <= 0 || strncmp(line, "READY ", 6)) {
		fprintf(stderr, "    memwork (pid %d, port %d) did not get ready within %d ms\n", m->pid, m->port,
			START_TIMEOUT_MS);
		return -ETIMEDOUT;
	}
	return 0;
}

static void memwork_stop(struct memwork *m)
{
	if (m->pid > 0) {
		kill(m->pid, SIGKILL);
		waitpid(m->pid, NULL, 0);
		m->pid = 0;
	}
}

/* OPS, parsed: writes, realtime_us, cpu_us, maxgap_us, gap_writes, gap_start_us. */
struct ops {
	unsigned long writes, realtime_us, cpu_us, maxgap_us, gap_writes, gap_start_us;
};

static int ops(const struct memwork *m, struct ops *o)
{
	char a[512];

	CHECK(query(m, "OPS", a, sizeof(a)) == 0, "no answer to OPS");
	CHECK(!strncmp(a, "OK ", 3), "OPS answered \"%s\"", a);
	o->writes = status_field(a, "writes");
	o->realtime_us = status_field(a, "realtime_us");
	o->cpu_us = status_field(a, "cpu_us");
	o->maxgap_us = status_field(a, "maxgap_us");
	o->gap_writes = status_field(a, "gap_writes");
	o->gap_start_us = status_field(a, "gap_start_us");
	CHECK(o->writes != (unsigned long)-1 && o->realtime_us != (unsigned long)-1 && o->cpu_us != (unsigned long)-1 &&
		      o->maxgap_us != (unsigned long)-1 && o->gap_writes != (unsigned long)-1 &&
		      o->gap_start_us != (unsigned long)-1,
	      "OPS answer lacks a field: \"%s\"", a);
	return 0;
}

static double rate(const struct ops *a, const struct ops *b)
{
	return (double)(b->writes - a->writes) * 1e6 / (double)(b->realtime_us - a->realtime_us);
}

static int expect_verified(const struct memwork *m)
{
	char a[512];

	CHECK(query(m, "STATUS", a, sizeof(a)) == 0, "no answer to STATUS");
	CHECK(strstr(a, " verify=ok ") != NULL, "pattern no longer verifies: \"%s\"", a);
	return 0;
}

/* A paced writer's OPS rate is its pace: 10% of 64 MiB (16384 pages) per second. */
static int test_ops_paced(void)
{
	const double want = 16384 * 0.10;
	struct memwork m;
	struct ops a, b;
	int rc = -1;
	double r;

	CHECK(memwork_start(&m, "64", "10") == 0, "memwork did not start");
	if (ops(&m, &a))
		goto out;
	sleep_ms(2000);
	if (ops(&m, &b))
		goto out;
	r = rate(&a, &b);
	fprintf(stderr, "    paced 10%% of 16384 pages: %.0f writes/s (want %.0f), writer cpu %lu us\n", r, want,
		b.cpu_us - a.cpu_us);
	if (r < want * 0.8 || r > want * 1.2) {
		fprintf(stderr, "    FAILED: rate %.0f is not within 20%% of %.0f\n", r, want);
		goto out;
	}
	if (b.cpu_us <= a.cpu_us) {
		fprintf(stderr, "    FAILED: writer cpu_us did not grow (%lu, %lu)\n", a.cpu_us, b.cpu_us);
		goto out;
	}
	rc = 0;
out:
	memwork_stop(&m);
	return rc;
}

/* --write-rate max writes far more than any pace, keeps the pattern, and without a writer OPS says 0. */
static int test_ops_max(void)
{
	struct memwork m, idle;
	struct ops a, b;
	int rc = -1;
	double r;

	CHECK(memwork_start(&idle, "4", NULL) == 0, "memwork (no writer) did not start");
	rc = ops(&idle, &a);
	memwork_stop(&idle);
	CHECK(rc == 0, "OPS of a memwork without writer");
	CHECK(a.writes == 0 && a.cpu_us == 0, "no writer, yet writes=%lu cpu_us=%lu", a.writes, a.cpu_us);

	rc = -1;
	CHECK(memwork_start(&m, "16", "max") == 0, "memwork did not start");
	if (ops(&m, &a))
		goto out;
	sleep_ms(1000);
	if (ops(&m, &b))
		goto out;
	r = rate(&a, &b);
	fprintf(stderr, "    unpaced over 4096 pages: %.0f writes/s, %.0f per writer cpu second\n", r,
		(double)(b.writes - a.writes) * 1e6 / (double)(b.cpu_us - a.cpu_us));
	/* 100% of the pages per second would be 4096/s; any machine does 20 times that unpaced. */
	if (r < 4096 * 20) {
		fprintf(stderr, "    FAILED: %.0f writes/s is not unpaced\n", r);
		goto out;
	}
	rc = expect_verified(&m);
out:
	memwork_stop(&m);
	return rc;
}

/*
 * A stop of the whole process (as a checkpoint freezes it) is the largest gap; its start carries the writes
 * then. The last beat before the stop may precede the OPS just before it, so the bounds are an OPS taken
 * 100 ms earlier and the one after the stop.
 */
static int test_gap_start(void)
{
	struct memwork m;
	struct ops z, a, b, c;
	int rc = -1;
	char ans[64];

	CHECK(memwork_start(&m, "16", "max") == 0, "memwork did not start");
	if (query(&m, "RESETGAP", ans, sizeof(ans)) || strcmp(ans, "OK") || ops(&m, &z))
		goto out;
	sleep_ms(100);
	if (ops(&m, &a))
		goto out;
	kill(m.pid, SIGSTOP);
	sleep_ms(300);
	kill(m.pid, SIGCONT);
	sleep_ms(50);
	if (ops(&m, &b))
		goto out;
	fprintf(stderr,
		"    stopped 300 ms: maxgap %lu us from %+ld us after the OPS before, writes then %lu (OPS before %lu, "
		"now %lu)\n",
		b.maxgap_us, (long)(b.gap_start_us - a.realtime_us), b.gap_writes, a.writes, b.writes);
	if (b.maxgap_us < 250000 || b.gap_start_us <= z.realtime_us || b.gap_start_us + b.maxgap_us > b.realtime_us ||
	    b.gap_writes <= z.writes || b.gap_writes >= b.writes) {
		fprintf(stderr, "    FAILED: the gap's start is not within the stop\n");
		goto out;
	}
	if (query(&m, "RESETGAP", ans, sizeof(ans)) || ops(&m, &c))
		goto out;
	/* The first gap after the reset may start at the beat before it, but not inside the stop. */
	if (c.maxgap_us >= 250000 || (c.gap_start_us && c.gap_start_us < b.gap_start_us + b.maxgap_us)) {
		fprintf(stderr, "    FAILED: RESETGAP left maxgap %lu, gap start %lu\n", c.maxgap_us, c.gap_start_us);
		goto out;
	}
	rc = 0;
out:
	memwork_stop(&m);
	return rc;
}

/* Start track-pid with arguments (NULL-terminated), stdout piped. */
static int tool_start(struct tool_run *t, ...)
{
	const char *argv[16];
	char path[PATH_MAX + 16];
	int out[2], argc = 0;
	va_list ap;

	snprintf(path, sizeof(path), "%s/track-pid", bin_dir());
	argv[argc++] = path;
	va_start(ap, t);
	while (argc < 15 && (argv[argc] = va_arg(ap, const char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	if (pipe2(out, O_CLOEXEC))
		return -errno;
	t->pid = fork();
	if (t->pid < 0)
		return -errno;
	if (!t->pid) {
		dup2(out[1], 1);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	t->out = fdopen(out[0], "r");
	return t->out ? 0 : -errno;
}

/* One line of its output within timeout_ms; -1 at its end or on timeout. */
static int tool_line(struct tool_run *t, char *line, size_t len, int timeout_ms)
{
	struct pollfd pfd = { .fd = fileno(t->out), .events = POLLIN };

	if (poll(&pfd, 1, timeout_ms) != 1 || !fgets(line, (int)len, t->out))
		return -1;
	line[strcspn(line, "\n")] = '\0';
	return 0;
}

/* Its exit status within timeout_ms, or -1 (then it is killed). */
static int tool_wait(struct tool_run *t, int timeout_ms)
{
	int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
	int status;

	while (waitpid(t->pid, &status, WNOHANG) == 0) {
		if (now_ns() > deadline) {
			kill(t->pid, SIGKILL);
			waitpid(t->pid, &status, 0);
			fclose(t->out);
			return -1;
		}
		sleep_ms(10);
	}
	fclose(t->out);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * track-pid on a paced memwork (50% of 16384 pages per second, so no page is written twice in the run):
 * the pages it reports are the pages written while it tracked, and it leaves no trace behind.
 */
static int test_track_pid_reports_writes(void)
{
	char line[512], pidarg[16];
	unsigned long pages, harvests;
	struct tool_run t = { 0 };
	struct memwork m;
	struct ops a, b;
	int rc = -1, ex;
	long written;

	CHECK(memwork_start(&m, "64", "50") == 0, "memwork did not start");
	snprintf(pidarg, sizeof(pidarg), "%d", m.pid);
	if (tool_start(&t, pidarg, "--interval-ms", "200", "--duration-ms", "1500", NULL))
		goto out;
	if (tool_line(&t, line, sizeof(line), 10000) || strncmp(line, "ATTACHED ", 9)) {
		fprintf(stderr, "    FAILED: track-pid did not attach (\"%s\")\n", line);
		goto out;
	}
	fprintf(stderr, "    %s\n", line);
	if (ops(&m, &a))
		goto out;
	if (tool_line(&t, line, sizeof(line), 10000) || strncmp(line, "DETACHED ", 9)) {
		fprintf(stderr, "    FAILED: no DETACHED line\n");
		goto out;
	}
	if (ops(&m, &b))
		goto out;
	fprintf(stderr, "    %s\n", line);
	ex = tool_wait(&t, 5000);
	t.pid = 0;
	pages = status_field(line, "pages");
	harvests = status_field(line, "harvests");
	written = (long)(b.writes - a.writes);
	fprintf(stderr, "    memwork wrote %ld pages between ATTACHED and DETACHED; track-pid reported %lu\n", written,
		pages);
	if (ex != 0 || harvests < 5 || harvests > 9) {
		fprintf(stderr, "    FAILED: exit %d, %lu harvests (want 0, about 1500 / 200)\n", ex, harvests);
		goto out;
	}
	/*
	 * Reported: every page written from ATTACHED to the last harvest (a superset of [a, last harvest]), plus
	 * the few of the stacks and the heap. Not reported: writes after the last harvest (detach, then OPS: one
	 * 10 ms tick of the writer, about 82 pages, or two).
	 */
	if ((long)pages < written - 250 || (long)pages > written + written / 10 + 250) {
		fprintf(stderr, "    FAILED: %lu pages reported for %ld written\n", pages, written);
		goto out;
	}
	/* Through out: memwork and the tool are stopped whatever fails. */
	if (expect_no_trace(m.pid) == 0)
		rc = expect_verified(&m);
out:
	if (t.pid > 0)
		tool_wait(&t, 0);
	memwork_stop(&m);
	return rc;
}

/* Without --duration-ms it runs until SIGTERM, then detaches cleanly and exits 0. */
static int test_track_pid_sigterm(void)
{
	struct tool_run t = { 0 };
	char line[512], pidarg[16];
	struct memwork m;
	int rc = -1, ex;

	CHECK(memwork_start(&m, "16", "max") == 0, "memwork did not start");
	snprintf(pidarg, sizeof(pidarg), "%d", m.pid);
	if (tool_start(&t, pidarg, "--interval-ms", "50", NULL))
		goto out;
	if (tool_line(&t, line, sizeof(line), 10000) || strncmp(line, "ATTACHED ", 9))
		goto out;
	sleep_ms(300);
	kill(t.pid, SIGTERM);
	if (tool_line(&t, line, sizeof(line), 5000) || strncmp(line, "DETACHED ", 9)) {
		fprintf(stderr, "    FAILED: no DETACHED line after SIGTERM\n");
		goto out;
	}
	fprintf(stderr, "    %s\n", line);
	ex = tool_wait(&t, 5000);
	t.pid = 0;
	if (ex != 0 || status_field(line, "harvests") < 2 || status_field(line, "pages") == 0) {
		fprintf(stderr, "    FAILED: exit %d after SIGTERM\n", ex);
		goto out;
	}
	/* Through out: memwork and the tool are stopped whatever fails. */
	if (expect_no_trace(m.pid) == 0)
		rc = expect_verified(&m);
out:
	if (t.pid > 0)
		tool_wait(&t, 0);
	memwork_stop(&m);
	return rc;
}

/* A process that does not exist: exit 1 with the failed step; bad arguments: exit 2. */
static int test_track_pid_errors(void)
{
	struct tool_run t;
	char line[64];
	int ex;

	CHECK(tool_start(&t, "2147483000", "--duration-ms", "100", NULL) == 0, "track-pid did not start");
	ex = tool_wait(&t, 5000);
	CHECK(ex == 1, "attach to a missing process: exit %d, want 1", ex);
	CHECK(tool_start(&t, "1", "--interval-ms", "0", NULL) == 0, "track-pid did not start");
	CHECK(tool_line(&t, line, sizeof(line), 5000) == -1, "usage error printed \"%s\" on stdout", line);
	ex = tool_wait(&t, 5000);
	CHECK(ex == 2, "--interval-ms 0: exit %d, want 2", ex);
	return 0;
}

struct test {
	const char *name;
	int (*fn)(void);
};

static const struct test tests[] = {
	{ "ops_paced", test_ops_paced },
	{ "ops_max", test_ops_max },
	{ "gap_start", test_gap_start },
	{ "track_pid_reports_writes", test_track_pid_reports_writes },
	{ "track_pid_sigterm", test_track_pid_sigterm },
	{ "track_pid_errors", test_track_pid_errors },
};

int main(int argc, char **argv)
{
	size_t i, n = sizeof(tests) / sizeof(tests[0]);
	int failed = 0, run = 0, ai;

	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root: track-pid ptraces a process that is not its child\n");
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	printf("1..%zu\n", argc > 1 ? (size_t)(argc - 1) : n);
	for (i = 0; i < n; i++) {
		bool selected = argc == 1;
		int64_t t0;
		int r;

		for (ai = 1; ai < argc; ai++)
			selected = selected || !strcmp(argv[ai], tests[i].name);
		if (!selected)
			continue;
		fflush(stdout);
		t0 = now_ns();
		r = tests[i].fn();
		run++;
		printf("%s %d - %s (%.0f ms)\n", r ? "not ok" : "ok", run, tests[i].name, (now_ns() - t0) / 1e6);
		fflush(stdout);
		failed += r != 0;
	}
	printf("# %d tests, %d failed\n", run, failed);
	return failed ? 1 : 0;
}

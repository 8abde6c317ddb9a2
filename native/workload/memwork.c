/*
 * memwork - deterministic, self-checking workload for CRIU live-migration tests.
 *
 * Usage:
 *   memwork --mib N --port P --file PATH [--seed S] [--mix] [--sparse K] [--zero-present] [--write-rate PCT|max]
 *           [--ready-fd FD] [--stdio-null]
 *
 * Memory (--mib N, 1..1048576; --seed S, unsigned 64-bit decimal, default 1):
 *   N MiB are mmap'ed (MAP_PRIVATE|MAP_ANONYMOUS, MADV_NOHUGEPAGE so dirty tracking and zero pages
 *   stay at 4 KiB granularity) and filled with a pattern. With o a byte offset, w = o / 8 the word
 *   index and p = o / 4096 the (4 KiB) page index:
 *     splitmix64(x): z = x + 0x9e3779b97f4a7c15; z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
 *                    z = (z ^ (z >> 27)) * 0x94d049bb133111eb; return z ^ (z >> 31);
 *   default: every 64-bit word w (native byte order) holds splitmix64(S ^ w).
 *   --mix:   p % 3 == 0  zero page, never touched (stays unpopulated; with --zero-present written with
 *                       zeros, so it is resident like the calloc'd or freed memory of a real heap)
 *            p % 3 == 1  text page: "memwork page <p> seed <S>: the quick brown fox jumps over the lazy dog. "
 *                        repeated and cut at 4096 bytes
 *            p % 3 == 2  random page: words as in the default layout
 *   --sparse K (1..1048576, default 1): only pages with p % K == 0 hold the pattern above (default or --mix);
 *            every other page is a zero page as in --mix (never touched, or with --zero-present written with
 *            zeros). One big mapping that costs little to fill and to check: with --zero-present it is a single
 *            run of resident pages (what CRIU dumps as one pagemap entry), with pattern pages spread across it.
 *
 * Writer (--write-rate PCT, 0..100, default 0): a thread that every 10 ms dirties pages so that PCT %
 *   of the buffer's page count is written per second, round-robin. Every word of a written page is
 *   read and stored back unchanged, so the content stays the expected pattern and a page corrupted
 *   by a bad restore is never silently "healed". Zero pages (--mix, --sparse) are skipped and not counted.
 *   --write-rate max: the writer is not paced: it rewrites pages round-robin (the same way) as fast as
 *   it can, so its page writes per second (OPS) are the workload's throughput, and what slows it
 *   (write-protect faults of a dirty tracker, CPU taken by a migration) shows as fewer writes per second.
 *
 * Heartbeat: a thread that sleeps 1 ms (relative, CLOCK_MONOTONIC) in a loop, counts beats and
 *   tracks the largest CLOCK_REALTIME gap between consecutive beats. After checkpoint/restore that
 *   gap is the downtime as seen from inside the process. With the largest gap it keeps the time of
 *   the beat before it and the writes counted by then: after a migration, the writes and the time
 *   the workload had when it was frozen.
 *
 * File (--file PATH): opened O_RDWR|O_CREAT (0644) and kept open. An empty file gets a 4096-byte
 *   header "memwork data file\n" padded with '.'; a non-empty file must start with that line. The
 *   size never changes afterwards. STATUS preads the first line to prove the fd still works.
 *
 * Protocol: TCP 0.0.0.0:P, connections handled one at a time (2 s SO_RCVTIMEO/SO_SNDTIMEO). The
 *   client sends one line ("\n"-terminated, trailing "\r"/spaces ignored, at most 255 bytes); the
 *   server answers one "\n"-terminated line and closes the connection.
 *     PING      -> PONG <pid>
 *     STATUS    -> OK mib=<N> seed=<S> verify=<ok|bad:OFFSET> file=<ok|bad> uptime_ms=<ms> beats=<n> maxgap_us=<us> writes=<n>
 *                  OFFSET: decimal byte offset of the first byte differing from the pattern
 *                  uptime_ms: CLOCK_MONOTONIC milliseconds since start (signed)
 *                  beats / maxgap_us / writes: see Heartbeat / Writer
 *     OPS       -> OK writes=<n> realtime_us=<us> cpu_us=<us> maxgap_us=<us> gap_writes=<n> gap_start_us=<us>
 *                  cheap (no verification), for rates: two answers give writes/s over exactly the interval
 *                  between them on the process's own clock.
 *                  writes: as in STATUS; realtime_us: CLOCK_REALTIME microseconds (the heartbeat's clock)
 *                  cpu_us: CPU time (user + system, so write-protect faults included) of the writer
 *                          thread, 0 without one; it restarts from 0 in a restored process
 *                  gap_writes / gap_start_us: writes and CLOCK_REALTIME of the beat before the largest
 *                          gap (0 / 0 while there was none)
 *     RESETGAP  -> OK   (maxgap_us, gap_writes, gap_start_us = 0)
 *     QUIT      -> BYE  then exit(0)
 *     CORRUPT   -> OK   test hook: XORs the byte at offset 12345 with 0xff (a second CORRUPT restores
 *                       it); STATUS then reports verify=bad:12345
 *     other     -> ERR unknown command
 *
 * Readiness (--ready-fd FD): once the buffer is filled, the file is open, the socket listens and the
 *   threads run, "READY <pid>\n" is written to FD and FD is closed. Nothing is ever written to
 *   stdout (except --help); errors go to stderr.
 *
 * Exit status: 0 after QUIT, 2 on invalid arguments, 1 on setup errors. SIGTERM kills it (default).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS_PER_PAGE (PAGE / 8)
#define CORRUPT_OFFSET 12345
#define HEADER_LINE "memwork data file\n"
#define MAX_MIB (1u << 20)

enum page_kind {
	K_RANDOM,
	K_ZERO,
	K_TEXT
};

#define WRITE_RATE_MAX 101u /* --write-rate max: not paced */
#define MAX_WRITE_BATCH 16  /* pages an unpaced writer writes per lock hold (and per counter update) */

static uint64_t mib, seed = 1;
static int mix, data_fd = -1;
static uint64_t sparse = 1; /* --sparse K */
static unsigned write_rate; /* 0..100, or WRITE_RATE_MAX */
static size_t buf_len, npages;
static uint8_t *buf;
static int64_t start_us; /* CLOCK_MONOTONIC at startup */
static atomic_uint_fast64_t beats, maxgap_us, writes;
static pthread_mutex_t buf_lock = PTHREAD_MUTEX_INITIALIZER; /* writer vs. CORRUPT */
/* The largest gap's start (gap_lock: maxgap_us changes under it, so the three agree; STATUS reads maxgap_us alone). */
static pthread_mutex_t gap_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t gap_writes;
static int64_t gap_start_us;
static pthread_t writer_thread;
static int have_writer;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("memwork: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static int64_t now_us(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_rel(long ns)
{
	struct timespec req = { 0, ns };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &req) == EINTR)
		;
}

static uint64_t splitmix64(uint64_t x)
{
	uint64_t z = x + 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static enum page_kind page_kind(size_t p)
{
	if (p % sparse != 0)
		return K_ZERO;
	if (!mix)
		return K_RANDOM;
	return p % 3 == 0 ? K_ZERO : p % 3 == 1 ? K_TEXT : K_RANDOM;
}

/* Writes the expected content of page p into out (PAGE bytes, 8-byte aligned). */
static void expected_page(size_t p, uint8_t *out)
{
	char s[160];
	size_t n, i;

	switch (page_kind(p)) {
	case K_ZERO:
		memset(out, 0, PAGE);
		break;
	case K_TEXT:
		n = (size_t)snprintf(s, sizeof(s),
				     "memwork page %zu seed %" PRIu64 ": the quick brown fox jumps over the lazy dog. ",
				     p, seed);
		for (i = 0; i < PAGE; i += n)
			memcpy(out + i, s, PAGE - i < n ? PAGE - i : n);
		break;
	case K_RANDOM:
		for (i = 0; i < WORDS_PER_PAGE; i++)
			((uint64_t *)out)[i] = splitmix64(seed ^ (uint64_t)(p * WORDS_PER_PAGE + i));
		break;
	}
}

static int zero_present; /* --zero-present */

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static void fill_buffer(void)
{
	/* --zero-present: every page resident, in one call rather than a write fault per page (gigabytes with --sparse). */
	int populated = zero_present && madvise(buf, buf_len, MADV_POPULATE_WRITE) == 0;

	for (size_t p = 0; p < npages; p++)
		if (page_kind(p) != K_ZERO) /* zero pages are never touched... */
			expected_page(p, buf + p * PAGE);
		else if (zero_present &&
			 !populated) /* ...unless --zero-present: resident zero pages, as a real heap has */
			memset(buf + p * PAGE, 0, PAGE);
}

/* Returns 1 if the whole buffer matches the pattern, else 0 with *bad = first differing offset. */
static int verify_buffer(size_t *bad)
{
	static uint64_t want[WORDS_PER_PAGE];
	const uint8_t *w = (const uint8_t *)want;

	for (size_t p = 0; p < npages; p++) {
		const uint8_t *have = buf + p * PAGE;

		expected_page(p, (uint8_t *)want);
		if (memcmp(have, want, PAGE) == 0)
			continue;
		for (size_t i = 0; i < PAGE; i++) {
			if (have[i] != w[i]) {
				*bad = p * PAGE + i;
				return 0;
			}
		}
	}
	return 1;
}

/* Rewrites n non-zero pages from *cursor on, round-robin; caller holds buf_lock. */
static void write_pages(size_t *cursor, uint64_t n)
{
	for (uint64_t done = 0; done < n; done++) {
		while (page_kind(*cursor) == K_ZERO)
			*cursor = (*cursor + 1) % npages;
		volatile uint64_t *pw = (volatile uint64_t *)(buf + *cursor * PAGE);
		for (size_t i = 0; i < WORDS_PER_PAGE; i++)
			pw[i] = pw[i]; /* same value: dirties the page, keeps content */
		*cursor = (*cursor + 1) % npages;
	}
}

static void *writer_main(void *arg)
{
	size_t cursor = 0;
	uint64_t acc = 0, n;

	(void)arg;
	if (write_rate == WRITE_RATE_MAX) {
		for (;;) {
			pthread_mutex_lock(&buf_lock);
			write_pages(&cursor, MAX_WRITE_BATCH);
			pthread_mutex_unlock(&buf_lock);
			atomic_fetch_add(&writes, MAX_WRITE_BATCH);
		}
	}
	for (;;) {
		sleep_rel(10 * 1000 * 1000);
		/* pages/s = npages * rate / 100, 100 ticks/s; carry the remainder to the next tick */
		acc += (uint64_t)npages * write_rate;
		n = acc / 10000;
		acc %= 10000;
		if (n == 0)
			continue;
		pthread_mutex_lock(&buf_lock);
		write_pages(&cursor, n);
		pthread_mutex_unlock(&buf_lock);
		atomic_fetch_add(&writes, n);
	}
	return NULL;
}

static void *heartbeat_main(void *arg)
{
	int64_t prev = now_us(CLOCK_REALTIME), t;
	uint64_t prev_writes = atomic_load(&writes), w;
	uint_fast64_t gap;

	(void)arg;
	for (;;) {
		sleep_rel(1000 * 1000);
		t = now_us(CLOCK_REALTIME);
		w = atomic_load(&writes);
		if (t > prev) { /* ignore backward clock steps */
			gap = (uint_fast64_t)(t - prev);
			if (gap > atomic_load(&maxgap_us)) { /* only this thread raises it: the check is not racy */
				pthread_mutex_lock(&gap_lock);
				atomic_store(&maxgap_us, gap);
				gap_writes = prev_writes;
				gap_start_us = prev;
				pthread_mutex_unlock(&gap_lock);
			}
		}
		prev = t;
		prev_writes = w;
		atomic_fetch_add(&beats, 1);
	}
	return NULL;
}

/* CPU time of the writer thread in microseconds, 0 without one. */
static int64_t writer_cpu_us(void)
{
	clockid_t clk;

	if (!have_writer || pthread_getcpuclockid(writer_thread, &clk) != 0)
		return 0;
	return now_us(clk);
}

static int read_full_at(int fd, void *p, size_t n, off_t off)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, (char *)p + got, n - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int file_ok(void)
{
	char line[sizeof(HEADER_LINE) - 1];

	return read_full_at(data_fd, line, sizeof(line), 0) == 0 && memcmp(line, HEADER_LINE, sizeof(line)) == 0;
}

static void open_data_file(const char *path)
{
	char hdr[PAGE];
	struct stat st;
	size_t done = 0;

	data_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (data_fd < 0 || fstat(data_fd, &st) < 0)
		die("%s: %s", path, strerror(errno));
	if (st.st_size == 0) {
		memset(hdr, '.', sizeof(hdr));
		memcpy(hdr, HEADER_LINE, sizeof(HEADER_LINE) - 1);
		while (done < sizeof(hdr)) {
			ssize_t r = pwrite(data_fd, hdr + done, sizeof(hdr) - done, (off_t)done);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				die("%s: write: %s", path, r < 0 ? strerror(errno) : "short write");
			done += (size_t)r;
		}
	}
	if (!file_ok())
		die("%s: not a memwork data file", path);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/*
 * Reads one command line. Returns its length (line is NUL-terminated, trailing "\r"/spaces stripped),
 * -1 on error/timeout/EOF before any byte, or -2 if the line is too long.
 */
static ssize_t read_line(int fd, char *line, size_t cap)
{
	size_t len = 0;
	char *nl = NULL;

	while (!nl) {
		if (len == cap - 1)
			return -2;
		ssize_t r = recv(fd, line + len, cap - 1 - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			if (len == 0)
				return -1;
			break; /* EOF without newline: take what we have */
		}
		nl = memchr(line + len, '\n', (size_t)r);
		len += (size_t)r;
	}
	if (nl)
		len = (size_t)(nl - line);
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
		len--;
	line[len] = '\0';
	return (ssize_t)len;
}

static int is_cmd(const char *line, ssize_t len, const char *cmd)
{
	return len == (ssize_t)strlen(cmd) && memcmp(line, cmd, (size_t)len) == 0; /* exact, NUL-safe */
}

static void handle_client(int fd)
{
	struct timeval tv = { 2, 0 };
	char line[256], out[512], vbuf[48];
	ssize_t len;
	size_t bad;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	len = read_line(fd, line, sizeof(line));
	if (len == -1)
		return;
	if (is_cmd(line, len, "PING")) {
		snprintf(out, sizeof(out), "PONG %ld\n", (long)getpid());
	} else if (is_cmd(line, len, "STATUS")) {
		if (verify_buffer(&bad))
			snprintf(vbuf, sizeof(vbuf), "ok");
		else
			snprintf(vbuf, sizeof(vbuf), "bad:%zu", bad);
		snprintf(out, sizeof(out),
			 "OK mib=%" PRIu64 " seed=%" PRIu64 " verify=%s file=%s uptime_ms=%lld beats=%" PRIuFAST64
			 " maxgap_us=%" PRIuFAST64 " writes=%" PRIuFAST64 "\n",
			 mib, seed, vbuf, file_ok() ? "ok" : "bad",
			 (long long)((now_us(CLOCK_MONOTONIC) - start_us) / 1000), atomic_load(&beats),
			 atomic_load(&maxgap_us), atomic_load(&writes));
	} else if (is_cmd(line, len, "OPS")) {
		uint64_t w = atomic_load(&writes);
		int64_t t = now_us(CLOCK_REALTIME), cpu = writer_cpu_us();

		pthread_mutex_lock(&gap_lock);
		snprintf(out, sizeof(out),
			 "OK writes=%" PRIu64 " realtime_us=%lld cpu_us=%lld maxgap_us=%" PRIuFAST64
			 " gap_writes=%" PRIu64 " gap_start_us=%lld\n",
			 w, (long long)t, (long long)cpu, atomic_load(&maxgap_us), gap_writes, (long long)gap_start_us);
		pthread_mutex_unlock(&gap_lock);
	} else if (is_cmd(line, len, "RESETGAP")) {
		pthread_mutex_lock(&gap_lock);
		atomic_store(&maxgap_us, 0);
		gap_writes = 0;
		gap_start_us = 0;
		pthread_mutex_unlock(&gap_lock);
		snprintf(out, sizeof(out), "OK\n");
	} else if (is_cmd(line, len, "QUIT")) {
		write_all(fd, "BYE\n", 4);
		close(fd);
		exit(0);
	} else if (is_cmd(line, len, "CORRUPT")) {
		pthread_mutex_lock(&buf_lock);
		buf[CORRUPT_OFFSET] ^= 0xff;
		pthread_mutex_unlock(&buf_lock);
		snprintf(out, sizeof(out), "OK\n");
	} else {
		snprintf(out, sizeof(out), "ERR unknown command\n");
	}
	if (write_all(fd, out, strlen(out)) == 0) {
		/* Discard input already queued so close() sends FIN, not RST (which could eat the answer). */
		shutdown(fd, SHUT_WR);
		while (recv(fd, line, sizeof(line), MSG_DONTWAIT) > 0)
			;
	}
}

static void usage_exit(const char *prog, const char *msg)
{
	if (msg)
		fprintf(stderr, "memwork: %s\n", msg);
	fprintf(stderr,
		"usage: %s --mib N --port P --file PATH [--seed S] [--mix] [--sparse K] [--zero-present] "
		"[--write-rate PCT|max] [--ready-fd FD] [--stdio-null]\n",
		prog);
	exit(2);
}

/* Strict unsigned decimal: digits only, no sign, no trailing junk, <= max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "port", required_argument, NULL, 'p' },
		{ "file", required_argument, NULL, 'f' },
		{ "seed", required_argument, NULL, 's' },
		{ "mix", no_argument, NULL, 'x' },
		{ "write-rate", required_argument, NULL, 'w' },
		{ "ready-fd", required_argument, NULL, 'r' },
		{ "stdio-null", no_argument, NULL, 'n' },
		{ "zero-present", no_argument, NULL, 'z' },
		{ "sparse", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	uint64_t port = 0, rate = 0, rfd = 0;
	int ready_fd = -1, stdio_null = 0, c, one = 1, lfd;
	pthread_t th;

	start_us = now_us(CLOCK_MONOTONIC);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (parse_u64(optarg, MAX_MIB, &mib) || mib == 0)
				usage_exit(argv[0], "--mib must be 1..1048576");
			break;
		case 'p':
			if (parse_u64(optarg, 65535, &port) || port == 0)
				usage_exit(argv[0], "--port must be 1..65535");
			break;
		case 'f':
			if (!*optarg)
				usage_exit(argv[0], "--file must not be empty");
			path = optarg;
			break;
		case 's':
			if (parse_u64(optarg, UINT64_MAX, &seed))
				usage_exit(argv[0], "--seed must be an unsigned 64-bit decimal");
			break;
		case 'x':
			mix = 1;
			break;
		case 'w':
			if (!strcmp(optarg, "max"))
				rate = WRITE_RATE_MAX;
			else if (parse_u64(optarg, 100, &rate))
				usage_exit(argv[0], "--write-rate must be 0..100 or max");
			break;
		case 'n':
			stdio_null = 1;
			break;
		case 'z':
			zero_present = 1;
			break;
		case 'k':
			if (parse_u64(optarg, MAX_MIB, &sparse) || sparse == 0)
				usage_exit(argv[0], "--sparse must be 1..1048576");
			break;
		case 'r':
			if (parse_u64(optarg, 1 << 20, &rfd) || fcntl((int)rfd, F_GETFD) < 0)
				usage_exit(argv[0], "--ready-fd must be an open file descriptor");
			ready_fd = (int)rfd;
			break;
		case 'h':
			printf("usage: %s --mib N --port P --file PATH [--seed S] [--mix] [--sparse K] "
			       "[--zero-present] "
			       "[--write-rate PCT|max] [--ready-fd FD]\n",
			       argv[0]);
			return 0;
		default:
			usage_exit(argv[0], NULL);
		}
	}
	if (optind < argc)
		usage_exit(argv[0], "unexpected argument");
	if (!mib || !port || !path)
		usage_exit(argv[0], "--mib, --port and --file are required");
	write_rate = (unsigned)rate;

	/*
	 * --stdio-null: stdin/stdout/stderr on /dev/null, so that a checkpoint of this process holds no
	 * pipe or terminal whose other end is outside the dumped tree (CRIU would refuse or need inherit-fd).
	 */
	if (stdio_null) {
		int nfd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nfd < 0 || dup2(nfd, 0) < 0 || dup2(nfd, 1) < 0 || dup2(nfd, 2) < 0)
			die("redirecting stdio to /dev/null: %s", strerror(errno));
		if (nfd > 2)
			close(nfd);
	}

	/* Memory */
	buf_len = (size_t)mib << 20;
	npages = buf_len / PAGE;
	buf = mmap(NULL, buf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap %" PRIu64 " MiB: %s", mib, strerror(errno));
	madvise(buf, buf_len, MADV_NOHUGEPAGE); /* best effort: EINVAL without THP support */
	fill_buffer();

	/* File */
	open_data_file(path);

	/* Socket */
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0)
		die("listen on port %" PRIu64 ": %s", port, strerror(errno));

	/* Threads */
	if ((errno = pthread_create(&th, NULL, heartbeat_main, NULL)) != 0)
		die("pthread_create: %s", strerror(errno));
	if (write_rate > 0) {
		if ((errno = pthread_create(&writer_thread, NULL, writer_main, NULL)) != 0)
			die("pthread_create: %s", strerror(errno));
		have_writer = 1;
	}

	if (ready_fd >= 0) {
		char msg[48];
		int n = snprintf(msg, sizeof(msg), "READY %ld\n", (long)getpid());
		for (int off = 0; off < n;) {
			ssize_t r = write(ready_fd, msg + off, (size_t)(n - off));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				die("write to --ready-fd: %s", r < 0 ? strerror(errno) : "short write");
			off += (int)r;
		}
		close(ready_fd);
	}

	for (;;) {
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EBADF || errno == EINVAL || errno == ENOTSOCK)
				die("accept: %s", strerror(errno)); /* listening socket is gone: do not spin */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				sleep_rel(10 * 1000 * 1000); /* transient: back off, never spin */
			continue;
		}
		handle_client(cfd);
		close(cfd);
	}
}

/*
 * trackee - a process that writes memory pages on command, for the dirty
 * tracker's tests (C and C#).
 *
 * Usage: trackee [--mode read|compute|sleep|leader-exit] [--mib N] [--thp]
 *
 * At start it maps N MiB (default 64) private anonymous memory (MADV_NOHUGEPAGE,
 * or MADV_HUGEPAGE with --thp), writes every
 * page, and prints "READY pid=<pid> buf=0x<addr> pages=<n>".
 *
 * The main thread (the thread group leader, which the tracker injects into):
 *   read     reads the commands itself, so it sits blocked in read(0) between them;
 *   compute  computes a checksum in a loop and counts wrong results (a register
 *            or FPU state changed under it would show as an error);
 *   sleep    sleeps 1 ms in a loop (clock_nanosleep) and counts sleeps that
 *            returned early without EINTR (a botched syscall restart);
 *   leader-exit  calls pthread_exit(): the process lives on in its other threads
 *            with a zombie leader (/proc/PID/maps is then empty).
 * In the other modes a second thread reads the commands. A "writer"
 * thread exists in every mode for the T command. SIGRTMIN is handled (SA_RESTART)
 * by the main thread only: it counts the signals and sums their si_value.
 *
 * Commands, one per line on stdin; each is answered by one line on stdout that
 * starts with OK or ERR. Page lists are decimal indexes into the buffer, or
 * inclusive ranges A-B.
 *   W <pages...>             write the pages (one 8-byte store each)
 *   T <pages...>             the same, done by the writer thread
 *   WS <first> <count> <stride>  write count pages: first, first+stride, ...
 *   WA <hexaddr> <pages>     write pages at an absolute address
 *   RD <page>                answers "GO", then read()s 4096 bytes from stdin straight
 *                            into that buffer page (the kernel writes it) and answers
 *                            "OK <sum of the bytes>"
 *   DN <page> <count>        madvise(MADV_DONTNEED) count pages from page: their content becomes zero
 *   ALIGN2M                  "OK <page>": the first buffer page on a 2 MiB boundary
 *   MAP <pages>              mmap a new private anonymous region, untouched: "OK 0x<addr>"
 *   MAPW <pages>             the same, every page written
 *   MAPF <hexaddr> <pages>   mmap MAP_FIXED over the range (replacing it), every page written
 *   UNMAP <hexaddr> <pages>  munmap
 *   FORK <ms>                fork a child that sleeps ms milliseconds then exits (its pages are
 *                            shared copy-on-write meanwhile): "OK <child pid>"
 *   TID                      "OK <tid>" of the thread that reads the commands
 *   BRK <pages>              grow the heap with sbrk, write the new pages: "OK 0x<old break>"
 *   STATUS                   "OK rounds=<n> errors=<n> sigs=<n> sigsum=<n> sleeps=<n> eintr=<n>"
 *   QUIT                     "OK", then exit(0)
 * End of input exits too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define LINE_MAX_LEN 4096
#define SLEEP_NS 1000000L

enum mode {
	MODE_READ,
	MODE_COMPUTE,
	MODE_SLEEP,
	MODE_LEADER_EXIT
};

static char *buf;
static size_t pages;
static atomic_ulong rounds, errors, sigs, sigsum, sleeps, eintrs;
static atomic_ulong stamp;

/* writer thread hand-off */
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_cond = PTHREAD_COND_INITIALIZER;
static char job[LINE_MAX_LEN];
static int job_state; /* 0 idle, 1 posted, 2 done */
static int job_result;

/* line reader over fd 0 */
static char in_buf[LINE_MAX_LEN * 2];
static size_t in_len;

static void reply(const char *fmt, ...)
{
	char out[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, sizeof(out) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(out) - 2)
		n = (int)sizeof(out) - 2;
	out[n++] = '\n';
	if (write(1, out, (size_t)n) != n)
		exit(1);
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	atomic_fetch_add(&sigs, 1);
	atomic_fetch_add(&sigsum, (unsigned long)si->si_value.sival_int);
}

static void write_page(char *p)
{
	*(volatile uint64_t *)(p + 8) = atomic_fetch_add(&stamp, 1) + 1;
}

/* "3 100-110 5000" */
static int write_list(char *args)
{
	char *save = NULL, *tok;

	for (tok = strtok_r(args, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		char *dash = strchr(tok, '-');
		unsigned long a = strtoul(tok, NULL, 10), b = dash ? strtoul(dash + 1, NULL, 10) : a, p;

		if (b < a || b >= pages)
			return -1;
		for (p = a; p <= b; p++)
			write_page(buf + p * PAGE);
	}
	return 0;
}

static void *writer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&job_lock);
	for (;;) {
		while (job_state != 1)
			pthread_cond_wait(&job_cond, &job_lock);
		job_result = write_list(job);
		job_state = 2;
		pthread_cond_broadcast(&job_cond);
	}
	return NULL;
}

static int writer_run(const char *args)
{
	int r;

	pthread_mutex_lock(&job_lock);
	snprintf(job, sizeof(job), "%s", args);
	job_state = 1;
	pthread_cond_broadcast(&job_cond);
	while (job_state != 2)
		pthread_cond_wait(&job_cond, &job_lock);
	job_state = 0;
	r = job_result;
	pthread_mutex_unlock(&job_lock);
	return r;
}

/* One line from fd 0, without the newline; NULL at end of input. */
static char *read_line(void)
{
	static char line[LINE_MAX_LEN];

	for (;;) {
		char *nl = memchr(in_buf, '\n', in_len);
		ssize_t r;

		if (nl) {
			size_t n = (size_t)(nl - in_buf);

			if (n >= sizeof(line))
				n = sizeof(line) - 1;
			memcpy(line, in_buf, n);
			line[n] = '\0';
			in_len -= (size_t)(nl - in_buf) + 1;
			memmove(in_buf, nl + 1, in_len);
			return line;
		}
		if (in_len == sizeof(in_buf))
			return NULL;
		r = read(0, in_buf + in_len, sizeof(in_buf) - in_len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return NULL;
		in_len += (size_t)r;
	}
}

static void *map_pages(void *addr, size_t n, int extra)
{
	void *p = mmap(addr, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);

	if (p != MAP_FAILED)
		madvise(p, n * PAGE, MADV_NOHUGEPAGE);
	return p;
}

static void command(char *line)
{
	char *args = strchr(line, ' ');
	unsigned long a = 0, b = 0, c = 0, i;
	void *p;

	if (args)
		*args++ = '\0';
	else
		args = line + strlen(line);

	if (!strcmp(line, "W")) {
		if (write_list(args))
			reply("ERR bad page");
		else
			reply("OK");
	} else if (!strcmp(line, "T")) {
		if (writer_run(args))
			reply("ERR bad page");
		else
			reply("OK");
	} else if (!strcmp(line, "WS")) {
		if (sscanf(args, "%lu %lu %lu", &a, &b, &c) != 3 || !c || a + (b ? b - 1 : 0) * c >= pages) {
			reply("ERR bad range");
			return;
		}
		for (i = 0; i < b; i++)
			write_page(buf + (a + i * c) * PAGE);
		reply("OK");
	} else if (!strcmp(line, "WA")) {
		if (sscanf(args, "%lx %lu", &a, &b) != 2) {
			reply("ERR usage");
			return;
		}
		for (i = 0; i < b; i++)
			write_page((char *)(a + i * PAGE));
		reply("OK");
	} else if (!strcmp(line, "RD")) {
		unsigned long sum = 0;
		size_t got = 0;

		a = strtoul(args, NULL, 10);
		if (a >= pages || in_len) {
			reply("ERR bad page or data sent early");
			return;
		}
		reply("GO");
		while (got < PAGE) {
			ssize_t r = read(0, buf + a * PAGE + got, PAGE - got);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				exit(1);
			got += (size_t)r;
		}
		for (i = 0; i < PAGE; i++)
			sum += (unsigned char)buf[a * PAGE + i];
		reply("OK %lu", sum);
	} else if (!strcmp(line, "DN")) {
		if (sscanf(args, "%lu %lu", &a, &b) != 2 || a + b > pages ||
		    madvise(buf + a * PAGE, b * PAGE, MADV_DONTNEED)) {
			reply("ERR madvise");
			return;
		}
		reply("OK");
	} else if (!strcmp(line, "ALIGN2M")) {
		uintptr_t m = (uintptr_t)buf, aligned = (m + (2UL << 20) - 1) & ~((2UL << 20) - 1);

		reply("OK %lu", (unsigned long)((aligned - m) / PAGE));
	} else if (!strcmp(line, "MAP") || !strcmp(line, "MAPW")) {
		a = strtoul(args, NULL, 10);
		p = map_pages(NULL, a, 0);
		if (p == MAP_FAILED) {
			reply("ERR mmap %s", strerror(errno));
			return;
		}
		if (line[3] == 'W')
			for (i = 0; i < a; i++)
				write_page((char *)p + i * PAGE);
		reply("OK %p", p);
	} else if (!strcmp(line, "MAPF")) {
		if (sscanf(args, "%lx %lu", &a, &b) != 2) {
			reply("ERR usage");
			return;
		}
		p = map_pages((void *)a, b, MAP_FIXED);
		if (p == MAP_FAILED) {
			reply("ERR mmap %s", strerror(errno));
			return;
		}
		for (i = 0; i < b; i++)
			write_page((char *)p + i * PAGE);
		reply("OK %p", p);
	} else if (!strcmp(line, "UNMAP")) {
		if (sscanf(args, "%lx %lu", &a, &b) != 2 || munmap((void *)a, b * PAGE)) {
			reply("ERR munmap");
			return;
		}
		reply("OK");
	} else if (!strcmp(line, "BRK")) {
		char *old;

		a = strtoul(args, NULL, 10);
		old = sbrk((intptr_t)(a * PAGE));
		if (old == (void *)-1) {
			reply("ERR sbrk %s", strerror(errno));
			return;
		}
		for (i = 0; i < a; i++)
			write_page(old + i * PAGE);
		reply("OK %p", (void *)old);
	} else if (!strcmp(line, "FORK")) {
		pid_t child;

		a = strtoul(args, NULL, 10);
		child = fork();
		if (child < 0) {
			reply("ERR fork %s", strerror(errno));
			return;
		}
		if (!child) {
			usleep((useconds_t)(a * 1000));
			_exit(0);
		}
		reply("OK %d", (int)child);
	} else if (!strcmp(line, "TID")) {
		reply("OK %d", (int)gettid());
	} else if (!strcmp(line, "STATUS")) {
		reply("OK rounds=%lu errors=%lu sigs=%lu sigsum=%lu sleeps=%lu eintr=%lu", atomic_load(&rounds),
		      atomic_load(&errors), atomic_load(&sigs), atomic_load(&sigsum), atomic_load(&sleeps),
		      atomic_load(&eintrs));
	} else if (!strcmp(line, "QUIT")) {
		reply("OK");
		exit(0);
	} else {
		reply("ERR unknown command %s", line);
	}
}

static void *command_main(void *arg)
{
	char *line;

	(void)arg;
	while ((line = read_line()))
		command(line);
	exit(0);
}

/* Integer and floating-point work whose result is known: a corrupted register shows as a mismatch. */
static uint64_t checksum(uint64_t seed)
{
	uint64_t x = seed;
	double d = 1.0;
	int i;

	for (i = 0; i < 200000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		d = d * 1.0000001 + (double)(x & 0xff);
	}
	return x ^ (uint64_t)d;
}

static void compute_loop(void)
{
	static volatile uint64_t seed = 0x9e3779b97f4a7c15ULL;
	uint64_t expected = checksum(seed);

	for (;;) {
		if (checksum(seed) != expected)
			atomic_fetch_add(&errors, 1);
		atomic_fetch_add(&rounds, 1);
	}
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_loop(void)
{
	const struct timespec d = { .tv_sec = 0, .tv_nsec = SLEEP_NS };

	for (;;) {
		int64_t t0 = now_ns();
		int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &d, NULL);

		if (r == EINTR)
			atomic_fetch_add(&eintrs, 1);
		else if (r || now_ns() - t0 < SLEEP_NS)
			atomic_fetch_add(&errors, 1);
		atomic_fetch_add(&sleeps, 1);
	}
}

int main(int argc, char **argv)
{
	enum mode mode = MODE_READ;
	unsigned long mib = 64;
	struct sigaction sa;
	sigset_t rt, old;
	pthread_t th;
	bool thp = false;
	size_t i;
	int ai;

	for (ai = 1; ai < argc; ai++) {
		if (!strcmp(argv[ai], "--mode") && ai + 1 < argc) {
			const char *m = argv[++ai];

			if (!strcmp(m, "read"))
				mode = MODE_READ;
			else if (!strcmp(m, "compute"))
				mode = MODE_COMPUTE;
			else if (!strcmp(m, "sleep"))
				mode = MODE_SLEEP;
			else if (!strcmp(m, "leader-exit"))
				mode = MODE_LEADER_EXIT;
			else
				goto usage;
		} else if (!strcmp(argv[ai], "--mib") && ai + 1 < argc) {
			mib = strtoul(argv[++ai], NULL, 10);
			if (!mib)
				goto usage;
		} else if (!strcmp(argv[ai], "--thp")) {
			thp = true;
		} else {
			goto usage;
		}
	}

	pages = mib * (1UL << 20) / PAGE;
	buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("trackee: mmap");
		return 1;
	}
	madvise(buf, pages * PAGE, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	for (i = 0; i < pages; i++)
		memset(buf + i * PAGE, (int)(i & 0xff), PAGE);

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGRTMIN, &sa, NULL);

	/* Threads start with SIGRTMIN blocked, so the main thread is the one that handles it. */
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	pthread_sigmask(SIG_BLOCK, &rt, &old);
	if (pthread_create(&th, NULL, writer_main, NULL))
		return 1;
	if (mode != MODE_READ && pthread_create(&th, NULL, command_main, NULL))
		return 1;
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	reply("READY pid=%d buf=%p pages=%zu", (int)getpid(), (void *)buf, pages);
	switch (mode) {
	case MODE_READ:
		command_main(NULL);
		break;
	case MODE_COMPUTE:
		compute_loop();
		break;
	case MODE_SLEEP:
		sleep_loop();
		break;
	case MODE_LEADER_EXIT:
		pthread_exit(NULL);
	}
	return 0;
usage:
	fprintf(stderr, "usage: trackee [--mode read|compute|sleep|leader-exit] [--mib N] [--thp]\n");
	return 2;
}

/*
 * tcpseq: a server and a client that prove a TCP connection survives a migration untouched.
 *
 *   tcpseq server ADDR PORT [BALLAST_MIB]
 *       Listens on ADDR:PORT (IPv4 or IPv6). Each connection is served by its own thread: it reads 8-byte
 *       big-endian sequence numbers and answers each with the same 8 bytes, checking that they count up by one
 *       from the first; a gap or a repeat closes the connection (the client then fails loudly). BALLAST_MIB (default 0, at
 *       most 4096) MiB of memory filled with pseudo-random bytes (no compression shrinks them) are held for as long as
 *       it runs: a server with memory to move, whose freeze a cold migration makes longer.
 *
 *   tcpseq client ADDR PORT [INTERVAL_US]
 *       Connects once and sends 1, 2, 3, ... one per INTERVAL_US (default 1000) over that ONE connection, each
 *       after the reply to the one before; checks every reply. On SIGTERM or SIGINT it prints one line
 *         OK requests=N max_stall_us=S stall_at=K
 *       and exits 0: max_stall_us is the longest wait for one reply, stall_at the request that waited it. Any
 *       error (reset, end of file, wrong reply, timeout of 60 s on a reply) prints
 *         ERROR requests=N what=...
 *       and exits 1 at once. Every 100 ms it rewrites its progress line to --status FILE if given (tests read it).
 *
 *   tcpseq stream ADDR PORT [INTERVAL_US]
 *       Like client, but sends one sequence number per INTERVAL_US (default 5000) whether or not the replies came,
 *       as a client with requests in flight does: while the server is frozen its requests keep going out. Checks
 *       every reply; max_stall_us is the longest gap between two replies (from the first reply on) and stall_at
 *       the reply that ended it. Same output, status file and errors as client.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void put_be64(unsigned char *b, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *b)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | b[i];
	return v;
}

/* Reads exactly n bytes; 0 on success, -1 with errno (0 for end of file). */
static int read_full(int fd, unsigned char *b, size_t n)
{
	for (size_t off = 0; off < n;) {
		ssize_t r = read(fd, b + off, n - off);
		if (r == 0) {
			errno = 0;
			return -1;
		}
		if (r < 0) {
			if (errno == EINTR && !stop)
				continue;
			return -1;
		}
		off += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const unsigned char *b, size_t n)
{
	for (size_t off = 0; off < n;) {
		ssize_t r = write(fd, b + off, n - off);
		if (r < 0) {
			if (errno == EINTR && !stop)
				continue;
			return -1;
		}
		off += (size_t)r;
	}
	return 0;
}

static int resolve(const char *addr, const char *port, struct addrinfo **out, int passive)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) };
	int rc = getaddrinfo(addr, port, &hints, out);
	if (rc != 0) {
		fprintf(stderr, "tcpseq: %s port %s: %s\n", addr, port, gai_strerror(rc));
		return -1;
	}
	return 0;
}

static int connect_to(const char *addr, const char *port)
{
	struct addrinfo *ai;
	if (resolve(addr, port, &ai, 0) != 0)
		return -1;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		fprintf(stderr, "tcpseq: connect %s:%s: %s\n", addr, port, strerror(errno));
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	freeaddrinfo(ai);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	unsigned char b[8];
	uint64_t expect = 0;
	while (read_full(fd, b, 8) == 0) {
		uint64_t seq = get_be64(b);
		if (expect != 0 && seq != expect) {
			fprintf(stderr, "tcpseq server: expected %" PRIu64 ", got %" PRIu64 ": closing\n", expect, seq);
			break;
		}
		expect = seq + 1;
		if (write_full(fd, b, 8) != 0)
			break;
	}
	close(fd);
	return NULL;
}

/* The ballast, kept where the compiler cannot prove it unused. */
static unsigned char *volatile ballast_held;

/* Fills n bytes with xorshift64 output: pages that neither zero detection nor compression make cheaper to move. */
static unsigned char *ballast(size_t n)
{
	unsigned char *b = malloc(n);
	if (b == NULL)
		return NULL;
	uint64_t x = 0x9e3779b97f4a7c15u;
	for (size_t off = 0; off + 8 <= n; off += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(b + off, &x, 8);
	}
	return b;
}

static int server(const char *addr, const char *port, long ballast_mib)
{
	if (ballast_mib < 0 || ballast_mib > 4096) {
		fprintf(stderr, "tcpseq server: BALLAST_MIB is 0 to 4096, not %ld\n", ballast_mib);
		return 2;
	}
	ballast_held = ballast_mib > 0 ? ballast((size_t)ballast_mib << 20) : NULL;
	if (ballast_mib > 0 && ballast_held == NULL) {
		fprintf(stderr, "tcpseq server: %ld MiB of ballast: %s\n", ballast_mib, strerror(errno));
		return 2;
	}
	struct addrinfo *ai;
	if (resolve(addr, port, &ai, 1) != 0)
		return 2;
	int lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(lfd, 16) != 0) {
		fprintf(stderr, "tcpseq server: %s:%s: %s\n", addr, port, strerror(errno));
		return 2;
	}
	freeaddrinfo(ai);
	printf("LISTENING %s %s\n", addr, port);
	fflush(stdout);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			fprintf(stderr, "tcpseq server: accept: %s\n", strerror(errno));
			return 2;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_t th;
		if (pthread_create(&th, NULL, serve, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(th);
	}
}

static void status(const char *path, const char *line)
{
	if (path == NULL)
		return;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return;
	fputs(line, f);
	fclose(f);
	rename(tmp, path);
}

static int client(const char *addr, const char *port, long interval_us, const char *status_path)
{
	int fd = connect_to(addr, port);
	if (fd < 0)
		return 2;
	struct timeval tv = { 60, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	printf("CONNECTED\n");
	fflush(stdout);

	uint64_t seq = 0, max_stall = 0, stall_at = 0, last_status = now_us();
	char line[256];
	while (!stop) {
		unsigned char b[8];
		seq++;
		put_be64(b, seq);
		uint64_t t0 = now_us();
		if (write_full(fd, b, 8) != 0 || read_full(fd, b, 8) != 0) {
			if (stop)
				break;
			printf("ERROR requests=%" PRIu64 " what=%s\n", seq - 1,
			       errno == 0 ? "end-of-file" : strerror(errno));
			snprintf(line, sizeof(line), "ERROR requests=%" PRIu64 "\n", seq - 1);
			status(status_path, line);
			return 1;
		}
		uint64_t t1 = now_us();
		if (get_be64(b) != seq) {
			printf("ERROR requests=%" PRIu64 " what=reply-%" PRIu64 "-to-%" PRIu64 "\n", seq - 1,
			       get_be64(b), seq);
			status(status_path, "ERROR\n");
			return 1;
		}
		if (t1 - t0 > max_stall) {
			max_stall = t1 - t0;
			stall_at = seq;
		}
		if (t1 - last_status >= 100000) {
			snprintf(line, sizeof(line), "RUNNING requests=%" PRIu64 " max_stall_us=%" PRIu64 "\n", seq,
				 max_stall);
			status(status_path, line);
			last_status = t1;
		}
		if (interval_us > 0) {
			struct timespec ts = { interval_us / 1000000, (interval_us % 1000000) * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	snprintf(line, sizeof(line), "OK requests=%" PRIu64 " max_stall_us=%" PRIu64 " stall_at=%" PRIu64 "\n", seq,
		 max_stall, stall_at);
	fputs(line, stdout);
	status(status_path, line);
	return 0;
}

/* Sends on a clock, reads the replies as they come: one thread, poll() until the next send is due. */
static int stream(const char *addr, const char *port, long interval_us, const char *status_path)
{
	int fd = connect_to(addr, port);
	if (fd < 0)
		return 2;
	printf("CONNECTED\n");
	fflush(stdout);

	uint64_t sent = 0, answered = 0, max_stall = 0, stall_at = 0;
	uint64_t now = now_us(), next_send = now, last_reply = 0, last_status = now;
	unsigned char in[4096];
	size_t have = 0;
	char line[256];
	const char *what = NULL;
	while (!stop && what == NULL) {
		now = now_us();
		if (now >= next_send) {
			unsigned char b[8];
			put_be64(b, ++sent);
			if (write_full(fd, b, 8) != 0) {
				what = stop ? NULL : strerror(errno);
				break;
			}
			next_send += (uint64_t)interval_us;
			if (next_send < now)
				next_send = now + (uint64_t)interval_us;
		}
		uint64_t wait_us = next_send > now ? next_send - now : 0;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)((wait_us + 999) / 1000));
		if (r < 0 && errno != EINTR) {
			what = strerror(errno);
			break;
		}
		if (r <= 0) {
			if (last_reply != 0 && now_us() - last_reply > 60000000u)
				what = "no-reply-for-60-s";
			continue;
		}
		ssize_t n = read(fd, in + have, sizeof(in) - have);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			what = n == 0 ? "end-of-file" : strerror(errno);
			break;
		}
		have += (size_t)n;
		uint64_t t = now_us();
		size_t off = 0;
		for (; have - off >= 8; off += 8) {
			uint64_t seq = get_be64(in + off);
			if (seq != answered + 1) {
				printf("ERROR requests=%" PRIu64 " what=reply-%" PRIu64 "-to-%" PRIu64 "\n", answered,
				       seq, answered + 1);
				status(status_path, "ERROR\n");
				return 1;
			}
			answered = seq;
			if (last_reply != 0 && t - last_reply > max_stall) {
				max_stall = t - last_reply;
				stall_at = seq;
			}
			last_reply = t;
		}
		memmove(in, in + off, have - off);
		have -= off;
		if (t - last_status >= 100000) {
			snprintf(line, sizeof(line), "RUNNING requests=%" PRIu64 " max_stall_us=%" PRIu64 "\n",
				 answered, max_stall);
			status(status_path, line);
			last_status = t;
		}
	}
	if (what != NULL) {
		printf("ERROR requests=%" PRIu64 " what=%s\n", answered, what);
		snprintf(line, sizeof(line), "ERROR requests=%" PRIu64 "\n", answered);
		status(status_path, line);
		return 1;
	}
	snprintf(line, sizeof(line), "OK requests=%" PRIu64 " max_stall_us=%" PRIu64 " stall_at=%" PRIu64 "\n",
		 answered, max_stall, stall_at);
	fputs(line, stdout);
	status(status_path, line);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	const char *status_path = NULL;
	if (argc >= 3 && strcmp(argv[argc - 2], "--status") == 0) {
		status_path = argv[argc - 1];
		argc -= 2;
	}
	if (argc >= 4 && strcmp(argv[1], "server") == 0)
		return server(argv[2], argv[3], argc >= 5 ? atol(argv[4]) : 0);
	if (argc >= 4 && strcmp(argv[1], "client") == 0)
		return client(argv[2], argv[3], argc >= 5 ? atol(argv[4]) : 1000, status_path);
	if (argc >= 4 && strcmp(argv[1], "stream") == 0) {
		long interval = argc >= 5 ? atol(argv[4]) : 5000;
		if (interval < 100 || interval > 10000000) {
			fprintf(stderr, "tcpseq stream: INTERVAL_US is 100 to 10000000, not %s\n", argv[4]);
			return 2;
		}
		return stream(argv[2], argv[3], interval, status_path);
	}
	fprintf(stderr, "usage: tcpseq server ADDR PORT [BALLAST_MIB] | tcpseq client|stream ADDR PORT [INTERVAL_US] "
			"[--status FILE]\n");
	return 2;
}

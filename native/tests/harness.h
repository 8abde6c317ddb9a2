/*
 * A small test harness for the tracker's C tests: TAP-like output, checks that
 * say what failed, and a trackee child driven over pipes with timeouts.
 */
#ifndef MIGRATE_TRACK_HARNESS_H
#define MIGRATE_TRACK_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REPLY_TIMEOUT_MS 10000

#define CHECK(cond, ...)                                                                      \
	do {                                                                                  \
		if (!(cond)) {                                                                \
			fprintf(stderr, "    FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                         \
			fprintf(stderr, "\n");                                                \
			return -1;                                                            \
		}                                                                             \
	} while (0)

/* An mt_* call that must succeed. */
#define CHECK_MT(call)                                                                                           \
	do {                                                                                                     \
		int __r = (call);                                                                                \
		CHECK(__r >= 0, "%s returned %d (%s), step \"%s\"", #call, __r, strerror(-__r), mt_last_step()); \
	} while (0)

struct child {
	pid_t pid;
	int to;	  /* its stdin */
	int from; /* its stdout */
	char rbuf[4096];
	size_t rlen;
	uint64_t buf; /* its 64 MiB (or --mib) buffer */
	uint64_t pages;
};

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The directory of this executable: trackee lives next to it. */
static inline const char *bin_dir(void)
{
	static char dir[PATH_MAX];

	if (!dir[0]) {
		ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);

		if (n <= 0)
			return ".";
		dir[n] = '\0';
		*strrchr(dir, '/') = '\0';
	}
	return dir;
}

/* Read one line of the child's output (without '\n') within REPLY_TIMEOUT_MS. */
static inline int child_line(struct child *c, char *line, size_t len)
{
	int64_t deadline = now_ns() + (int64_t)REPLY_TIMEOUT_MS * 1000000;

	for (;;) {
		char *nl = memchr(c->rbuf, '\n', c->rlen);
		struct pollfd pfd = { .fd = c->from, .events = POLLIN };
		int64_t left;
		ssize_t r;

		if (nl) {
			size_t n = (size_t)(nl - c->rbuf);

			snprintf(line, len, "%.*s", (int)n, c->rbuf);
			c->rlen -= n + 1;
			memmove(c->rbuf, nl + 1, c->rlen);
			return 0;
		}
		left = (deadline - now_ns()) / 1000000;
		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
			fprintf(stderr, "    child %d: no answer within %d ms\n", c->pid, REPLY_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
		r = read(c->from, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen);
		if (r <= 0) {
			fprintf(stderr, "    child %d: output closed\n", c->pid);
			return -EPIPE;
		}
		c->rlen += (size_t)r;
	}
}

static inline int child_send(struct child *c, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t w = write(c->to, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EPIPE;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Send a command line, read the answer; returns 0 only for an "OK..." (or "GO") answer. */
static inline int child_cmd(struct child *c, char *resp, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static inline int child_cmd(struct child *c, char *resp, size_t len, const char *fmt, ...)
{
	char line[4096], tmp[4096];
	va_list ap;
	int n, err;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	line[n++] = '\n';
	err = child_send(c, line, (size_t)n);
	if (err)
		return err;
	if (!resp) {
		resp = tmp;
		len = sizeof(tmp);
	}
	err = child_line(c, resp, len);
	if (err)
		return err;
	if (strncmp(resp, "OK", 2) && strncmp(resp, "GO", 2)) {
		fprintf(stderr, "    child %d: \"%.*s\" answered \"%s\"\n", c->pid, n - 1, line, resp);
		return -EPROTO;
	}
	return 0;
}

/*
 * Start trackee with extra arguments (NULL-terminated); uid != (uid_t)-1 runs
 * it as that user.
 */
static inline int child_start(struct child *c, uid_t uid, ...)
{
	const char *argv[16];
	char path[PATH_MAX + 16], line[256];
	int in[2], out[2], argc = 0, err;
	va_list ap;

	memset(c, 0, sizeof(*c));
	snprintf(path, sizeof(path), "%s/trackee", bin_dir());
	argv[argc++] = path;
	va_start(ap, uid);
	while (argc < 15 && (argv[argc] = va_arg(ap, const char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;

	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
		return -errno;
	c->pid = fork();
	if (c->pid < 0)
		return -errno;
	if (!c->pid) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		if (uid != (uid_t)-1 && (setgid(uid) || setuid(uid)))
			_exit(126);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	c->to = in[1];
	c->from = out[0];
	err = child_line(c, line, sizeof(line));
	if (err)
		return err;
	if (sscanf(line, "READY pid=%*d buf=%" SCNx64 " pages=%" SCNu64, &c->buf, &c->pages) != 2) {
		fprintf(stderr, "    trackee said \"%s\"\n", line);
		return -EPROTO;
	}
	return 0;
}

static inline void child_stop(struct child *c)
{
	int status;

	if (c->pid <= 0)
		return;
	kill(c->pid, SIGKILL);
	waitpid(c->pid, &status, 0);
	close(c->to);
	close(c->from);
	c->pid = 0;
}

/* Parse "key=<n>" out of a STATUS answer. */
static inline unsigned long status_field(const char *status, const char *key)
{
	char k[32];
	const char *p;

	snprintf(k, sizeof(k), " %s=", key);
	p = strstr(status, k);
	return p ? strtoul(p + strlen(k), NULL, 10) : (unsigned long)-1;
}

/* Does the task hold a userfaultfd descriptor? tid: a live thread (the leader's files go when it exits). */
static inline bool has_uffd_fd_of(pid_t pid, pid_t tid)
{
	char path[64], target[128], link[PATH_MAX];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/fd", pid, tid);
	d = opendir(path);
	if (!d)
		return false;
	while ((de = readdir(d))) {
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (!strcmp(target, "anon_inode:[userfaultfd]"))
			found = true;
	}
	closedir(d);
	return found;
}

/* Number of VMAs whose VmFlags carry "uw" (userfaultfd write-protect registered). */
static inline int count_uw_vmas_of(pid_t pid, pid_t tid)
{
	char path[64], *line = NULL;
	size_t len = 0;
	int count = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/smaps", pid, tid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (getline(&line, &len, f) > 0)
		if (!strncmp(line, "VmFlags:", 8) && strstr(line, " uw"))
			count++;
	free(line);
	fclose(f);
	return count;
}

static inline bool has_uffd_fd(pid_t pid)
{
	return has_uffd_fd_of(pid, pid);
}

static inline int count_uw_vmas(pid_t pid)
{
	return count_uw_vmas_of(pid, pid);
}

/* After detach: no userfaultfd in the task, no VMA flagged uw. */
static inline int expect_no_trace(pid_t pid)
{
	CHECK(!has_uffd_fd(pid), "pid %d still holds a userfaultfd", pid);
	CHECK(count_uw_vmas(pid) == 0, "pid %d still has %d VMAs with VmFlags uw", pid, count_uw_vmas(pid));
	return 0;
}

#endif /* MIGRATE_TRACK_HARNESS_H */

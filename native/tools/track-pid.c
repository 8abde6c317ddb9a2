/*
 * track-pid - dirty-track a running process without migrating it: attach libmigrate_track, collect the
 * written pages every interval the way pre-copy does between its iterations (mt_refresh, then mt_harvest
 * until done), detach. For measuring what tracking alone costs the tracked process.
 *
 * Usage: track-pid PID [--interval-ms N] [--duration-ms N] [--allow-seccomp]
 *   --interval-ms N   time between collections, 1..3600000, default 100
 *   --duration-ms N   stop after N ms (0, the default: run until SIGINT or SIGTERM)
 *   --allow-seccomp   MT_ATTACH_ALLOW_SECCOMP (see track.h)
 *
 * Output (stdout, one line each, flushed):
 *   ATTACHED pid=<pid> vmas=<n> tracked_kib=<n> failed_vmas=<n> attach_us=<us> stop_us=<us>
 *            once tracking is on: pages written from then on are reported
 *   DETACHED harvests=<n> pages=<n> max_pages=<n> harvest_us_avg=<us> harvest_us_max=<us> elapsed_ms=<ms>
 *            pages: sum over the collections (a page written in two intervals counts twice);
 *            harvest_us: one collection (refresh + harvest), the time the tracker holds the task's mm
 * Errors go to stderr as "track-pid: ..." with the failed step.
 *
 * Exit status: 0 after a clean detach, 1 on a tracker error (the tracker is detached anyway), 2 on usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "track.h"

#define HARVEST_CHUNK 4096 /* ranges per mt_harvest()/mt_refresh() call */
#define MAX_INTERVAL_MS 3600000

static void log_stderr(int level, const char *msg)
{
	(void)level;
	fputs(msg, stderr);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char *what, int rc)
{
	fprintf(stderr, "track-pid: %s: %s (step \"%s\")\n", what, strerror(-rc), mt_last_step());
}

static void usage_exit(const char *msg)
{
	if (msg)
		fprintf(stderr, "track-pid: %s\n", msg);
	fprintf(stderr, "usage: track-pid PID [--interval-ms N] [--duration-ms N] [--allow-seccomp]\n");
	exit(2);
}

static long parse_num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		char msg[96];

		snprintf(msg, sizeof(msg), "%s must be %ld..%ld", what, min, max);
		usage_exit(msg);
	}
	return v;
}

/* One collection as pre-copy does it: new or grown mappings (wholly dirty), then the written pages. */
static int collect(struct mt_tracker *t, struct mt_range *buf, uint64_t *pages)
{
	size_t n, i;
	int rc;

	*pages = 0;
	do {
		rc = mt_refresh(t, buf, HARVEST_CHUNK, &n);
		if (rc < 0) {
			fail("refresh", rc);
			return rc;
		}
		for (i = 0; i < n; i++)
			*pages += buf[i].pages;
	} while (rc & MT_MORE);
	do {
		rc = mt_harvest(t, buf, HARVEST_CHUNK, &n);
		if (rc < 0) {
			fail("harvest", rc);
			return rc;
		}
		for (i = 0; i < n; i++)
			*pages += buf[i].pages;
	} while (rc & MT_MORE);
	return 0;
}

int main(int argc, char **argv)
{
	static struct mt_range buf[HARVEST_CHUNK];
	long interval_ms = 100, duration_ms = 0, pid = 0;
	uint64_t harvests = 0, pages = 0, max_pages = 0, p;
	int64_t start, deadline, next, h_sum = 0, h_max = 0, t0, d;
	struct mt_tracker *t = NULL;
	uint32_t flags = 0;
	struct mt_info info;
	sigset_t stop;
	int rc, ai;

	for (ai = 1; ai < argc; ai++) {
		if (!strcmp(argv[ai], "--interval-ms") && ai + 1 < argc)
			interval_ms = parse_num(argv[++ai], 1, MAX_INTERVAL_MS, "--interval-ms");
		else if (!strcmp(argv[ai], "--duration-ms") && ai + 1 < argc)
			duration_ms = parse_num(argv[++ai], 0, LONG_MAX / 1000000, "--duration-ms");
		else if (!strcmp(argv[ai], "--allow-seccomp"))
			flags |= MT_ATTACH_ALLOW_SECCOMP;
		else if (argv[ai][0] != '-' && !pid)
			pid = parse_num(argv[ai], 1, INT32_MAX, "PID");
		else
			usage_exit(NULL);
	}
	if (!pid)
		usage_exit("PID is required");

	/* SIGINT/SIGTERM end the run between collections: blocked, and waited for instead of sleeping. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	mt_set_log(log_stderr, MT_LOG_WARN);

	rc = mt_attach((pid_t)pid, flags, &t);
	if (rc < 0) {
		fail("attach", rc);
		return 1;
	}
	mt_get_info(t, &info);
	printf("ATTACHED pid=%ld vmas=%u tracked_kib=%" PRIu64 " failed_vmas=%u attach_us=%" PRId64 " stop_us=%" PRId64
	       "\n",
	       pid, info.tracked_vmas, info.tracked_bytes >> 10, info.failed_vmas, info.attach_ns / 1000,
	       info.stop_ns / 1000);
	fflush(stdout);

	start = now_ns();
	deadline = duration_ms ? start + duration_ms * 1000000 : INT64_MAX;
	next = start;
	for (;;) {
		struct timespec wait;
		int64_t left;

		next += interval_ms * 1000000;
		if (next > deadline)
			next = deadline;
		left = next - now_ns();
		if (left > 0) {
			wait.tv_sec = left / 1000000000;
			wait.tv_nsec = left % 1000000000;
			if (sigtimedwait(&stop, NULL, &wait) >= 0)
				break; /* asked to stop */
			if (errno != EAGAIN && errno != EINTR) {
				rc = -errno;
				fprintf(stderr, "track-pid: sigtimedwait: %s\n", strerror(errno));
				break;
			}
		}
		t0 = now_ns();
		rc = collect(t, buf, &p);
		if (rc < 0)
			break;
		d = now_ns() - t0;
		harvests++;
		pages += p;
		max_pages = p > max_pages ? p : max_pages;
		h_sum += d;
		h_max = d > h_max ? d : h_max;
		if (next >= deadline)
			break;
	}
	{
		int drc = mt_detach(t);

		if (drc < 0) {
			fail("detach", drc);
			rc = rc < 0 ? rc : drc;
		}
	}
	printf("DETACHED harvests=%" PRIu64 " pages=%" PRIu64 " max_pages=%" PRIu64 " harvest_us_avg=%" PRId64
	       " harvest_us_max=%" PRId64 " elapsed_ms=%" PRId64 "\n",
	       harvests, pages, max_pages, harvests ? h_sum / (int64_t)harvests / 1000 : 0, h_max / 1000,
	       (now_ns() - start) / 1000000);
	fflush(stdout);
	return rc < 0 ? 1 : 0;
}

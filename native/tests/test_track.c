/*
 * test_track - tests of libmigrate_track against a real trackee process.
 *
 * Usage: test_track [--bench] [TEST...]
 * Needs root (ptrace of a child is allowed to its parent, but the unprivileged
 * and the refusal tests need to change users); without it every test is
 * skipped with the reason. Exit status 0 when everything passed or was skipped.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "harness.h"
#include "track.h"

#define PAGE ((uint64_t)4096)
#define HARVEST_CHUNK 4096
#define CYCLES 50
#define NOBODY 65534

struct ranges {
	struct mt_range *v;
	size_t n;
	size_t cap;
};

static void log_to_stderr(int level, const char *msg)
{
	(void)level;
	fprintf(stderr, "    %s", msg);
}

/* Harvest until the tracker says it is done, in chunks of cap ranges. Returns the flags or -errno. */
static int harvest_all(struct mt_tracker *t, struct ranges *r, size_t cap)
{
	struct mt_range *tmp = calloc(cap, sizeof(*tmp));
	int rc, flags = 0;
	size_t n;

	r->n = 0;
	if (!tmp)
		return -ENOMEM;
	do {
		rc = mt_harvest(t, tmp, cap, &n);
		if (rc < 0)
			break;
		flags |= rc;
		if (r->n + n > r->cap) {
			r->cap = (r->n + n) * 2;
			r->v = realloc(r->v, r->cap * sizeof(*r->v));
		}
		if (n)
			memcpy(r->v + r->n, tmp, n * sizeof(*tmp));
		r->n += n;
	} while (rc & MT_MORE);
	free(tmp);
	return rc < 0 ? rc : flags;
}

static int refresh_all(struct mt_tracker *t, struct ranges *r)
{
	struct mt_range tmp[8];
	int rc, flags = 0;
	size_t n;

	r->n = 0;
	do {
		rc = mt_refresh(t, tmp, 8, &n);
		if (rc < 0)
			return rc;
		flags |= rc;
		if (r->n + n > r->cap) {
			r->cap = (r->n + n) * 2 + 8;
			r->v = realloc(r->v, r->cap * sizeof(*r->v));
		}
		if (n)
			memcpy(r->v + r->n, tmp, n * sizeof(*tmp));
		r->n += n;
	} while (rc & MT_MORE);
	return flags;
}

/* Pages of [base, base + npages) that the ranges cover, as a bitmap; *outside counts pages elsewhere. */
static bool *coverage(const struct ranges *r, uint64_t base, uint64_t npages, uint64_t *outside)
{
	bool *seen = calloc(npages, sizeof(bool));
	size_t i;

	*outside = 0;
	for (i = 0; i < r->n; i++) {
		uint64_t p;

		for (p = 0; p < r->v[i].pages; p++) {
			uint64_t a = r->v[i].start + p * PAGE;

			if (a >= base && a < base + npages * PAGE)
				seen[(a - base) / PAGE] = true;
			else
				(*outside)++;
		}
	}
	return seen;
}

/*
 * The ranges must cover exactly the expected pages of the region: none missing,
 * no other page of the region. Pages outside it (stack, libc) are counted.
 */
static int expect_pages(const struct ranges *r, uint64_t base, uint64_t npages, const uint64_t *want, size_t nwant,
			const char *what)
{
	uint64_t outside, missing = 0, extra = 0, p;
	bool *seen = coverage(r, base, npages, &outside);
	bool *wanted = calloc(npages, sizeof(bool));
	size_t i;

	for (i = 0; i < nwant; i++)
		wanted[want[i]] = true;
	for (p = 0; p < npages; p++) {
		if (wanted[p] && !seen[p]) {
			if (missing < 5)
				fprintf(stderr, "    %s: page %" PRIu64 " missing\n", what, p);
			missing++;
		}
		if (!wanted[p] && seen[p]) {
			if (extra < 5)
				fprintf(stderr, "    %s: page %" PRIu64 " reported but not written\n", what, p);
			extra++;
		}
	}
	free(seen);
	free(wanted);
	fprintf(stderr, "    %s: %zu written, %" PRIu64 " missing, %" PRIu64 " extra, %" PRIu64 " pages outside\n",
		what, nwant, missing, extra, outside);
	CHECK(missing == 0 && extra == 0, "%s: page set differs", what);
	return 0;
}

static bool range_covers(const struct ranges *r, uint64_t start, uint64_t len)
{
	uint64_t outside, p;
	bool *seen = coverage(r, start, len / PAGE, &outside), all = true;

	for (p = 0; p < len / PAGE; p++)
		all = all && seen[p];
	free(seen);
	return all;
}

static int test_probe(void)
{
	struct mt_caps caps;

	CHECK_MT(mt_probe(&caps));
	fprintf(stderr,
		"    uffd features 0x%" PRIx64 " (error %d), flags 0x%x: wp_async=%d wp_unpopulated=%d "
		"pagemap_scan=%d soft_dirty=%d user_mode_only=%d\n",
		caps.uffd_features, caps.uffd_error, caps.flags, !!(caps.flags & MT_CAP_UFFD_WP_ASYNC),
		!!(caps.flags & MT_CAP_UFFD_WP_UNPOPULATED), !!(caps.flags & MT_CAP_PAGEMAP_SCAN),
		!!(caps.flags & MT_CAP_SOFT_DIRTY), !!(caps.flags & MT_CAP_UFFD_USER_MODE_ONLY));
	CHECK(caps.flags & MT_CAP_UFFD_WP_ASYNC, "no UFFD_FEATURE_WP_ASYNC");
	CHECK(caps.flags & MT_CAP_UFFD_WP_UNPOPULATED, "no UFFD_FEATURE_WP_UNPOPULATED");
	CHECK(caps.flags & MT_CAP_PAGEMAP_SCAN, "no PAGEMAP_SCAN (error %d)", caps.pagemap_scan_error);
	CHECK(caps.flags & MT_CAP_INJECTION, "no injection on this architecture");
	return 0;
}

static int test_exact_pages(void)
{
	static const uint64_t want[] = { 3, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 5000 };
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	uint64_t *many = NULL;
	struct mt_info info;
	struct child c;
	int rc = -1, i;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	if (mt_attach(c.pid, 0, &t) < 0) {
		fprintf(stderr, "    mt_attach: step %s\n", mt_last_step());
		goto out;
	}
	mt_get_info(t, &info);
	fprintf(stderr, "    attach %.3f ms, task stopped %.3f ms, %u VMAs / %" PRIu64 " MiB tracked, %u refused\n",
		info.attach_ns / 1e6, info.stop_ns / 1e6, info.tracked_vmas, info.tracked_bytes >> 20,
		info.failed_vmas);
	if (has_uffd_fd(c.pid) || count_uw_vmas(c.pid) <= 0) {
		fprintf(stderr, "    FAILED: while tracking: uffd in task %d, uw VMAs %d\n", has_uffd_fd(c.pid),
			count_uw_vmas(c.pid));
		goto out;
	}

	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, NULL, 0, "first harvest"))
		goto out;
	if (child_cmd(&c, NULL, 0, "W 3 100-110 5000") || harvest_all(t, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, want, sizeof(want) / sizeof(want[0]), "after W 3 100-110 5000"))
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, NULL, 0, "harvest again"))
		goto out;

	/* 1500 separate regions harvested 7 at a time: the MT_MORE cursor and the 512-region chunks. */
	many = calloc(1500, sizeof(*many));
	for (i = 0; i < 1500; i++)
		many[i] = 2 * (uint64_t)i;
	if (child_cmd(&c, NULL, 0, "WS 0 1500 2") || harvest_all(t, &r, 7) < 0 ||
	    expect_pages(&r, c.buf, c.pages, many, 1500, "1500 regions, 7 per call"))
		goto out;
	if (child_cmd(&c, NULL, 0, "WS 1 1500 3") || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	for (i = 0; i < 1500; i++)
		many[i] = 1 + 3 * (uint64_t)i;
	if (expect_pages(&r, c.buf, c.pages, many, 1500, "1500 regions, one call"))
		goto out;

	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(many);
	free(r.v);
	child_stop(&c);
	return rc;
}

/* The leader is blocked in read() at every attach; the kernel writes into a page through read(). */
static int test_read_restart(void)
{
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	char data[4096], resp[256];
	unsigned long sum = 0;
	uint64_t want = 42;
	struct child c;
	int rc = -1, i;

	for (i = 0; i < (int)sizeof(data); i++) {
		data[i] = (char)(i * 7 + 1);
		sum += (unsigned char)data[i];
	}
	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	for (i = 0; i < CYCLES; i++) {
		if (mt_attach(c.pid, 0, &t) < 0) {
			fprintf(stderr, "    cycle %d: mt_attach failed at %s\n", i, mt_last_step());
			goto out;
		}
		if (child_cmd(&c, resp, sizeof(resp), "STATUS")) {
			fprintf(stderr, "    cycle %d: the read() after attach did not get the command\n", i);
			goto out;
		}
		if (mt_detach(t) < 0)
			goto out;
		t = NULL;
	}
	if (mt_attach(c.pid, 0, &t) < 0)
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, resp, sizeof(resp), "RD 42") || child_send(&c, data, sizeof(data)) ||
	    child_line(&c, resp, sizeof(resp)))
		goto out;
	if (strtoul(resp + 3, NULL, 10) != sum) {
		fprintf(stderr, "    FAILED: read() delivered sum %s, sent %lu\n", resp, sum);
		goto out;
	}
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, &want, 1, "read() into page 42"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

/* Attach/detach cycles while the task computes or sleeps: nothing it can observe changes. */
static int cycles_unobserved(const char *mode, const char *counter)
{
	struct mt_tracker *t;
	char before[256], after[256];
	struct child c;
	int rc = -1, i;

	CHECK(child_start(&c, (uid_t)-1, "--mode", mode, NULL) == 0, "trackee did not start");
	usleep(20000);
	if (child_cmd(&c, before, sizeof(before), "STATUS"))
		goto out;
	for (i = 0; i < CYCLES; i++) {
		int a = mt_attach(c.pid, 0, &t);

		if (a < 0) {
			fprintf(stderr, "    cycle %d: mt_attach: %s at %s\n", i, strerror(-a), mt_last_step());
			goto out;
		}
		mt_detach(t);
		usleep(2000);
	}
	usleep(20000);
	if (child_cmd(&c, after, sizeof(after), "STATUS"))
		goto out;
	fprintf(stderr, "    before: %s\n    after:  %s\n", before, after);
	if (status_field(after, "errors") != 0) {
		fprintf(stderr, "    FAILED: the %s loop saw errors\n", mode);
		goto out;
	}
	if (status_field(after, counter) <= status_field(before, counter)) {
		fprintf(stderr, "    FAILED: the %s loop made no progress\n", mode);
		goto out;
	}
	rc = expect_no_trace(c.pid);
out:
	child_stop(&c);
	return rc;
}

static int test_sleep_restart(void)
{
	return cycles_unobserved("sleep", "sleeps");
}

static int test_compute_unaffected(void)
{
	return cycles_unobserved("compute", "rounds");
}

static int test_threads(void)
{
	static const uint64_t want[] = { 7, 2000, 2001, 2002, 2003 };
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	struct child c;
	int rc = -1;

	CHECK(child_start(&c, (uid_t)-1, "--mode", "compute", NULL) == 0, "trackee did not start");
	if (mt_attach(c.pid, 0, &t) < 0 || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, NULL, 0, "T 7 2000-2003") || harvest_all(t, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, want, 5, "written by the writer thread"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

static int test_new_mmap(void)
{
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	uint64_t a1 = 0, a2 = 0, want;
	char resp[256];
	struct child c;
	int rc = -1;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	if (mt_attach(c.pid, 0, &t) < 0)
		goto out;
	if (child_cmd(&c, resp, sizeof(resp), "MAPW 256") || sscanf(resp, "OK %" SCNx64, &a1) != 1)
		goto out;
	if (child_cmd(&c, resp, sizeof(resp), "MAP 128") || sscanf(resp, "OK %" SCNx64, &a2) != 1)
		goto out;
	if (refresh_all(t, &r) < 0)
		goto out;
	if (!range_covers(&r, a1, 256 * PAGE) || !range_covers(&r, a2, 128 * PAGE)) {
		fprintf(stderr, "    FAILED: refresh did not report the new mappings whole (%zu ranges)\n", r.n);
		goto out;
	}
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, NULL, 0, "WA %" PRIx64 " 1", a1 + 10 * PAGE) ||
	    child_cmd(&c, NULL, 0, "WA %" PRIx64 " 1", a2 + 77 * PAGE))
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	want = 10;
	if (expect_pages(&r, a1, 256, &want, 1, "new mapping, written"))
		goto out;
	want = 77;
	if (expect_pages(&r, a2, 128, &want, 1, "new mapping, never touched before"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

static int test_brk(void)
{
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	uint64_t old = 0, want = 5;
	char resp[256];
	struct child c;
	int rc = -1;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	/* a heap VMA exists before attach */
	if (child_cmd(&c, resp, sizeof(resp), "BRK 16"))
		goto out;
	if (mt_attach(c.pid, 0, &t) < 0 || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, resp, sizeof(resp), "BRK 64") || sscanf(resp, "OK %" SCNx64, &old) != 1)
		goto out;
	if (refresh_all(t, &r) < 0)
		goto out;
	if (!range_covers(&r, old, 64 * PAGE)) {
		fprintf(stderr, "    FAILED: refresh did not report the grown heap\n");
		goto out;
	}
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, NULL, 0, "WA %" PRIx64 " 1", old + 5 * PAGE) || harvest_all(t, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, old, 64, &want, 1, "grown heap"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

static int test_munmap_and_replace(void)
{
	static const uint64_t want[] = { 3, 2500 };
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	uint64_t five = 5;
	int rc = -1, flags;
	struct child c;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	if (mt_attach(c.pid, 0, &t) < 0 || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	/* a hole in the middle of the buffer: pages 1000-1999 */
	if (child_cmd(&c, NULL, 0, "UNMAP %" PRIx64 " 1000", c.buf + 1000 * PAGE))
		goto out;
	if (refresh_all(t, &r) < 0 || r.n) {
		fprintf(stderr, "    FAILED: refresh after munmap reported %zu ranges\n", r.n);
		goto out;
	}
	if (child_cmd(&c, NULL, 0, "W 3 2500") || harvest_all(t, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, want, 2, "after munmap"))
		goto out;

	/* a new mapping in the hole, not yet refreshed: harvest still works; refresh reports it */
	if (child_cmd(&c, NULL, 0, "MAPF %" PRIx64 " 1000", c.buf + 1000 * PAGE))
		goto out;
	flags = harvest_all(t, &r, HARVEST_CHUNK);
	if (flags < 0 || (flags & MT_LAYOUT_CHANGED))
		goto out;
	if (refresh_all(t, &r) < 0 || !range_covers(&r, c.buf + 1000 * PAGE, 1000 * PAGE)) {
		fprintf(stderr, "    FAILED: refresh did not report the mapping in the hole\n");
		goto out;
	}

	/* a tracked range replaced by MAP_FIXED without refresh: reported whole, flagged */
	if (child_cmd(&c, NULL, 0, "MAPF %" PRIx64 " 50", c.buf + 100 * PAGE))
		goto out;
	flags = harvest_all(t, &r, HARVEST_CHUNK);
	if (flags < 0 || !(flags & MT_LAYOUT_CHANGED) || !range_covers(&r, c.buf + 100 * PAGE, 50 * PAGE)) {
		fprintf(stderr, "    FAILED: replaced VMA: flags %d, covered %d\n", flags,
			range_covers(&r, c.buf + 100 * PAGE, 50 * PAGE));
		goto out;
	}
	if (refresh_all(t, &r) < 0 || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, NULL, 0, "W 5") || harvest_all(t, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, &five, 1, "after refresh of the replaced VMA"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

/* MADV_DONTNEED changes a page's content (to zeros) without a write: it must be reported. */
static int test_dontneed(void)
{
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	uint64_t want[1 + 512], first = 0;
	char resp[256];
	struct child c;
	int rc = -1, i;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	if (child_cmd(&c, resp, sizeof(resp), "ALIGN2M") || sscanf(resp, "OK %" SCNu64, &first) != 1)
		goto out;
	first += 1024; /* away from the pages other commands write */
	want[0] = 3;
	for (i = 0; i < 512; i++)
		want[1 + i] = first + (uint64_t)i;
	if (mt_attach(c.pid, 0, &t) < 0 || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	/* one clean (write-protected) page, and a whole 2 MiB-aligned page table's worth */
	if (child_cmd(&c, NULL, 0, "DN 3 1") || child_cmd(&c, NULL, 0, "DN %" PRIu64 " 512", first))
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, want, 513, "MADV_DONTNEED"))
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, NULL, 0, "harvest again"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

/* A second tracker must not take the first one's VMAs (nor drop them when it detaches). */
static int test_two_trackers(void)
{
	static const uint64_t three = 3, four = 4;
	struct ranges r = { 0 };
	struct mt_tracker *t1 = NULL, *t2 = NULL;
	struct mt_info info;
	struct child c;
	int rc = -1;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	if (mt_attach(c.pid, 0, &t1) < 0 || harvest_all(t1, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (mt_attach(c.pid, 0, &t2) < 0) {
		fprintf(stderr, "    second mt_attach: %s\n", mt_last_step());
		goto out;
	}
	mt_get_info(t2, &info);
	fprintf(stderr, "    second tracker: %u VMAs tracked, %u refused\n", info.tracked_vmas, info.failed_vmas);
	if (info.tracked_vmas != 0 || info.failed_vmas == 0) {
		fprintf(stderr, "    FAILED: the second tracker took VMAs of the first\n");
		goto out;
	}
	if (child_cmd(&c, NULL, 0, "W 3") || harvest_all(t2, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, NULL, 0, "second tracker") || harvest_all(t1, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, &three, 1, "first tracker"))
		goto out;
	CHECK_MT(mt_detach(t2));
	t2 = NULL;
	if (child_cmd(&c, NULL, 0, "W 4") || harvest_all(t1, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, &four, 1, "first tracker after the second detached"))
		goto out;
	CHECK_MT(mt_detach(t1));
	t1 = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t2)
		mt_detach(t2);
	if (t1)
		mt_detach(t1);
	free(r.v);
	child_stop(&c);
	return rc;
}

/* Writes while the pages are shared copy-on-write with a forked child (clean and already dirty pages). */
static int test_fork_cow(void)
{
	static const uint64_t want[] = { 3, 4, 5 };
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	struct child c;
	int rc = -1;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	if (mt_attach(c.pid, 0, &t) < 0 || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, NULL, 0, "W 5") || child_cmd(&c, NULL, 0, "FORK 2000") || child_cmd(&c, NULL, 0, "W 3 4 5"))
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, want, 3, "writes after fork"))
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, NULL, 0, "harvest again"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

/* The main thread has exited (pthread_exit): the injection goes to a live thread. */
static int test_leader_exited(void)
{
	static const uint64_t want[] = { 3, 100 };
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	struct mt_info info;
	char resp[64];
	struct child c;
	pid_t tid = 0;
	int rc = -1;

	CHECK(child_start(&c, (uid_t)-1, "--mode", "leader-exit", NULL) == 0, "trackee did not start");
	usleep(50000);
	if (child_cmd(&c, resp, sizeof(resp), "TID") || sscanf(resp, "OK %d", &tid) != 1)
		goto out;
	if (mt_attach(c.pid, 0, &t) < 0) {
		fprintf(stderr, "    mt_attach: %s\n", mt_last_step());
		goto out;
	}
	mt_get_info(t, &info);
	fprintf(stderr, "    injected into thread %d of %d, %u VMAs tracked\n", info.tid, c.pid, info.tracked_vmas);
	if (info.tid == c.pid || has_uffd_fd_of(c.pid, tid) || count_uw_vmas_of(c.pid, tid) <= 0)
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || child_cmd(&c, NULL, 0, "W 3 100") ||
	    harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, want, 2, "zombie leader"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	CHECK(!has_uffd_fd_of(c.pid, tid) && count_uw_vmas_of(c.pid, tid) == 0, "trace left after detach");
	rc = 0;
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

/* The process exits while tracked: calls fail with -ESRCH (or find nothing), detach still frees. */
static int test_target_exits(void)
{
	struct mt_range tmp[16];
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	int h, f, status;
	struct child c;
	size_t n;

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	CHECK_MT(mt_attach(c.pid, 0, &t));
	kill(c.pid, SIGKILL);
	waitpid(c.pid, &status, 0);
	h = harvest_all(t, &r, HARVEST_CHUNK);
	f = mt_refresh(t, tmp, 16, &n);
	fprintf(stderr, "    after exit: harvest %d (%zu ranges), refresh %d (%s)\n", h, r.n, f, mt_last_step());
	free(r.v);
	close(c.to);
	close(c.from);
	CHECK(h == -ESRCH || (h >= 0 && r.n == 0), "harvest of an exited process returned %d", h);
	CHECK(f == -ESRCH, "refresh of an exited process returned %d", f);
	CHECK_MT(mt_detach(t));
	return 0;
}

struct sender {
	pid_t pid;
	int count;
	volatile bool stop;
};

static void *send_signals(void *arg)
{
	struct sender *s = arg;
	int i;

	for (i = 1; i <= s->count; i++) {
		union sigval v = { .sival_int = i };

		sigqueue(s->pid, SIGRTMIN, v);
		usleep(200);
	}
	return NULL;
}

/* RT signals queued during injections are delivered exactly once, with their value. */
static int test_signals_redelivered(void)
{
	struct sender s = { .count = 2000 };
	struct mt_tracker *t;
	struct mt_info info;
	unsigned long redelivered = 0, expected_sum;
	char resp[256] = "";
	pthread_t th;
	struct child c;
	int rc = -1, i;
	int64_t deadline;

	CHECK(child_start(&c, (uid_t)-1, "--mode", "sleep", NULL) == 0, "trackee did not start");
	s.pid = c.pid;
	expected_sum = (unsigned long)s.count * (unsigned long)(s.count + 1) / 2;
	pthread_create(&th, NULL, send_signals, &s);
	for (i = 0; i < 200; i++) {
		if (mt_attach(c.pid, 0, &t) < 0) {
			fprintf(stderr, "    cycle %d: mt_attach failed at %s\n", i, mt_last_step());
			break;
		}
		mt_get_info(t, &info);
		redelivered += info.redelivered_signals;
		mt_detach(t);
	}
	pthread_join(th, NULL);
	deadline = now_ns() + 2000000000LL;
	while (now_ns() < deadline) {
		if (child_cmd(&c, resp, sizeof(resp), "STATUS"))
			goto out;
		if (status_field(resp, "sigs") >= (unsigned long)s.count)
			break;
		usleep(10000);
	}
	fprintf(stderr, "    %d attaches, %lu signals sent again after injection; %s\n", i, redelivered, resp);
	if (i < 200)
		goto out;
	if (status_field(resp, "sigs") != (unsigned long)s.count || status_field(resp, "sigsum") != expected_sum) {
		fprintf(stderr, "    FAILED: expected sigs=%d sigsum=%lu\n", s.count, expected_sum);
		goto out;
	}
	if (status_field(resp, "errors") != 0) {
		fprintf(stderr, "    FAILED: the sleep loop saw errors\n");
		goto out;
	}
	rc = expect_no_trace(c.pid);
out:
	child_stop(&c);
	return rc;
}

static int test_unprivileged(void)
{
	static const uint64_t want[] = { 9, 42 };
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	struct mt_info info;
	char data[4096], resp[256];
	struct child c;
	int rc = -1;

	memset(data, 'x', sizeof(data));
	CHECK(child_start(&c, NOBODY, NULL) == 0, "trackee did not start as uid %d", NOBODY);
	if (mt_attach(c.pid, 0, &t) < 0) {
		fprintf(stderr, "    mt_attach: %s\n", mt_last_step());
		goto out;
	}
	mt_get_info(t, &info);
	fprintf(stderr, "    user-mode-only userfaultfd: %s\n", info.flags & MT_INFO_USER_MODE_ONLY ? "yes" : "no");
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, NULL, 0, "W 9") || child_cmd(&c, resp, sizeof(resp), "RD 42") ||
	    child_send(&c, data, sizeof(data)) || child_line(&c, resp, sizeof(resp)))
		goto out;
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 ||
	    expect_pages(&r, c.buf, c.pages, want, 2, "unprivileged task, user and kernel writes"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

static int test_refusals(void)
{
	struct mt_tracker *t = NULL;
	struct child c;
	pid_t zombie;
	int r, status;

	CHECK(mt_attach(getpid(), 0, &t) == -EINVAL, "attaching to ourselves was not refused");

	zombie = fork();
	if (!zombie)
		_exit(0);
	usleep(50000);
	r = mt_attach(zombie, 0, &t);
	waitpid(zombie, &status, 0);
	CHECK(r == -ESRCH, "zombie: got %d (%s)", r, mt_last_step());
	fprintf(stderr, "    zombie: %s (%s)\n", strerror(-r), mt_last_step());
	r = mt_attach(zombie, 0, &t);
	CHECK(r == -ESRCH, "reaped pid: got %d (%s)", r, mt_last_step());

	CHECK(child_start(&c, (uid_t)-1, NULL) == 0, "trackee did not start");
	kill(c.pid, SIGSTOP);
	waitpid(c.pid, &status, WUNTRACED);
	r = mt_attach(c.pid, 0, &t);
	fprintf(stderr, "    stopped: %s (%s)\n", strerror(-r), mt_last_step());
	if (r != -EBUSY) {
		if (r >= 0)
			mt_detach(t);
		child_stop(&c);
		CHECK(r == -EBUSY, "stopped task: got %d", r);
	}
	kill(c.pid, SIGCONT);
	r = child_cmd(&c, NULL, 0, "STATUS");
	if (!r) {
		r = mt_attach(c.pid, 0, &t);
		if (r >= 0)
			mt_detach(t);
	}
	child_stop(&c);
	CHECK(r >= 0, "attach after SIGCONT failed: %d (%s)", r, mt_last_step());
	return 0;
}

static long vm_pte_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmPTE:", 6))
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

/*
 * What registering a large never-touched mapping costs: with WP_UNPOPULATED the
 * kernel fills page tables with markers, so they are allocated for all of it.
 */
static int bench_sparse(struct child *c, struct mt_tracker *t)
{
	struct ranges r = { 0 };
	long before, after;
	int64_t t0, d;
	char resp[256];
	int rc;

	if (child_cmd(c, resp, sizeof(resp), "MAP 4194304"))
		return -1;
	before = vm_pte_kib(c->pid);
	t0 = now_ns();
	rc = refresh_all(t, &r);
	d = now_ns() - t0;
	after = vm_pte_kib(c->pid);
	free(r.v);
	CHECK(rc >= 0, "refresh failed: %d", rc);
	fprintf(stderr, "    registering a 16 GiB untouched mapping: %.3f ms, page tables %ld KiB -> %ld KiB\n",
		d / 1e6, before, after);
	t0 = now_ns();
	rc = harvest_all(t, &r, HARVEST_CHUNK);
	fprintf(stderr, "    harvest with it (1 GiB + 16 GiB untouched, nothing written): %.3f ms\n",
		(now_ns() - t0) / 1e6);
	CHECK(rc >= 0, "harvest failed: %d", rc);
	return 0;
}

/* Attach, stop and harvest times on 1 GiB with 1% of the pages written between harvests. */
static int bench(void)
{
	const int rounds = 20;
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	struct mt_info info;
	struct child c;
	int64_t h_sum = 0, h_min = INT64_MAX, h_max = 0, e_sum = 0, t0;
	uint64_t written = 0;
	int rc = -1, i;

	CHECK(child_start(&c, (uid_t)-1, "--mib", "1024", NULL) == 0, "trackee did not start");
	for (i = 0; i < 5; i++) {
		CHECK_MT(mt_attach(c.pid, 0, &t));
		mt_get_info(t, &info);
		fprintf(stderr, "    attach #%d: %.3f ms total, task stopped %.3f ms, registration %.3f ms\n", i,
			info.attach_ns / 1e6, info.stop_ns / 1e6, info.register_ns / 1e6);
		if (i < 4)
			mt_detach(t);
	}
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	for (i = 0; i < rounds; i++) {
		t0 = now_ns();
		if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
			goto out;
		e_sum += now_ns() - t0;
	}
	for (i = 0; i < rounds; i++) {
		int64_t d;
		size_t k;

		if (child_cmd(&c, NULL, 0, "WS %d 2621 100", i % 100))
			goto out;
		t0 = now_ns();
		if (harvest_all(t, &r, HARVEST_CHUNK) < 0)
			goto out;
		d = now_ns() - t0;
		h_sum += d;
		h_min = d < h_min ? d : h_min;
		h_max = d > h_max ? d : h_max;
		for (k = 0, written = 0; k < r.n; k++)
			written += r.v[k].pages;
	}
	if (bench_sparse(&c, t))
		goto out;
	fprintf(stderr, "    harvest of 1 GiB, nothing written: %.3f ms average\n", e_sum / 1e6 / rounds);
	fprintf(stderr,
		"    harvest of 1 GiB, 1%% written (2621 pages, %" PRIu64 " reported): %.3f ms average "
		"(min %.3f, max %.3f)\n",
		written, h_sum / 1e6 / rounds, h_min / 1e6, h_max / 1e6);
	rc = 0;
out:
	if (t)
		mt_detach(t);
	free(r.v);
	child_stop(&c);
	return rc;
}

static long anon_huge_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "AnonHugePages:", 14))
			kib = strtol(line + 14, NULL, 10);
	fclose(f);
	return kib;
}

/*
 * With transparent huge pages: the first write to a protected huge page splits it
 * (WP_ASYNC resolves at 4 KiB), so only that page is reported. Extras would be counted.
 */
static int test_thp(void)
{
	static const uint64_t want[] = { 3, 5000 };
	struct ranges r = { 0 };
	struct mt_tracker *t = NULL;
	uint64_t outside, p, extra = 0;
	bool *seen = NULL;
	struct child c;
	int rc = -1;

	CHECK(child_start(&c, (uid_t)-1, "--thp", NULL) == 0, "trackee did not start");
	fprintf(stderr, "    AnonHugePages before attach: %ld KiB\n", anon_huge_kib(c.pid));
	if (mt_attach(c.pid, 0, &t) < 0 || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	if (child_cmd(&c, NULL, 0, "W 3 5000") || harvest_all(t, &r, HARVEST_CHUNK) < 0)
		goto out;
	seen = coverage(&r, c.buf, c.pages, &outside);
	for (p = 0; p < c.pages; p++)
		extra += seen[p] && p != want[0] && p != want[1];
	fprintf(stderr,
		"    THP: 2 pages written, %" PRIu64 " other pages of the buffer reported; AnonHugePages now %ld KiB\n",
		extra, anon_huge_kib(c.pid));
	if (!seen[want[0]] || !seen[want[1]]) {
		fprintf(stderr, "    FAILED: a written page is missing\n");
		goto out;
	}
	if (harvest_all(t, &r, HARVEST_CHUNK) < 0 || expect_pages(&r, c.buf, c.pages, NULL, 0, "THP, harvest again"))
		goto out;
	CHECK_MT(mt_detach(t));
	t = NULL;
	rc = expect_no_trace(c.pid);
out:
	if (t)
		mt_detach(t);
	free(seen);
	free(r.v);
	child_stop(&c);
	return rc;
}

struct test {
	const char *name;
	int (*fn)(void);
};

static const struct test tests[] = {
	{ "probe", test_probe },
	{ "exact_pages", test_exact_pages },
	{ "read_restart", test_read_restart },
	{ "sleep_restart", test_sleep_restart },
	{ "compute_unaffected", test_compute_unaffected },
	{ "threads", test_threads },
	{ "new_mmap", test_new_mmap },
	{ "brk", test_brk },
	{ "munmap_and_replace", test_munmap_and_replace },
	{ "signals_redelivered", test_signals_redelivered },
	{ "unprivileged", test_unprivileged },
	{ "refusals", test_refusals },
	{ "thp", test_thp },
	{ "dontneed", test_dontneed },
	{ "two_trackers", test_two_trackers },
	{ "fork_cow", test_fork_cow },
	{ "leader_exited", test_leader_exited },
	{ "target_exits", test_target_exits },
};

int main(int argc, char **argv)
{
	size_t i, n = sizeof(tests) / sizeof(tests[0]);
	int failed = 0, run = 0, ai;
	bool only = false;

	if (getenv("MIGRATE_TRACK_DEBUG"))
		mt_set_log(log_to_stderr, MT_LOG_DEBUG);
	else
		mt_set_log(log_to_stderr, MT_LOG_WARN);
	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root: ptrace, user changes and userfaultfd of other users' tasks\n");
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "--bench"))
		return bench() ? 1 : 0;

	for (ai = 1; ai < argc; ai++)
		only = true;
	printf("1..%zu\n", only ? (size_t)(argc - 1) : n);
	for (i = 0; i < n; i++) {
		int64_t t0;
		int r;

		if (only) {
			bool selected = false;

			for (ai = 1; ai < argc; ai++)
				selected = selected || !strcmp(argv[ai], tests[i].name);
			if (!selected)
				continue;
		}
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

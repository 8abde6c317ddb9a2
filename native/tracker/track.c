/*
 * The tracker: userfaultfd write-protect registration of a foreign process's
 * private writable VMAs, PAGEMAP_SCAN harvests, refresh and detach.
 *
 * The descriptor comes from inject.c; it refers to the target's mm, so every
 * UFFDIO_* ioctl below acts on the target's address space although it runs in
 * this process. PAGEMAP_SCAN runs on /proc/PID/pagemap, which also names the
 * target's mm.
 *
 * Which VMAs are registered is read back from the kernel, not only from our
 * bookkeeping: a VMA is registered when PAGEMAP_SCAN reports PAGE_IS_WPALLOWED
 * for it (async write-protect is enabled on it), and it is ours when
 * registering it again with our context succeeds (another context gets EBUSY).
 * That is what makes refresh correct when a range was unmapped and mapped
 * again between two refreshes, and keeps a second tracker off our VMAs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "uapi_compat.h"

/*
 * Regions per PAGEMAP_SCAN call: the kernel's bounce buffer holds
 * PAGEMAP_WALK_SIZE >> PAGE_SHIFT = 512 regions. Past that walk_end goes stale
 * (measured on 6.18 with 1500 one-page regions: walk_end said page 2048, the
 * last region ended at page 2999, and a short answer did not say the range
 * end). With at most 512 per call it is right; the harvest also resumes from
 * the later of walk_end and the last region's end, and treats a short answer
 * as the end of the VMA.
 */
#define MT_VEC_LEN 512

/* The mask of PAGEMAP pagemap entry bit 55 (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_SOFT_DIRTY (1ULL << 55)

/* Requested on the tracker's userfaultfd: async WP resolves faults without us; unpopulated pages count too. */
#define MT_UFFD_FEATURES ((uint64_t)(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED))

struct vma {
	uint64_t start;
	uint64_t end;
	int32_t state;
	int32_t error;
	char perms[8];
};

struct mt_tracker {
	pid_t pid;
	pid_t tid; /* the thread whose /proc/PID/task/TID files are read: the leader unless it has exited */
	int uffd;
	int pagemap_fd;
	uint64_t page_size;

	struct vma *vmas;
	size_t nr_vmas;

	/* where an interrupted (MT_MORE) harvest goes on */
	bool harvesting;
	size_t cur_vma;
	uint64_t cur_addr;
	int harvest_flags;

	/* refresh output not handed out yet */
	struct mt_range *pending;
	size_t nr_pending;
	size_t pos_pending;
	size_t cap_pending;

	struct mt_info info;
	struct page_region vec[MT_VEC_LEN];
};

static bool is_special(const char *name)
{
	static const char *const special[] = { "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]" };
	size_t i;

	for (i = 0; i < sizeof(special) / sizeof(special[0]); i++)
		if (!strcmp(name, special[i]))
			return true;
	return false;
}

static enum mt_vma_state classify(const struct maps_line *l)
{
	if (is_special(l->name))
		return MT_VMA_SKIP_SPECIAL;
	if (l->perms[3] == 's')
		return MT_VMA_SKIP_SHARED;
	if (l->perms[1] != 'w')
		return MT_VMA_SKIP_READONLY;
	return MT_VMA_TRACKED;
}

static long pagemap_scan(int fd, struct pm_scan_arg *arg)
{
	long r;

	do
		r = ioctl(fd, PAGEMAP_SCAN, arg);
	while (r < 0 && errno == EINTR);
	return r;
}

/* Does the kernel have async write-protect enabled on the VMA at [start, end)? */
static int wp_allowed(struct mt_tracker *t, uint64_t start, uint64_t end, bool *allowed)
{
	struct page_region r;
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.start = start,
		.end = end,
		.vec = (uintptr_t)&r,
		.vec_len = 1,
		.max_pages = 1,
		.category_mask = PAGE_IS_WPALLOWED,
		.return_mask = PAGE_IS_WPALLOWED,
	};
	long n = pagemap_scan(t->pagemap_fd, &a);

	if (n < 0)
		return neg_errno();
	*allowed = n > 0;
	return 0;
}

static int uffd_register(struct mt_tracker *t, uint64_t start, uint64_t end)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	struct uffdio_range rng = reg.range;

	if (ioctl(t->uffd, UFFDIO_REGISTER, &reg))
		return neg_errno();
	if (!(reg.ioctls & (1ULL << _UFFDIO_WRITEPROTECT))) {
		ioctl(t->uffd, UFFDIO_UNREGISTER, &rng);
		return -EOPNOTSUPP;
	}
	return 0;
}

/*
 * Write-protect [start, end) of a registered VMA with PAGEMAP_SCAN's "exclusive
 * WP" path (PM_SCAN_WP_MATCHING without an output vector) rather than
 * UFFDIO_WRITEPROTECT: it protects exactly what the harvest would report, in
 * the same walk. With WP_UNPOPULATED both allocate page tables to hold markers
 * where there are none: 2 MiB per GiB of address space (measured on 6.18: a
 * 16 GiB untouched mapping costs 32 MiB of page tables and ~10 ms per harvest).
 * Kernels older than the fix that arms holes ("an unpopulated range with no
 * page table reads as written") leave holes alone here; a write there creates
 * a PTE without the uffd-wp bit, which the next harvest reports.
 */
static int protect_mapped(struct mt_tracker *t, uint64_t start, uint64_t end)
{
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.start = start,
		.end = end,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};

	if (pagemap_scan(t->pagemap_fd, &a) < 0)
		return neg_errno();
	return 0;
}

static int queue_dirty(struct mt_tracker *t, uint64_t start, uint64_t end)
{
	struct mt_range *n;

	if (t->nr_pending &&
	    t->pending[t->nr_pending - 1].start + t->pending[t->nr_pending - 1].pages * t->page_size == start) {
		t->pending[t->nr_pending - 1].pages += (end - start) / t->page_size;
		return 0;
	}
	if (t->nr_pending == t->cap_pending) {
		size_t cap = t->cap_pending ? t->cap_pending * 2 : 64;

		n = realloc(t->pending, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		t->pending = n;
		t->cap_pending = cap;
	}
	t->pending[t->nr_pending].start = start;
	t->pending[t->nr_pending].pages = (end - start) / t->page_size;
	t->nr_pending++;
	return 0;
}

/*
 * A VMA that is already write-protect registered (it grew, or is the old one):
 * the parts no old TRACKED record covers are new to us. Protect them and
 * report them dirty.
 */
static int adopt_part(struct mt_tracker *t, uint64_t start, uint64_t end)
{
	int err = protect_mapped(t, start, end);

	return err ? err : queue_dirty(t, start, end);
}

static int adopt_registered(struct mt_tracker *t, const struct maps_line *l, const struct vma *old, size_t nr_old)
{
	uint64_t pos = l->start;
	size_t i;
	int err;

	/* old[] is sorted and its ranges do not overlap. */
	for (i = 0; i < nr_old && pos < l->end; i++) {
		if (old[i].state != MT_VMA_TRACKED || old[i].end <= pos)
			continue;
		if (old[i].start >= l->end)
			break;
		if (old[i].start > pos) {
			err = adopt_part(t, pos, old[i].start);
			if (err)
				return err;
		}
		pos = old[i].end;
	}
	if (pos < l->end)
		return adopt_part(t, pos, l->end);
	return 0;
}

static const struct vma *find_exact(const struct vma *v, size_t n, const struct maps_line *l)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i].start == l->start && v[i].end == l->end && !strcmp(v[i].perms, l->perms))
			return &v[i];
	return NULL;
}

/*
 * Bring the VMA table in line with /proc/PID/maps. New dirty ranges are
 * queued in t->pending (dropped by the caller at attach time).
 */
static int refresh_vmas(struct mt_tracker *t)
{
	struct maps_line *lines = NULL;
	struct vma *nv = NULL;
	size_t n = 0, i;
	uint64_t bytes = 0;
	uint32_t tracked = 0, failed = 0;
	int err;

	err = maps_read(t->pid, t->tid, &lines, &n);
	if (err)
		return err;
	nv = calloc(n ? n : 1, sizeof(*nv));
	if (!nv) {
		err = mt_fail("refresh", -ENOMEM);
		goto out;
	}
	for (i = 0; i < n; i++) {
		const struct maps_line *l = &lines[i];
		struct vma *v = &nv[i];
		const struct vma *o;
		bool allowed = false;

		v->start = l->start;
		v->end = l->end;
		memcpy(v->perms, l->perms, sizeof(v->perms));
		v->state = classify(l);
		if (v->state != MT_VMA_TRACKED)
			continue;

		o = find_exact(t->vmas, t->nr_vmas, l);
		if (o && o->state == MT_VMA_FAILED) {
			/* Same VMA the kernel refused before: do not ask again. */
			*v = *o;
			failed++;
			continue;
		}
		err = wp_allowed(t, l->start, l->end, &allowed);
		if (err) {
			mt_fail("PAGEMAP_SCAN", err);
			goto out;
		}
		if (allowed) {
			/*
			 * Write-protect registered, but by whom? Registering again is a no-op for
			 * our own context and EBUSY for another one (a second tracker, or the
			 * task's own userfaultfd), whose pages we must not take.
			 */
			err = uffd_register(t, l->start, l->end);
			if (err)
				goto refused;
			err = adopt_registered(t, l, t->vmas, t->nr_vmas);
			if (err) {
				mt_fail("PAGEMAP_SCAN (write-protect)", err);
				goto out;
			}
		} else {
			err = uffd_register(t, l->start, l->end);
			if (!err) {
				err = protect_mapped(t, l->start, l->end);
				if (err) {
					struct uffdio_range rng = { .start = l->start, .len = l->end - l->start };

					ioctl(t->uffd, UFFDIO_UNREGISTER, &rng);
				}
			}
			if (err)
				goto refused;
			err = queue_dirty(t, l->start, l->end);
			if (err) {
				mt_fail("refresh", err);
				goto out;
			}
		}
		tracked++;
		bytes += l->end - l->start;
		continue;
	refused:
		pr_warn("pid %d: VMA %" PRIx64 "-%" PRIx64 " %s %s not tracked: %s (errno %d)", t->pid, l->start,
			l->end, l->perms, l->name, strerror(-err), -err);
		v->state = MT_VMA_FAILED;
		v->error = err;
		err = 0;
		failed++;
	}

	free(t->vmas);
	t->vmas = nv;
	t->nr_vmas = n;
	nv = NULL;
	/* Indexes moved: an interrupted harvest starts over (already reported pages are protected again). */
	t->harvesting = false;
	t->info.tracked_vmas = tracked;
	t->info.failed_vmas = failed;
	t->info.tracked_bytes = bytes;
out:
	free(nv);
	free(lines);
	return err;
}

static int drain_pending(struct mt_tracker *t, struct mt_range *out, size_t cap, size_t *n)
{
	size_t k = t->nr_pending - t->pos_pending;

	if (k > cap)
		k = cap;
	if (k)
		memcpy(out, t->pending + t->pos_pending, k * sizeof(*out));
	t->pos_pending += k;
	*n = k;
	if (t->pos_pending < t->nr_pending)
		return MT_MORE;
	t->pos_pending = 0;
	t->nr_pending = 0;
	return 0;
}

int mt_refresh(struct mt_tracker *t, struct mt_range *out, size_t cap, size_t *n)
{
	int err;

	*n = 0;
	if (!t || (!out && cap))
		return mt_fail("mt_refresh: invalid argument", -EINVAL);
	if (t->nr_pending)
		return drain_pending(t, out, cap, n);
	err = refresh_vmas(t);
	if (err) {
		t->nr_pending = 0;
		t->pos_pending = 0;
		return err;
	}
	return drain_pending(t, out, cap, n);
}

/* Append [start, end) to out, merging with the previous range when they touch. */
static void emit(struct mt_tracker *t, struct mt_range *out, size_t *n, uint64_t start, uint64_t end)
{
	if (*n && out[*n - 1].start + out[*n - 1].pages * t->page_size == start) {
		out[*n - 1].pages += (end - start) / t->page_size;
		return;
	}
	out[*n].start = start;
	out[*n].pages = (end - start) / t->page_size;
	(*n)++;
}

int mt_harvest(struct mt_tracker *t, struct mt_range *out, size_t cap, size_t *n)
{
	size_t i;

	*n = 0;
	if (!t || !out || !cap)
		return mt_fail("mt_harvest: invalid argument", -EINVAL);
	if (!t->harvesting) {
		t->harvesting = true;
		t->cur_vma = 0;
		t->cur_addr = 0;
		t->harvest_flags = 0;
	}
	for (i = t->cur_vma; i < t->nr_vmas; i++) {
		struct vma *v = &t->vmas[i];
		uint64_t addr = t->cur_addr > v->start ? t->cur_addr : v->start;

		t->cur_addr = 0;
		if (v->state != MT_VMA_TRACKED)
			continue;
		while (addr < v->end) {
			struct pm_scan_arg a;
			size_t want = cap - *n, k;
			long r;

			if (!want) {
				t->cur_vma = i;
				t->cur_addr = addr;
				return t->harvest_flags | MT_MORE;
			}
			if (want > MT_VEC_LEN)
				want = MT_VEC_LEN;
			memset(&a, 0, sizeof(a));
			a.size = sizeof(a);
			a.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
			a.start = addr;
			a.end = v->end;
			a.vec = (uintptr_t)t->vec;
			a.vec_len = want;
			a.category_mask = PAGE_IS_WRITTEN;
			a.return_mask = PAGE_IS_WRITTEN;
			r = pagemap_scan(t->pagemap_fd, &a);
			if (r < 0 && errno == EPERM) {
				/*
				 * Part of the range is no longer write-protect registered: it was
				 * unmapped and mapped again. What the aborted scan had already
				 * re-protected is lost, so report the rest of the VMA whole.
				 */
				pr_info("pid %d: VMA %" PRIx64 "-%" PRIx64 " was replaced, reported whole", t->pid,
					v->start, v->end);
				emit(t, out, n, addr, v->end);
				t->harvest_flags |= MT_LAYOUT_CHANGED;
				break;
			}
			if (r < 0) {
				int err = neg_errno();

				pr_perror("pid %d: PAGEMAP_SCAN of %" PRIx64 "-%" PRIx64, t->pid, addr, v->end);
				t->cur_vma = i;
				t->cur_addr = addr;
				return mt_fail("PAGEMAP_SCAN", err);
			}
			for (k = 0; k < (size_t)r; k++)
				emit(t, out, n, t->vec[k].start, t->vec[k].end);
			/* A short answer means the scan reached the end (walk_end may be stale). */
			if ((size_t)r < want)
				break;
			addr = a.walk_end > t->vec[r - 1].end ? a.walk_end : t->vec[r - 1].end;
		}
	}
	t->harvesting = false;
	return t->harvest_flags;
}

static int uffd_api(struct mt_tracker *t)
{
	struct uffdio_api api = { .api = UFFD_API, .features = MT_UFFD_FEATURES };

	if (ioctl(t->uffd, UFFDIO_API, &api)) {
		int err = neg_errno();

		pr_perror("pid %d: UFFDIO_API with WP_ASYNC|WP_UNPOPULATED", t->pid);
		return mt_fail("UFFDIO_API", err);
	}
	if ((api.features & MT_UFFD_FEATURES) != MT_UFFD_FEATURES) {
		pr_err("pid %d: kernel answered features 0x%llx, missing WP_ASYNC or WP_UNPOPULATED", t->pid,
		       (unsigned long long)api.features);
		return mt_fail("UFFDIO_API", -EOPNOTSUPP);
	}
	if (!(api.ioctls & (1ULL << _UFFDIO_REGISTER)) || !(api.ioctls & (1ULL << _UFFDIO_UNREGISTER))) {
		pr_err("pid %d: UFFDIO_API offers no REGISTER/UNREGISTER (ioctls 0x%llx)", t->pid,
		       (unsigned long long)api.ioctls);
		return mt_fail("UFFDIO_API", -EOPNOTSUPP);
	}
	t->info.uffd_features = api.features;
	return 0;
}

static void tracker_free(struct mt_tracker *t)
{
	if (t->uffd >= 0)
		close(t->uffd);
	if (t->pagemap_fd >= 0)
		close(t->pagemap_fd);
	free(t->vmas);
	free(t->pending);
	free(t);
}

int mt_attach(pid_t pid, uint32_t flags, struct mt_tracker **out)
{
	struct inject_result inj;
	struct mt_tracker *t;
	char path[64];
	int64_t t0 = mt_now_ns(), t1;
	int err;

	if (!out)
		return mt_fail("mt_attach: invalid argument", -EINVAL);
	*out = NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return mt_fail("mt_attach", -ENOMEM);
	t->pid = pid;
	t->uffd = -1;
	t->pagemap_fd = -1;
	t->page_size = (uint64_t)sysconf(_SC_PAGESIZE);

	err = inject_userfaultfd(pid, flags, &inj);
	if (err)
		goto fail;
	t->uffd = inj.uffd;
	t->tid = inj.tid;
	t->info.pid = pid;
	t->info.tid = inj.tid;
	t->info.stop_ns = inj.stop_ns;
	t->info.redelivered_signals = inj.redelivered_signals;
	if (inj.user_mode_only)
		t->info.flags |= MT_INFO_USER_MODE_ONLY;
	if (inj.taskfd_raced)
		t->info.flags |= MT_INFO_TASKFD_RACED;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/pagemap", (int)pid, (int)t->tid);
	t->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (t->pagemap_fd < 0) {
		err = neg_errno();
		pr_perror("cannot open %s", path);
		err = mt_fail("/proc/PID/pagemap", err == -ENOENT ? -ESRCH : err);
		goto fail;
	}

	t1 = mt_now_ns();
	err = uffd_api(t);
	if (err)
		goto fail;
	err = refresh_vmas(t);
	if (err)
		goto fail;
	/* Everything is "dirty" before the first copy; the caller copies it all anyway. */
	t->nr_pending = 0;
	t->pos_pending = 0;
	t->info.register_ns = mt_now_ns() - t1;
	t->info.attach_ns = mt_now_ns() - t0;
	pr_info("pid %d: tracking %u VMAs (%" PRIu64 " MiB), %u refused; task stopped %" PRId64 " us", pid,
		t->info.tracked_vmas, t->info.tracked_bytes >> 20, t->info.failed_vmas, t->info.stop_ns / 1000);
	*out = t;
	return 0;
fail:
	tracker_free(t);
	return err;
}

int mt_get_info(const struct mt_tracker *t, struct mt_info *info)
{
	if (!t || !info)
		return mt_fail("mt_get_info: invalid argument", -EINVAL);
	*info = t->info;
	return 0;
}

int mt_get_vmas(const struct mt_tracker *t, struct mt_vma *out, size_t cap, size_t *n)
{
	size_t i;

	if (!t || !n || (!out && cap))
		return mt_fail("mt_get_vmas: invalid argument", -EINVAL);
	for (i = 0; i < t->nr_vmas && i < cap; i++) {
		out[i].start = t->vmas[i].start;
		out[i].end = t->vmas[i].end;
		out[i].state = t->vmas[i].state;
		out[i].error = t->vmas[i].error;
		memcpy(out[i].perms, t->vmas[i].perms, sizeof(out[i].perms));
	}
	*n = t->nr_vmas;
	return 0;
}

/*
 * Unregister every VMA the kernel says is write-protect registered with our
 * context (read back, so VMAs split or made read-only since the last refresh
 * are included), then close. Closing the last reference would unregister too (userfaultfd_release);
 * doing it explicitly lets us report failures.
 */
int mt_detach(struct mt_tracker *t)
{
	struct maps_line *lines = NULL;
	size_t n = 0, i;
	int err = 0;

	if (!t)
		return 0;
	if (!maps_read(t->pid, t->tid, &lines, &n)) {
		for (i = 0; i < n; i++) {
			struct uffdio_range rng = { .start = lines[i].start, .len = lines[i].end - lines[i].start };
			bool allowed = false;

			if (!strcmp(lines[i].name, "[vsyscall]"))
				continue;
			if (wp_allowed(t, lines[i].start, lines[i].end, &allowed) || !allowed)
				continue;
			/* Another context's (a second tracker's, the task's own): EBUSY, not ours to drop. */
			if (uffd_register(t, lines[i].start, lines[i].end))
				continue;
			if (ioctl(t->uffd, UFFDIO_UNREGISTER, &rng)) {
				int e = neg_errno();

				pr_perror("pid %d: UFFDIO_UNREGISTER %" PRIx64 "-%" PRIx64, t->pid, lines[i].start,
					  lines[i].end);
				if (!err)
					err = mt_fail("UFFDIO_UNREGISTER", e);
			}
		}
		free(lines);
	}
	tracker_free(t);
	return err;
}

int mt_probe(struct mt_caps *caps)
{
	struct uffdio_api api = { .api = UFFD_API };
	long ps = sysconf(_SC_PAGESIZE);
	struct page_region r;
	struct pm_scan_arg a;
	uint64_t entry = 0;
	void *page = MAP_FAILED;
	int uffd, fd = -1;

	if (!caps)
		return mt_fail("mt_probe: invalid argument", -EINVAL);
	memset(caps, 0, sizeof(*caps));
#if defined(__x86_64__)
	caps->flags |= MT_CAP_INJECTION;
#endif

	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0 && errno == EPERM) {
		uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
		if (uffd >= 0)
			caps->flags |= MT_CAP_UFFD_USER_MODE_ONLY;
	}
	if (uffd < 0) {
		caps->uffd_error = neg_errno();
	} else {
		/* features = 0 asks for nothing; the answer lists everything the kernel offers. */
		if (ioctl(uffd, UFFDIO_API, &api)) {
			caps->uffd_error = neg_errno();
		} else {
			caps->flags |= MT_CAP_UFFD;
			caps->uffd_features = api.features;
			if (api.features & UFFD_FEATURE_WP_ASYNC)
				caps->flags |= MT_CAP_UFFD_WP_ASYNC;
			if (api.features & UFFD_FEATURE_WP_UNPOPULATED)
				caps->flags |= MT_CAP_UFFD_WP_UNPOPULATED;
		}
		close(uffd);
	}

	page = mmap(NULL, (size_t)ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED) {
		caps->pagemap_scan_error = neg_errno();
		return 0;
	}
	*(volatile char *)page = 1;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		caps->pagemap_scan_error = neg_errno();
		goto out;
	}
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.start = (uintptr_t)page;
	a.end = (uintptr_t)page + (uint64_t)ps;
	a.vec = (uintptr_t)&r;
	a.vec_len = 1;
	a.category_mask = PAGE_IS_PRESENT;
	a.return_mask = PAGE_IS_PRESENT;
	if (pagemap_scan(fd, &a) == 1)
		caps->flags |= MT_CAP_PAGEMAP_SCAN;
	else
		caps->pagemap_scan_error = errno ? -errno : -ENODATA;
	if (pread(fd, &entry, sizeof(entry), (off_t)((uintptr_t)page / (uint64_t)ps * sizeof(entry))) ==
		    sizeof(entry) &&
	    (entry & PM_SOFT_DIRTY))
		caps->flags |= MT_CAP_SOFT_DIRTY;
out:
	if (fd >= 0)
		close(fd);
	munmap(page, (size_t)ps);
	return 0;
}

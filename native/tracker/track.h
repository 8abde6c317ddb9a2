/*
 * libmigrate_track - dirty-page tracking of a foreign process with userfaultfd
 * write-protect (UFFD_FEATURE_WP_ASYNC) and PAGEMAP_SCAN.
 *
 * How it works (see docs in track.c and ARCHITECTURE.md "Dirty tracking"):
 *   mt_attach()  stops ONE thread of the process with ptrace for well under a
 *                millisecond, makes it call userfaultfd() by single-stepping a
 *                `syscall` instruction already present in its [vdso] (no byte of
 *                the task is written), copies the descriptor out with
 *                pidfd_getfd(), makes the thread close() its own copy, restores
 *                every register and detaches. All further work (UFFDIO_API,
 *                UFFDIO_REGISTER, UFFDIO_WRITEPROTECT) is done from this process
 *                on the copied descriptor, which refers to the target's mm.
 *   mt_harvest() one PAGEMAP_SCAN per tracked VMA: pages written since the last
 *                harvest, re-protected atomically by the same ioctl.
 *   mt_refresh() picks up VMAs that appeared or grew (reported fully dirty).
 *   mt_detach()  unregisters everything and frees the tracker.
 *
 * Conventions: every function returns 0 (or a non-negative bit mask where said)
 * on success and -errno on failure. On failure mt_last_step() names the step
 * that failed (thread-local, valid until the next call on the same thread).
 * A tracker is not thread-safe: callers serialise the calls on one tracker.
 * Only x86_64 is implemented; elsewhere mt_attach() returns -EOPNOTSUPP.
 */
#ifndef MIGRATE_TRACK_H
#define MIGRATE_TRACK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MT_API __attribute__((visibility("default")))

/* Bumped whenever a struct below changes layout; checked by the C# wrapper. */
#define MT_ABI_VERSION 1

/* mt_caps.flags */
#define MT_CAP_UFFD (1u << 0)		     /* userfaultfd() works in this process */
#define MT_CAP_UFFD_WP_ASYNC (1u << 1)	     /* UFFD_FEATURE_WP_ASYNC offered */
#define MT_CAP_UFFD_WP_UNPOPULATED (1u << 2) /* UFFD_FEATURE_WP_UNPOPULATED offered */
#define MT_CAP_UFFD_USER_MODE_ONLY (1u << 3) /* this process needed UFFD_USER_MODE_ONLY */
#define MT_CAP_PAGEMAP_SCAN (1u << 4)	     /* PAGEMAP_SCAN ioctl on /proc/PID/pagemap */
#define MT_CAP_SOFT_DIRTY (1u << 5)	     /* pagemap bit 55 set on a freshly written page */
#define MT_CAP_INJECTION (1u << 6)	     /* mt_attach() is implemented for this architecture */

struct mt_caps {
	uint64_t uffd_features;	    /* UFFDIO_API answer; 0 when userfaultfd() failed */
	int32_t uffd_error;	    /* 0, or -errno of userfaultfd()/UFFDIO_API */
	int32_t pagemap_scan_error; /* 0, or -errno of the PAGEMAP_SCAN probe */
	uint32_t flags;		    /* MT_CAP_* */
	uint32_t reserved;
};

/* mt_attach() flags */
/*
 * Inject even when the task runs under a seccomp filter. A filter that kills on
 * userfaultfd() or close() (systemd's SystemCallFilter= does by default) would
 * kill the task, so without this flag such tasks are refused with -EOPNOTSUPP.
 */
#define MT_ATTACH_ALLOW_SECCOMP (1u << 0)

/* mt_harvest() / mt_refresh() positive return bits */
#define MT_MORE (1 << 0)	   /* the output was filled: call again for the rest */
#define MT_LAYOUT_CHANGED (1 << 1) /* a tracked VMA was replaced: it was reported whole; call mt_refresh() */

/* A run of written pages: [start, start + pages * page size). */
struct mt_range {
	uint64_t start;
	uint64_t pages;
};

/* mt_vma.state */
enum mt_vma_state {
	MT_VMA_TRACKED = 0,	  /* registered and write-protected */
	MT_VMA_SKIP_SPECIAL = 1,  /* [vdso], [vvar], [vsyscall], ... */
	MT_VMA_SKIP_SHARED = 2,	  /* MAP_SHARED: not this tracker's (and not CRIU's pre-copy) business */
	MT_VMA_SKIP_READONLY = 3, /* not writable now; seen again by mt_refresh() if that changes */
	MT_VMA_FAILED = 4,	  /* private and writable but the kernel refused: mt_vma.error says why */
};

struct mt_vma {
	uint64_t start;
	uint64_t end;
	int32_t state; /* enum mt_vma_state */
	int32_t error; /* -errno for MT_VMA_FAILED, else 0 */
	char perms[8]; /* as in /proc/PID/maps, NUL-terminated */
};

/* mt_info.flags */
#define MT_INFO_USER_MODE_ONLY (1u << 0) /* the task needed UFFD_USER_MODE_ONLY */
#define MT_INFO_TASKFD_RACED (1u << 1)	 /* the task's descriptor changed before close(): not closed by us */

struct mt_info {
	int64_t attach_ns;	/* wall time of mt_attach() */
	int64_t stop_ns;	/* from PTRACE_INTERRUPT to PTRACE_DETACH: the longest the task can have been held */
	int64_t register_ns;	/* UFFDIO_API + REGISTER + WRITEPROTECT of all VMAs (task running) */
	uint64_t uffd_features; /* UFFDIO_API answer on the tracker's descriptor */
	uint64_t tracked_bytes;
	uint32_t tracked_vmas;
	uint32_t failed_vmas;
	int32_t pid;
	int32_t tid;		      /* the thread the syscalls were injected into */
	uint32_t flags;		      /* MT_INFO_* */
	uint32_t redelivered_signals; /* signals that arrived during injection and were sent again */
};

/* log levels for mt_set_log() */
#define MT_LOG_ERR 0
#define MT_LOG_WARN 1
#define MT_LOG_INFO 2
#define MT_LOG_DEBUG 3

typedef void (*mt_log_fn)(int level, const char *msg);

struct mt_tracker;

MT_API int mt_abi_version(void);

/* Route the library's log lines (each starts with "track: "); NULL (default) drops them. */
MT_API void mt_set_log(mt_log_fn fn, int max_level);

/* The step that failed in the last call on this thread ("ptrace", "UFFDIO_REGISTER", ...). */
MT_API const char *mt_last_step(void);

/* What this kernel offers. Returns 0 even when features are missing (see caps). */
MT_API int mt_probe(struct mt_caps *caps);

/*
 * Attach to process pid (a thread-group id). Refused: a stopped (T) process with
 * -EBUSY, one already traced with -EBUSY, a zombie or gone one with -ESRCH, a
 * 32-bit one with -EOPNOTSUPP, one under seccomp without MT_ATTACH_ALLOW_SECCOMP
 * with -EOPNOTSUPP. The first mt_harvest() returns only pages written after
 * mt_attach() returned (a few pages written during registration may show too).
 */
MT_API int mt_attach(pid_t pid, uint32_t flags, struct mt_tracker **out);

/*
 * Written pages since the last harvest, re-protected. Fills at most cap ranges,
 * stores the count in *n, and returns a mask of MT_MORE (call again: the output
 * was full, the harvest continues where it stopped) and MT_LAYOUT_CHANGED.
 */
MT_API int mt_harvest(struct mt_tracker *t, struct mt_range *out, size_t cap, size_t *n);

/*
 * Re-read /proc/PID/maps: VMAs that appeared, grew or became writable are
 * registered, protected and reported here as fully dirty; vanished ones are
 * forgotten. Returns MT_MORE when out was too small (call again: the rest is
 * drained without reading the maps again).
 */
MT_API int mt_refresh(struct mt_tracker *t, struct mt_range *out, size_t cap, size_t *n);

MT_API int mt_get_info(const struct mt_tracker *t, struct mt_info *info);

/* Copies up to cap VMA records; *n receives the total number. */
MT_API int mt_get_vmas(const struct mt_tracker *t, struct mt_vma *out, size_t cap, size_t *n);

/*
 * Unregister every range (which drops the write protection), close the
 * descriptors, free t. t is freed even when an error is returned.
 */
MT_API int mt_detach(struct mt_tracker *t);

#ifdef __cplusplus
}
#endif

#endif /* MIGRATE_TRACK_H */

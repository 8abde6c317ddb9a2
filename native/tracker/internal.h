/*
 * Internals shared by the tracker's source files. Not installed, not exported.
 */
#ifndef MIGRATE_TRACK_INTERNAL_H
#define MIGRATE_TRACK_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "track.h"

#define LOG_PREFIX "track: "

void mt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pr_err(fmt, ...) mt_log(MT_LOG_ERR, LOG_PREFIX fmt "\n", ##__VA_ARGS__)
#define pr_warn(fmt, ...) mt_log(MT_LOG_WARN, LOG_PREFIX fmt "\n", ##__VA_ARGS__)
#define pr_info(fmt, ...) mt_log(MT_LOG_INFO, LOG_PREFIX fmt "\n", ##__VA_ARGS__)
#define pr_debug(fmt, ...) mt_log(MT_LOG_DEBUG, LOG_PREFIX fmt "\n", ##__VA_ARGS__)
/* pr_perror: the message, then errno's text and number (errno is read before anything else runs). */
#define pr_perror(fmt, ...)                                                                                \
	do {                                                                                               \
		int __e = errno;                                                                           \
		mt_log(MT_LOG_ERR, LOG_PREFIX fmt ": %s (errno %d)\n", ##__VA_ARGS__, strerror(__e), __e); \
		errno = __e;                                                                               \
	} while (0)

/* Record the failing step for mt_last_step() and return err (a -errno). */
int mt_fail(const char *step, int err);

static inline int neg_errno(void)
{
	return errno ? -errno : -EIO;
}

int64_t mt_now_ns(void);

/* One line of /proc/PID/maps. */
struct maps_line {
	uint64_t start;
	uint64_t end;
	char perms[8];
	char name[64]; /* pathname or [special], truncated; "" for anonymous */
};

/*
 * Reads /proc/PID/task/TID/maps (the same as /proc/PID/maps for a live leader,
 * and still right when the leader has exited); *lines is malloc'ed.
 */
int maps_read(pid_t pid, pid_t tid, struct maps_line **lines, size_t *n);

/* Reads /proc/PID/stat's state letter of a thread (R, S, D, T, t, Z, X, ...). */
int proc_task_state(pid_t pid, pid_t tid, char *state);

/* Reads an integer field ("Seccomp:", "TracerPid:") of /proc/PID/status. */
int proc_status_field(pid_t pid, const char *field, long *value);

/* Result of injecting userfaultfd() into a task and taking the descriptor out. */
struct inject_result {
	int uffd; /* our copy, O_CLOEXEC */
	pid_t tid;
	bool user_mode_only;
	bool taskfd_raced;
	uint32_t redelivered_signals;
	int64_t stop_ns;
};

int inject_userfaultfd(pid_t pid, uint32_t flags, struct inject_result *res);

#endif /* MIGRATE_TRACK_INTERNAL_H */

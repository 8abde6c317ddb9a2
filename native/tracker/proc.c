/*
 * Logging, error steps and /proc readers of the tracker.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static mt_log_fn log_fn;
static int log_max_level = MT_LOG_INFO;
static __thread const char *last_step = "";

void mt_set_log(mt_log_fn fn, int max_level)
{
	log_fn = fn;
	log_max_level = max_level;
}

void mt_log(int level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	mt_log_fn fn = log_fn;

	if (!fn || level > log_max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fn(level, buf);
}

int mt_fail(const char *step, int err)
{
	last_step = step;
	return err;
}

const char *mt_last_step(void)
{
	return last_step;
}

int mt_abi_version(void)
{
	return MT_ABI_VERSION;
}

int64_t mt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * A maps line: "start-end perms offset dev inode   name". The name may hold
 * spaces; only its first 63 bytes are kept (enough for "[vdso]" and for logs).
 */
static int maps_parse(char *line, struct maps_line *m)
{
	char *p = line, *end;
	int field;

	m->start = strtoull(p, &end, 16);
	if (*end != '-')
		return -EINVAL;
	m->end = strtoull(end + 1, &end, 16);
	if (*end != ' ' || m->end <= m->start)
		return -EINVAL;
	p = end + 1;
	if (strlen(p) < 4)
		return -EINVAL;
	memcpy(m->perms, p, 4);
	m->perms[4] = '\0';
	/* skip perms, offset, dev, inode */
	for (field = 0; field < 4; field++) {
		while (*p && *p != ' ')
			p++;
		while (*p == ' ')
			p++;
	}
	end = p + strlen(p);
	while (end > p && isspace((unsigned char)end[-1]))
		*--end = '\0';
	snprintf(m->name, sizeof(m->name), "%s", p);
	return 0;
}

int maps_read(pid_t pid, pid_t tid, struct maps_line **lines, size_t *n)
{
	char path[64], *line = NULL;
	size_t len = 0, cap = 0, count = 0;
	struct maps_line *v = NULL, *nv;
	FILE *f;
	int ret = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/maps", (int)pid, (int)tid);
	f = fopen(path, "re");
	if (!f) {
		ret = neg_errno();
		pr_perror("cannot open %s", path);
		return mt_fail("/proc/PID/maps", ret == -ENOENT ? -ESRCH : ret);
	}
	while (getline(&line, &len, f) > 0) {
		if (count == cap) {
			cap = cap ? cap * 2 : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				ret = mt_fail("/proc/PID/maps", -ENOMEM);
				goto out;
			}
			v = nv;
		}
		if (maps_parse(line, &v[count])) {
			pr_err("unexpected line in %s: %s", path, line);
			ret = mt_fail("/proc/PID/maps", -EINVAL);
			goto out;
		}
		count++;
	}
	if (ferror(f)) {
		ret = neg_errno();
		pr_perror("cannot read %s", path);
		mt_fail("/proc/PID/maps", ret);
	}
out:
	free(line);
	fclose(f);
	if (ret) {
		free(v);
		return ret;
	}
	*lines = v;
	*n = count;
	return 0;
}

int proc_task_state(pid_t pid, pid_t tid, char *state)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t len;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : neg_errno();
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	/* "tid (comm) S ...": comm may hold ") ", so take the last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return -EINVAL;
	*state = p[2];
	return 0;
}

int proc_status_field(pid_t pid, const char *field, long *value)
{
	char path[64], *line = NULL;
	size_t len = 0, flen = strlen(field);
	int ret = -ENOENT;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : neg_errno();
	while (getline(&line, &len, f) > 0) {
		if (!strncmp(line, field, flen)) {
			*value = strtol(line + flen, NULL, 10);
			ret = 0;
			break;
		}
	}
	free(line);
	fclose(f);
	return ret;
}

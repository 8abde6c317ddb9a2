/*
 * Injecting userfaultfd() into a foreign task with ptrace (x86_64).
 *
 * One thread is stopped (PTRACE_SEIZE + PTRACE_INTERRUPT); the others keep
 * running. That is enough because a userfaultfd belongs to the whole mm and
 * everything after the injection (UFFDIO_API, REGISTER, write-protect) is done
 * from our side on the descriptor we copy out with pidfd_getfd(). Stopping every
 * thread would close two small windows (see the kcmp() check and the note on
 * fork() below) at the price of a stop time that grows with the thread count;
 * we chose the short stop.
 *
 * No byte of the task is written: the thread is pointed at a `syscall`
 * instruction (0f 05) that already exists in its [vdso] and single-stepped over
 * it. orig_rax is set to -1 so that the kernel does not "restart" the call the
 * thread was blocked in onto our registers; at the SIGTRAP stop after each
 * injected call every register is put back bit-exactly, so when we detach the
 * kernel restarts (or not) the interrupted read()/nanosleep() exactly as if the
 * thread had only been interrupted by an ignored signal.
 *
 * Signals that arrive while we hold the thread are suppressed (their
 * signal-delivery stops are resumed with signal 0) and sent again after detach:
 * queued ones (si_code < 0: sigqueue, timers, AIO) with their siginfo through
 * rt_sigqueueinfo/rt_tgsigqueueinfo, the others with kill()/tgkill() (the
 * receiver then sees this process as the sender).
 *
 * A thread stopped inside an rseq critical section is resumed and interrupted
 * again: with its rip moved to the vDSO the kernel would clear rseq_cs instead
 * of aborting the section.
 *
 * Known windows, documented rather than closed:
 *  - another thread may fork() between userfaultfd() and close(): the child
 *    inherits the descriptor (O_CLOEXEC, so until it execs);
 *  - another thread may close() the descriptor and reuse its number before our
 *    close(): kcmp() detects that and then nothing is closed in the task;
 *  - if this process dies while it holds the thread, the kernel detaches it
 *    with the injection registers in place (PTRACE_O_EXITKILL would kill it
 *    instead; neither is acceptable, and the window is two single-steps long).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "uapi_compat.h"

#if defined(__x86_64__)

#include <elf.h>
#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/user.h>

/* Give up on a thread that keeps producing stops (a signal storm) after this many. */
#define MAX_STOPS 10000
/* Tries to catch a thread outside an rseq critical section. */
#define MAX_RSEQ_RETRIES 100
/* How much of an executable mapping is searched for 0f 05 when there is no [vdso]. */
#define MAX_TEXT_SCAN (4u << 20)
/* struct rseq's rseq_cs field (include/uapi/linux/rseq.h: cpu_id_start, cpu_id, then rseq_cs). */
#define RSEQ_CS_OFFSET 8

struct pending_sig {
	siginfo_t si;
};

struct inject_ctx {
	pid_t pid;
	pid_t tid;
	uint64_t syscall_ip;
	struct user_regs_struct saved;
	bool seized;
	bool regs_saved;
	struct pending_sig *sigs;
	size_t nr_sigs;
	size_t cap_sigs;
};

static int get_regs(pid_t tid, struct user_regs_struct *regs)
{
	struct iovec iov = { .iov_base = regs, .iov_len = sizeof(*regs) };

	if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_PRSTATUS, &iov))
		return neg_errno();
	/* A 32-bit (ia32) task answers with its smaller register set. */
	if (iov.iov_len != sizeof(*regs))
		return -EOPNOTSUPP;
	return 0;
}

static int set_regs(pid_t tid, const struct user_regs_struct *regs)
{
	struct iovec iov = { .iov_base = (void *)regs, .iov_len = sizeof(*regs) };

	if (ptrace(PTRACE_SETREGSET, tid, (void *)NT_PRSTATUS, &iov))
		return neg_errno();
	return 0;
}

static int wait_stop(pid_t tid, int *status)
{
	for (;;) {
		pid_t r = waitpid(tid, status, __WALL);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return neg_errno();
		}
		if (WIFEXITED(*status) || WIFSIGNALED(*status))
			return -ESRCH;
		if (WIFSTOPPED(*status))
			return 0;
	}
}

static int record_signal(struct inject_ctx *c, pid_t tid)
{
	struct pending_sig *n;
	siginfo_t si;
	size_t i;

	if (ptrace(PTRACE_GETSIGINFO, tid, NULL, &si))
		return neg_errno();
	/* A standard signal already pending would have been merged by the kernel too. */
	if (si.si_signo < SIGRTMIN) {
		for (i = 0; i < c->nr_sigs; i++)
			if (c->sigs[i].si.si_signo == si.si_signo)
				return 0;
	}
	if (c->nr_sigs == c->cap_sigs) {
		size_t cap = c->cap_sigs ? c->cap_sigs * 2 : 8;

		n = realloc(c->sigs, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		c->sigs = n;
		c->cap_sigs = cap;
	}
	c->sigs[c->nr_sigs++].si = si;
	pr_debug("pid %d: signal %d (code %d) arrived during injection, will be sent again", c->pid, si.si_signo,
		 si.si_code);
	return 0;
}

static void redeliver_signals(struct inject_ctx *c)
{
	size_t i;

	for (i = 0; i < c->nr_sigs; i++) {
		siginfo_t *si = &c->sigs[i].si;
		int sig = si->si_signo;
		long r;

		if (si->si_code < 0 && si->si_code != SI_TKILL)
			r = syscall(SYS_rt_tgsigqueueinfo, c->pid, c->tid, sig, si);
		else if (si->si_code == SI_TKILL)
			r = syscall(SYS_tgkill, c->pid, c->tid, sig);
		else
			r = kill(c->pid, sig);
		if (r)
			pr_perror("pid %d: cannot send signal %d again", c->pid, sig);
	}
}

/*
 * After PTRACE_INTERRUPT: wait for the interrupt stop. Signal-delivery stops on
 * the way are recorded and resumed without the signal. A group stop means the
 * process is stopped by job control: refused.
 */
static int wait_interrupt_stop(struct inject_ctx *c)
{
	int status, err, i;

	for (i = 0; i < MAX_STOPS; i++) {
		unsigned int event;
		int sig;

		err = wait_stop(c->tid, &status);
		if (err)
			return mt_fail("waitpid", err);
		event = (unsigned int)status >> 16;
		sig = WSTOPSIG(status);
		if (event == PTRACE_EVENT_STOP) {
			if (sig == SIGTRAP)
				return 0;
			pr_err("pid %d is stopped by job control (signal %d): refusing to resume it", c->pid, sig);
			return mt_fail("process is stopped (state T)", -EBUSY);
		}
		err = record_signal(c, c->tid);
		if (err)
			return mt_fail("PTRACE_GETSIGINFO", err);
		if (ptrace(PTRACE_CONT, c->tid, NULL, NULL))
			return mt_fail("ptrace", neg_errno());
	}
	return mt_fail("waitpid (signal storm)", -EAGAIN);
}

static int read_remote(pid_t pid, uint64_t addr, void *buf, size_t len)
{
	struct iovec local = { .iov_base = buf, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = len };
	char path[64];
	ssize_t r;
	int fd;

	r = process_vm_readv(pid, &local, 1, &remote, 1, 0);
	if (r == (ssize_t)len)
		return 0;
	/* Special mappings may refuse process_vm_readv; /proc/PID/mem goes through the same GUP but with FOLL_FORCE. */
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return neg_errno();
	r = pread(fd, buf, len, (off_t)addr);
	close(fd);
	if (r < 0)
		return neg_errno();
	return r == (ssize_t)len ? 0 : -EIO;
}

static int scan_for_syscall(pid_t pid, const struct maps_line *m, uint64_t *ip)
{
	size_t len = m->end - m->start;
	unsigned char *buf, *p;
	int err;

	if (len > MAX_TEXT_SCAN)
		len = MAX_TEXT_SCAN;
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	err = read_remote(pid, m->start, buf, len);
	if (!err) {
		p = memmem(buf, len, "\x0f\x05", 2);
		if (p)
			*ip = m->start + (uint64_t)(p - buf);
		else
			err = -ENOENT;
	}
	free(buf);
	return err;
}

/* A `syscall` instruction in the task's [vdso], else in any executable mapping. */
static int find_syscall_insn(pid_t pid, pid_t tid, uint64_t *ip)
{
	struct maps_line *lines = NULL;
	size_t n = 0, i;
	int err;

	err = maps_read(pid, tid, &lines, &n);
	if (err)
		return err;
	err = -ENOENT;
	/* Read through the thread: a zombie leader has no mm any more. */
	for (i = 0; i < n && err; i++)
		if (!strcmp(lines[i].name, "[vdso]"))
			err = scan_for_syscall(tid, &lines[i], ip);
	for (i = 0; i < n && err; i++)
		if (lines[i].perms[2] == 'x' && lines[i].name[0] != '[')
			err = scan_for_syscall(tid, &lines[i], ip);
	free(lines);
	if (err)
		return mt_fail("no syscall instruction found in the task's [vdso] or text", err);
	pr_debug("pid %d: syscall instruction at 0x%" PRIx64, pid, *ip);
	return 0;
}

/* True when ip lies inside the thread's active rseq critical section. */
static bool in_rseq_cs(struct inject_ctx *c, uint64_t ip)
{
	struct __ptrace_rseq_configuration conf;
	struct {
		uint32_t version;
		uint32_t flags;
		uint64_t start_ip;
		uint64_t post_commit_offset;
		uint64_t abort_ip;
	} cs;
	uint64_t cs_ptr;

	if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, c->tid, (void *)sizeof(conf), &conf) != (long)sizeof(conf))
		return false;
	if (!conf.rseq_abi_pointer)
		return false;
	if (read_remote(c->tid, conf.rseq_abi_pointer + RSEQ_CS_OFFSET, &cs_ptr, sizeof(cs_ptr)) || !cs_ptr)
		return false;
	if (read_remote(c->tid, cs_ptr, &cs, sizeof(cs)))
		return false;
	return ip >= cs.start_ip && ip - cs.start_ip < cs.post_commit_offset;
}

/*
 * Stop the thread and save its registers, making sure it is not inside an rseq
 * critical section (resuming it lets the kernel abort the section first).
 */
static int stop_and_save(struct inject_ctx *c)
{
	int err, i;

	for (i = 0; i < MAX_RSEQ_RETRIES; i++) {
		if (ptrace(PTRACE_INTERRUPT, c->tid, NULL, NULL))
			return mt_fail("ptrace", neg_errno());
		err = wait_interrupt_stop(c);
		if (err)
			return err;
		err = get_regs(c->tid, &c->saved);
		if (err == -EOPNOTSUPP) {
			pr_err("pid %d is not a 64-bit task", c->pid);
			return mt_fail("32-bit task", err);
		}
		if (err)
			return mt_fail("ptrace", err);
		if (!in_rseq_cs(c, c->saved.rip)) {
			c->regs_saved = true;
			return 0;
		}
		pr_debug("pid %d: thread %d inside an rseq critical section, letting it run", c->pid, c->tid);
		if (ptrace(PTRACE_CONT, c->tid, NULL, NULL))
			return mt_fail("ptrace", neg_errno());
		usleep(100);
	}
	return mt_fail("thread stays inside an rseq critical section", -EAGAIN);
}

/*
 * Run one system call in the stopped thread: registers from the saved set, rip
 * at the syscall instruction, orig_rax -1, single-step until the SIGTRAP the
 * kernel reports after the call. *ret receives rax (a -errno on failure).
 */
static int inject_syscall(struct inject_ctx *c, long nr, long a1, long a2, long *ret)
{
	struct user_regs_struct regs = c->saved;
	int status, err, i;

	regs.rip = c->syscall_ip;
	regs.orig_rax = (unsigned long long)-1;
	regs.rax = (unsigned long long)nr;
	regs.rdi = (unsigned long long)a1;
	regs.rsi = (unsigned long long)a2;
	regs.rdx = 0;
	regs.r10 = 0;
	regs.r8 = 0;
	regs.r9 = 0;
	err = set_regs(c->tid, &regs);
	if (err)
		return err;

	for (i = 0; i < MAX_STOPS; i++) {
		unsigned int event;
		siginfo_t si;
		int sig;

		if (ptrace(PTRACE_SINGLESTEP, c->tid, NULL, NULL))
			return neg_errno();
		err = wait_stop(c->tid, &status);
		if (err)
			return err;
		event = (unsigned int)status >> 16;
		sig = WSTOPSIG(status);
		/* A group stop begun by another thread, or a late interrupt: step on (detach re-enters the stop). */
		if (event)
			continue;
		if (sig == SIGTRAP) {
			err = get_regs(c->tid, &regs);
			if (err)
				return err;
			if (ptrace(PTRACE_GETSIGINFO, c->tid, NULL, &si))
				return neg_errno();
			if (regs.rip == c->syscall_ip + 2 && si.si_code > 0) {
				*ret = (long)regs.rax;
				return 0;
			}
		}
		err = record_signal(c, c->tid);
		if (err)
			return err;
	}
	return -EAGAIN;
}

/*
 * PTRACE_DETACH needs a stopped tracee. If an error left it running (ESRCH
 * while it still exists), stop it again first: a tracer that just returned
 * would otherwise keep it traced until this thread exits.
 */
static int detach(struct inject_ctx *c)
{
	int status, err;

	if (!ptrace(PTRACE_DETACH, c->tid, NULL, NULL))
		return 0;
	if (errno != ESRCH)
		goto fail;
	if (syscall(SYS_tgkill, c->pid, c->tid, 0))
		return 0; /* gone */
	if (ptrace(PTRACE_INTERRUPT, c->tid, NULL, NULL))
		return 0; /* not ours any more */
	err = wait_stop(c->tid, &status);
	if (err)
		return err == -ESRCH ? 0 : err;
	if (WSTOPSIG(status) != SIGTRAP && !((unsigned int)status >> 16))
		record_signal(c, c->tid);
	if (!ptrace(PTRACE_DETACH, c->tid, NULL, NULL))
		return 0;
fail:
	err = neg_errno();
	pr_perror("pid %d: PTRACE_DETACH of thread %d", c->pid, c->tid);
	return err;
}

/* The thread to inject into: the leader unless it has exited (a zombie leader with live threads). */
static int choose_thread(pid_t pid, pid_t *tid)
{
	char path[64], state;
	struct dirent *de;
	DIR *d;
	int err;

	err = proc_task_state(pid, pid, &state);
	if (err)
		return mt_fail("no such process", err == -EINVAL ? -ESRCH : err);
	if (state == 'T' || state == 't') {
		pr_err("pid %d is stopped (state %c): refusing to attach", pid, state);
		return mt_fail("process is stopped (state T)", -EBUSY);
	}
	if (state != 'Z' && state != 'X') {
		*tid = pid;
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return mt_fail("process is a zombie", -ESRCH);
	err = -ESRCH;
	while ((de = readdir(d))) {
		pid_t t = (pid_t)atoi(de->d_name);

		if (t <= 0 || proc_task_state(pid, t, &state))
			continue;
		if (state != 'Z' && state != 'X') {
			*tid = t;
			err = 0;
			break;
		}
	}
	closedir(d);
	if (err)
		return mt_fail("process is a zombie", err);
	return 0;
}

static int preflight(pid_t pid, uint32_t flags)
{
	long v;
	int err;

	if (pid <= 0 || pid == getpid())
		return mt_fail("pid is this process or invalid", -EINVAL);
	err = proc_status_field(pid, "TracerPid:", &v);
	if (err)
		return mt_fail("no such process", err == -ENOENT ? -ESRCH : err);
	if (v) {
		pr_err("pid %d is already traced by pid %ld", pid, v);
		return mt_fail("ptrace (already traced by another process)", -EBUSY);
	}
	err = proc_status_field(pid, "Seccomp:", &v);
	if (!err && v == 1)
		return mt_fail("seccomp strict mode (injected syscalls would kill the task)", -EOPNOTSUPP);
	if (!err && v == 2 && !(flags & MT_ATTACH_ALLOW_SECCOMP)) {
		pr_err("pid %d runs under a seccomp filter; pass MT_ATTACH_ALLOW_SECCOMP to inject anyway", pid);
		return mt_fail("seccomp filter (a filter may kill the task on userfaultfd)", -EOPNOTSUPP);
	}
	return 0;
}

/* pidfd_getfd() of the task's descriptor; then make sure the task's number still names that file. */
static int take_descriptor(struct inject_ctx *c, int taskfd, int *ours, bool *same)
{
	long pidfd, fd, r;

	pidfd = syscall(SYS_pidfd_open, c->tid, c->tid == c->pid ? 0 : PIDFD_THREAD);
	if (pidfd < 0)
		return mt_fail("pidfd_open", neg_errno());
	fd = syscall(SYS_pidfd_getfd, (int)pidfd, taskfd, 0);
	if (fd < 0) {
		int err = neg_errno();

		close((int)pidfd);
		return mt_fail("pidfd_getfd", err);
	}
	close((int)pidfd);
	*ours = (int)fd;
	r = syscall(SYS_kcmp, getpid(), c->tid, KCMP_FILE, (int)fd, taskfd);
	*same = r == 0 || (r < 0 && errno == ENOSYS);
	return 0;
}

int inject_userfaultfd(pid_t pid, uint32_t flags, struct inject_result *res)
{
	struct inject_ctx c = { .pid = pid };
	int64_t t_stop = 0;
	long taskfd = -1, r;
	int err, ours = -1;
	bool same = true;

	memset(res, 0, sizeof(*res));
	res->uffd = -1;
	err = preflight(pid, flags);
	if (err)
		return err;
	err = choose_thread(pid, &c.tid);
	if (err)
		return err;
	/* Seizing does not stop the task; it is the permission check, so it comes first. */
	if (ptrace(PTRACE_SEIZE, c.tid, NULL, NULL)) {
		err = neg_errno();
		pr_perror("pid %d: PTRACE_SEIZE of thread %d", pid, c.tid);
		return mt_fail("ptrace", err);
	}
	c.seized = true;
	err = find_syscall_insn(pid, c.tid, &c.syscall_ip);
	if (err)
		goto detach;
	t_stop = mt_now_ns();
	err = stop_and_save(&c);
	if (err)
		goto detach;
	pr_debug("pid %d: thread %d stopped after %" PRId64 " us", pid, c.tid, (mt_now_ns() - t_stop) / 1000);

	err = inject_syscall(&c, __NR_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, &taskfd);
	if (!err && taskfd == -EPERM) {
		/* vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE: kernel-mode faults cannot be handled. */
		err = inject_syscall(&c, __NR_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, 0, &taskfd);
		res->user_mode_only = true;
	}
	if (err) {
		mt_fail("ptrace (injecting userfaultfd)", err);
		goto restore;
	}
	if (taskfd < 0) {
		err = (int)taskfd;
		errno = -err;
		pr_perror("pid %d: userfaultfd() in the task", pid);
		mt_fail("userfaultfd", err);
		goto restore;
	}

	pr_debug("pid %d: userfaultfd() = %ld in the task after %" PRId64 " us", pid, taskfd,
		 (mt_now_ns() - t_stop) / 1000);
	err = take_descriptor(&c, (int)taskfd, &ours, &same);
	if (!same) {
		/* Another thread closed it and reused the number: the task's copy is already gone. */
		pr_warn("pid %d: descriptor %ld changed under us, not closing it in the task", pid, taskfd);
		res->taskfd_raced = true;
	} else {
		int cerr = inject_syscall(&c, __NR_close, taskfd, 0, &r);

		if (cerr) {
			if (!err)
				err = mt_fail("ptrace (injecting close)", cerr);
		} else if (r < 0) {
			pr_warn("pid %d: close(%ld) in the task returned %ld", pid, taskfd, r);
		}
	}

restore:
	if (c.regs_saved) {
		int rerr = set_regs(c.tid, &c.saved);

		if (rerr) {
			pr_err("pid %d: cannot restore the registers of thread %d: %s", pid, c.tid, strerror(-rerr));
			if (!err)
				err = mt_fail("ptrace (restoring registers)", rerr);
		}
	}
detach:
	if (c.seized) {
		int derr = detach(&c);

		if (derr && !err)
			err = mt_fail("ptrace", derr);
	}
	res->stop_ns = t_stop ? mt_now_ns() - t_stop : 0;
	pr_debug("pid %d: detached after %" PRId64 " us", pid, res->stop_ns / 1000);
	redeliver_signals(&c);
	res->redelivered_signals = (uint32_t)c.nr_sigs;
	res->tid = c.tid;
	free(c.sigs);
	if (err) {
		if (ours >= 0)
			close(ours);
		return err;
	}
	res->uffd = ours;
	return 0;
}

#else /* !__x86_64__ */

int inject_userfaultfd(pid_t pid, uint32_t flags, struct inject_result *res)
{
	(void)pid;
	(void)flags;
	memset(res, 0, sizeof(*res));
	res->uffd = -1;
	return mt_fail("syscall injection is implemented for x86_64 only", -EOPNOTSUPP);
}

#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * fasync_demo - asynchronous notification (SIGIO, fasync) from a fifolab
 * FIFO, run inside the guest; the classic signal-driven reader.
 *
 *   fasync_demo signal DEV [--external N --ready FILE]
 *       signal(SIGIO, handler); fcntl(F_SETOWN, getpid()); F_SETFL O_ASYNC
 *       (FASYNC).  Self mode: three bursts written through a second fd; for
 *       each one the handler must run before the program reads (O_NONBLOCK
 *       reads until EAGAIN) and verifies the bytes.  Then release: the fd is
 *       closed, a second fd is armed with F_SETSIG SIGRTMIN+3 as a sentinel,
 *       a write must signal the sentinel and no SIGIO may come for the
 *       closed fd.  --external N: nothing is written; once armed it prints
 *       "waiting" and creates FILE, and the harness injects N bytes from the
 *       host (the pattern (i * 7 + 3) % 251); each SIGIO is answered by
 *       draining until all N bytes arrived intact and in order.
 *   fasync_demo siginfo DEV [--external N --ready FILE]
 *       sigaction(SA_SIGINFO) + F_SETSIG SIGRTMIN+1 (queued, with siginfo):
 *       a write gives si_code POLL_IN, si_band POLLIN|POLLRDNORM, si_fd =
 *       the fd; filling the FIFO (O_NONBLOCK writes until EAGAIN) and then
 *       reading 1000 bytes gives si_code POLL_OUT, si_band POLLOUT|
 *       POLLWRNORM; then the release check as above (by si_fd).  Every
 *       signal must name our fd.  --external N: as for signal, every signal
 *       checked, at least one POLL_IN.
 *   fasync_demo thread DEV
 *       F_SETOWN_EX F_OWNER_TID: with the signal unblocked in every thread,
 *       only the owner thread runs the handler (gettid() in the handler):
 *       rounds owned by thread B, thread C and the main thread; then
 *       F_OWNER_PID (any thread).  F_GETOWN_EX reads back what was set.
 *   fasync_demo DEV [all]   signal, siginfo and thread, each in a fresh process
 *   --counters              print the driver's sysfs counters before/after
 *
 * Prints "ok <subcommand> ..." and exits 0, or exits non-zero with a message
 * on stderr at the first deviation; every wait is bounded (10 s for a
 * signal), and a watchdog ends a hang (exit 3).
 *
 * Kernel behaviour relied on (6.1 fs/fcntl.c): with F_SETSIG nonzero,
 * kill_fasync(..., POLL_IN/POLL_OUT) sends the signal with si_code = the
 * reason, si_band from band_table (POLL_IN: EPOLLIN|EPOLLRDNORM; POLL_OUT:
 * EPOLLOUT|EPOLLWRNORM|EPOLLWRBAND) and si_fd = the fd O_ASYNC was set
 * on; with no F_SETSIG a plain SIGIO without siginfo.  __fput() removes a
 * file from the fasync list at release.  A driver may send more signals
 * than the minimum (e.g. POLL_OUT when a write completes); extra ones are
 * allowed, missing or wrongly addressed ones are not.
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>

#define SIG_RT		(SIGRTMIN + 1)
#define SIG_SENTINEL	(SIGRTMIN + 3)
#define MAXREC		4096

static const char *const subs[] = { "all", "signal", "siginfo", "thread", NULL };

static const char usage[] =
	"usage: fasync_demo signal|siginfo|thread DEV [--external N --ready FILE] [--counters]\n"
	"       fasync_demo DEV [all]\n";

/* ------------------------------------------------------------ signal records */

struct rec {
	int signo, code, fd;
	long band;
	pid_t tid;
};

static struct rec recs[MAXREC];
static volatile int nrec;		/* records written */
static volatile sig_atomic_t sigio_count, sentinel_count;

static void on_siginfo(int sig, siginfo_t *si, void *uc)
{
	int i = nrec;

	(void)uc;
	if (i < MAXREC) {
		recs[i].signo = sig;
		recs[i].code = si->si_code;
		recs[i].fd = si->si_fd;
		recs[i].band = si->si_band;
		recs[i].tid = (pid_t)syscall(SYS_gettid);
		__atomic_store_n(&nrec, i + 1, __ATOMIC_RELEASE);
	}
	if (sig == SIG_SENTINEL)
		sentinel_count++;
}

static void on_sigio(int sig)
{
	(void)sig;
	sigio_count++;
}

static void set_siginfo_handler(int sig)
{
	struct sigaction sa = { .sa_sigaction = on_siginfo,
				.sa_flags = SA_SIGINFO | SA_RESTART };

	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL))
		die_errno("sigaction(%d)", sig);
}

/* Wait (bounded) until *@counter differs from @before. */
static void wait_change(volatile sig_atomic_t *counter, int before, const char *what)
{
	double end = now() + EVENT_TIMEOUT_MS / 1e3;

	while (*counter == before) {
		if (now() > end)
			die("%s: no signal within %d ms", what, EVENT_TIMEOUT_MS);
		sleep_ms(1);
	}
}

/* Index of the first record from @from on with si_code @code (and fd @fd
 * unless -1), waiting for it (bounded). */
static int wait_rec(int from, int code, int fd, const char *what)
{
	double end = now() + EVENT_TIMEOUT_MS / 1e3;

	for (;;) {
		int n = __atomic_load_n(&nrec, __ATOMIC_ACQUIRE);

		for (int i = from; i < n; i++)
			if (recs[i].code == code && (fd < 0 || recs[i].fd == fd))
				return i;
		if (n >= MAXREC)
			die("%s: more than %d signals", what, MAXREC);
		if (now() > end)
			die("%s: no signal with si_code %d%s within %d ms (%d other signals)", what,
			    code, fd >= 0 ? " for our fd" : "", EVENT_TIMEOUT_MS, n - from);
		sleep_ms(1);
	}
}

/* Arm @fd: owner this process, O_ASYNC (and O_NONBLOCK), F_SETSIG @sig
 * (0: plain SIGIO). */
static void arm_fd(int fd, int sig)
{
	int fl;

	if (fcntl(fd, F_SETOWN, getpid()))
		die_errno("fcntl(F_SETOWN)");
	if (fcntl(fd, F_GETOWN) != getpid())
		die("F_GETOWN returned %d, expected %d", fcntl(fd, F_GETOWN), getpid());
	if (fcntl(fd, F_SETSIG, sig))
		die_errno("fcntl(F_SETSIG, %d)", sig);
	if (fcntl(fd, F_GETSIG) != sig)
		die("F_GETSIG returned %d, expected %d", fcntl(fd, F_GETSIG), sig);
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_ASYNC | O_NONBLOCK))
		die_errno("fcntl(F_SETFL, O_ASYNC)");
	if (!(fcntl(fd, F_GETFL) & O_ASYNC))
		die("O_ASYNC did not stick (F_GETFL %#x): the driver has no fasync",
		    fcntl(fd, F_GETFL));
}

/* O_NONBLOCK reads of @fd until EAGAIN, checking stream @seed from *@got;
 * returns the bytes read now. */
static size_t drain_fd(int fd, uint32_t seed, size_t *got, size_t total, const char *what)
{
	static uint8_t buf[65536];
	size_t now_read = 0;
	ssize_t r;

	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		if (*got + r > total)
			die("%s: %zu bytes arrived, only %zu were sent", what, *got + r, total);
		stream_check(buf, r, seed, *got, what);
		*got += r;
		now_read += r;
	}
	if (r == 0)
		die("%s: read returned 0", what);
	if (errno != EAGAIN)
		die_errno("%s: O_NONBLOCK read", what);
	return now_read;
}

/*
 * Release: @old (armed, number @old_fd) is closed; a second fd armed with
 * the sentinel signal must be signalled by a write, and nothing may come
 * for the closed one.  @sigio_before: sigio_count when @old was closed
 * (plain SIGIO mode, -1: F_SETSIG mode, records checked by si_fd).
 */
static void release_check(int old_fd, int have_sigio, const char *what)
{
	int sentinel = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	int fd_w = xopen(opt.dev, O_WRONLY);
	int from, s_before, io_before;
	size_t got = 0;

	close(old_fd);
	sleep_ms(50);		/* signals of earlier data settle */
	from = nrec;
	io_before = sigio_count;
	s_before = sentinel_count;
	set_siginfo_handler(SIG_SENTINEL);
	arm_fd(sentinel, SIG_SENTINEL);
	write_stream(fd_w, 100, 0x5e17, 0, "write after the release");
	wait_change(&sentinel_count, s_before, "the sentinel fd after the release");
	sleep_ms(100);
	if (have_sigio && sigio_count != io_before)
		die("%s: %d SIGIO(s) came after the fd was closed", what,
		    sigio_count - io_before);
	for (int i = from; i < nrec; i++)
		if (recs[i].signo != SIG_SENTINEL || recs[i].fd != sentinel)
			die("%s: after the release a signal %d (si_fd %d, si_code %d) came; only "
			    "the sentinel fd %d may be signalled (closed fd %d)", what,
			    recs[i].signo, recs[i].fd, recs[i].code, sentinel, old_fd);
	drain_fd(sentinel, 0x5e17, &got, 100, "bytes after the release");
	if (got != 100)
		die("after the release: read %zu of 100 bytes", got);
	close(sentinel);
	close(fd_w);
}

/* ------------------------------------------------------------ signal */

static int cmd_signal(void)
{
	static const size_t bursts[] = { 1000, 20000, 5 };
	uint32_t seed = opt.external ? HOST_SEED : 0x5160;
	size_t total = 0, got = 0, nb = sizeof(bursts) / sizeof(bursts[0]);
	int fd, fd_w = -1, wakeups = 0;

	drain(opt.dev);
	print_counters(opt.dev, "before");
	/* the book's way: signal(), F_SETOWN, F_SETFL | FASYNC */
	if (signal(SIGIO, on_sigio) == SIG_ERR)
		die_errno("signal(SIGIO)");
	fd = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	if (fcntl(fd, F_SETOWN, getpid()))
		die_errno("fcntl(F_SETOWN)");
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | FASYNC))
		die_errno("fcntl(F_SETFL, FASYNC)");
	if (!(fcntl(fd, F_GETFL) & FASYNC))
		die("FASYNC did not stick: the driver has no fasync");
	if (fcntl(fd, F_GETOWN) != getpid())
		die("F_GETOWN returned %d", fcntl(fd, F_GETOWN));

	if (opt.external) {
		total = opt.external;
		armed();
		while (got < total) {
			int before = sigio_count;

			drain_fd(fd, seed, &got, total, "host bytes");
			if (got >= total)
				break;
			wait_change(&sigio_count, before, "waiting for host bytes");
			wakeups++;
		}
		print_counters(opt.dev, "after");
		printf("ok signal: %zu bytes from the host, %d SIGIO(s), crc32=%08x\n", total,
		       (int)sigio_count, stream_crc(seed, total));
		return 0;
	}

	fd_w = xopen(opt.dev, O_WRONLY);
	sleep_ms(50);
	if (sigio_count)
		warn("%d SIGIO(s) before anything was written", (int)sigio_count);
	for (size_t b = 0; b < nb; b++) {
		int before = sigio_count;
		size_t start = total;

		size_t n = fit(bursts[b], fifo_depth(opt.dev));

		write_stream(fd_w, n, seed, total, "burst");
		total += n;
		/* the handler must run before we look */
		wait_change(&sigio_count, before, "SIGIO after a burst");
		wakeups++;
		while (got < total) {
			int again = sigio_count;

			drain_fd(fd, seed, &got, total, "burst read back");
			if (got >= total)
				break;
			wait_change(&sigio_count, again, "SIGIO for the rest of a burst");
		}
		if (got != total)
			die("burst %zu: read %zu bytes, %zu written", b, got - start, total - start);
	}
	close(fd_w);
	release_check(fd, 1, "release");
	expect_empty(opt.dev, "at the end");
	print_counters(opt.dev, "after");
	printf("ok signal: %zu bursts, %zu bytes, %d SIGIO(s), none after close, crc32=%08x\n",
	       nb, total, (int)sigio_count, stream_crc(seed, total));
	return 0;
}

/* ------------------------------------------------------------ siginfo */

static void check_rec(int i, int fd, const char *what)
{
	struct rec *r = &recs[i];

	if (r->signo != SIG_RT)
		die("%s: signal %d, expected SIGRTMIN+1 (%d)", what, r->signo, SIG_RT);
	if (r->fd != fd)
		die("%s: si_fd %d, expected %d", what, r->fd, fd);
	switch (r->code) {
	case POLL_IN:
		if ((r->band & (POLLIN | POLLRDNORM)) != (POLLIN | POLLRDNORM))
			die("%s: POLL_IN with si_band %#lx, expected POLLIN|POLLRDNORM", what,
			    r->band);
		break;
	case POLL_OUT:
		if ((r->band & (POLLOUT | POLLWRNORM)) != (POLLOUT | POLLWRNORM))
			die("%s: POLL_OUT with si_band %#lx, expected POLLOUT|POLLWRNORM", what,
			    r->band);
		break;
	default:
		die("%s: si_code %d (si_band %#lx), expected POLL_IN (%d) or POLL_OUT (%d)",
		    what, r->code, r->band, POLL_IN, POLL_OUT);
	}
}

static void check_recs(int from, int fd, const char *what)
{
	for (int i = from; i < nrec; i++)
		check_rec(i, fd, what);
}

static int cmd_siginfo(void)
{
	uint32_t seed = opt.external ? HOST_SEED : 0x51f0;
	size_t total, got = 0, filled = 0, depth = fifo_depth(opt.dev);
	uint8_t chunk[4096];
	int fd, fd_w, i_in, i_out, from, n_in = 0, n_out = 0;
	ssize_t r;

	drain(opt.dev);
	print_counters(opt.dev, "before");
	set_siginfo_handler(SIG_RT);
	fd = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	arm_fd(fd, SIG_RT);

	if (opt.external) {
		total = opt.external;
		armed();
		while (got < total) {
			int before = nrec;

			drain_fd(fd, seed, &got, total, "host bytes");
			if (got >= total)
				break;
			wait_rec(before, POLL_IN, fd, "waiting for host bytes");
		}
		sleep_ms(50);
		check_recs(0, fd, "signal for host bytes");
		for (int i = 0; i < nrec; i++)
			n_in += recs[i].code == POLL_IN;
		if (!n_in)
			die("all %zu host bytes came but no POLL_IN signal", total);
		print_counters(opt.dev, "after");
		printf("ok siginfo: %zu bytes from the host, %d POLL_IN signals (si_fd, si_band "
		       "checked), crc32=%08x\n", total, n_in, stream_crc(seed, total));
		return 0;
	}

	/* POLL_IN */
	fd_w = xopen(opt.dev, O_WRONLY | O_NONBLOCK);
	sleep_ms(50);
	if (nrec)
		warn("%d signal(s) before anything was written", nrec);
	from = nrec;
	fill(chunk, 500, seed, 0);
	if (write(fd_w, chunk, 500) != 500)
		die_errno("write of 500 bytes");
	i_in = wait_rec(from, POLL_IN, fd, "POLL_IN after a write");
	check_rec(i_in, fd, "POLL_IN after a write");
	total = 500;
	drain_fd(fd, seed, &got, total, "the 500 bytes");
	if (got != total)
		die("read %zu of 500 bytes after POLL_IN", got);

	/* fill the FIFO; then a read frees space: POLL_OUT */
	seed++;
	got = 0;
	for (;;) {
		fill(chunk, sizeof(chunk), seed, filled);
		r = write(fd_w, chunk, sizeof(chunk));
		if (r < 0 && errno == EAGAIN)
			break;
		if (r <= 0)
			die_errno("O_NONBLOCK write filling the FIFO after %zu bytes", filled);
		filled += r;
		if (filled > (64u << 20))
			die("wrote %zu bytes without EAGAIN", filled);
	}
	if (depth && filled != depth)
		die("filled %zu bytes, the FIFO is %zu deep", filled, depth);
	sleep_ms(100);		/* POLL_IN signals of the fill settle */
	from = nrec;
	r = read(fd, chunk, 1000);
	if (r != 1000)
		die_errno("read of 1000 bytes from the full FIFO returned %zd", r);
	stream_check(chunk, 1000, seed, 0, "first 1000 bytes of the full FIFO");
	got = 1000;
	i_out = wait_rec(from, POLL_OUT, fd, "POLL_OUT after a read freed space");
	check_rec(i_out, fd, "POLL_OUT after a read freed space");
	drain_fd(fd, seed, &got, filled, "the rest of the full FIFO");
	if (got != filled)
		die("read back %zu of %zu bytes", got, filled);
	close(fd_w);
	sleep_ms(50);
	check_recs(0, fd, "signal");
	for (int i = 0; i < nrec; i++) {
		n_in += recs[i].code == POLL_IN;
		n_out += recs[i].code == POLL_OUT;
	}
	release_check(fd, 0, "release");
	expect_empty(opt.dev, "at the end");
	print_counters(opt.dev, "after");
	printf("ok siginfo: POLL_IN (si_band %#lx) and POLL_OUT (si_band %#lx) with si_fd %d; "
	       "%d POLL_IN + %d POLL_OUT signals; none after close; filled %zu\n",
	       recs[i_in].band, recs[i_out].band, recs[i_in].fd, n_in, n_out, filled);
	return 0;
}

/* ------------------------------------------------------------ thread */

static volatile int stop_threads;
static pid_t tids[2];

static void *idler(void *arg)
{
	int k = (int)(intptr_t)arg;

	__atomic_store_n(&tids[k], xgettid(), __ATOMIC_RELEASE);
	while (!__atomic_load_n(&stop_threads, __ATOMIC_ACQUIRE))
		sleep_ms(1);
	return NULL;
}

static int cmd_thread(void)
{
	struct f_owner_ex own, back;
	pthread_t th[2];
	uint32_t seed = 0x7d;
	size_t got = 0, total = 0;
	int fd, fd_w;
	pid_t main_tid = xgettid();
	const char *names[] = { "thread B", "thread C", "the main thread", "the process" };

	drain(opt.dev);
	print_counters(opt.dev, "before");
	set_siginfo_handler(SIG_RT);
	for (int k = 0; k < 2; k++)
		if (pthread_create(&th[k], NULL, idler, (void *)(intptr_t)k))
			die("pthread_create");
	while (!__atomic_load_n(&tids[0], __ATOMIC_ACQUIRE) ||
	       !__atomic_load_n(&tids[1], __ATOMIC_ACQUIRE))
		sleep_ms(1);
	fd = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	fd_w = xopen(opt.dev, O_WRONLY);
	arm_fd(fd, SIG_RT);

	for (int round = 0; round < 4; round++) {
		pid_t target = round < 2 ? tids[round] : main_tid;
		int from;

		if (round < 3) {
			own.type = F_OWNER_TID;
			own.pid = target;
		} else {
			own.type = F_OWNER_PID;
			own.pid = getpid();
		}
		if (fcntl(fd, F_SETOWN_EX, &own))
			die_errno("F_SETOWN_EX (%s)", names[round]);
		memset(&back, 0, sizeof(back));
		if (fcntl(fd, F_GETOWN_EX, &back))
			die_errno("F_GETOWN_EX");
		if (back.type != own.type || back.pid != own.pid)
			die("F_GETOWN_EX gave type %d pid %d, set type %d pid %d", back.type,
			    back.pid, own.type, own.pid);
		sleep_ms(20);
		from = nrec;
		write_stream(fd_w, 100 + round, seed, total, "write");
		total += 100 + round;
		wait_rec(from, POLL_IN, fd, names[round]);
		sleep_ms(50);	/* any further signals of this write */
		for (int i = from; i < nrec; i++) {
			check_rec(i, fd, names[round]);
			if (round < 3 && recs[i].tid != target)
				die("owner %s (tid %d): the handler ran in tid %d (main %d, B %d, C %d)",
				    names[round], target, recs[i].tid, main_tid, tids[0], tids[1]);
			if (round == 3 && recs[i].tid != main_tid && recs[i].tid != tids[0] &&
			    recs[i].tid != tids[1])
				die("owner the process: handler ran in unknown tid %d", recs[i].tid);
		}
		drain_fd(fd, seed, &got, total, "bytes of the round");
		if (got != total)
			die("%s: read %zu of %zu bytes", names[round], got, total);
	}
	__atomic_store_n(&stop_threads, 1, __ATOMIC_RELEASE);
	for (int k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	close(fd);
	close(fd_w);
	expect_empty(opt.dev, "at the end");
	print_counters(opt.dev, "after");
	printf("ok thread: F_OWNER_TID B (%d), C (%d), main (%d) each got its signals; "
	       "F_OWNER_PID ok\n", tids[0], tids[1], main_tid);
	return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	const char *sub;

	prog = "fasync_demo";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, subs, usage);
	sub = opt.sub ? opt.sub : "all";
	cmd = sub;
	if (opt.external && strcmp(sub, "signal") && strcmp(sub, "siginfo"))
		die("--external is for the signal and siginfo subcommands");
	watchdog(WATCHDOG_SECONDS);
	if (!strcmp(sub, "all"))
		return run_all(subs);
	if (!strcmp(sub, "signal"))
		return cmd_signal();
	if (!strcmp(sub, "siginfo"))
		return cmd_siginfo();
	return cmd_thread();
}

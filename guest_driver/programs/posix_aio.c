// SPDX-License-Identifier: GPL-2.0
/*
 * posix_aio - POSIX AIO (glibc 2.36, librt is in libc) against a fifolab
 * FIFO, run inside the guest.
 *
 *   posix_aio DEV [all]       every subcommand below, each in a fresh process
 *   posix_aio DEV basic       aio_write/aio_read one at a time and four in
 *                             flight per fd; aio_error 0, aio_return = size,
 *                             data verified
 *   posix_aio DEV pending [--external N --ready FILE]
 *                             aio_read of an EMPTY FIFO: aio_error stays
 *                             EINPROGRESS, aio_suspend with a 300 ms timeout
 *                             fails with EAGAIN; then a write through a second
 *                             fd (or, with --external, N bytes the harness
 *                             injects from the host once FILE exists; nothing
 *                             is written then) completes it: aio_suspend 0,
 *                             aio_error 0, aio_return = bytes, data verified
 *   posix_aio DEV cancel      aio_cancel: AIO_ALLDONE / AIO_CANCELED /
 *                             AIO_NOTCANCELED, as glibc really reports them
 *   posix_aio DEV listio      lio_listio LIO_WAIT (writes, then reads) and
 *                             LIO_NOWAIT with a list SIGEV_SIGNAL
 *   posix_aio DEV notify      SIGEV_SIGNAL (SA_SIGINFO handler: si_code
 *                             SI_ASYNCIO, si_value = the aiocb) and
 *                             SIGEV_THREAD (runs in another thread, gets the
 *                             aiocb, aio_error is already 0 there)
 *   --counters                print the driver's sysfs counters before/after
 *
 * Prints "ok <subcommand> ..." and exits 0, or exits non-zero with a message
 * on stderr at the first deviation; a watchdog ends a hang (exit 3).
 *
 * glibc's POSIX AIO is user space: helper threads doing pread()/pwrite()
 * (a stream device answers ESPIPE and glibc retries with read()/write()).
 * Requests on one fd run one at a time, in submission order (equal
 * priority); different fds run in parallel threads.  What aio_cancel
 * reports follows from that (sysdeps/pthread/aio_cancel.c, aio_misc.c):
 *   - the request a helper thread has taken (running == allocated) cannot be
 *     cancelled: AIO_NOTCANCELED, it stays EINPROGRESS (here: a read blocked
 *     in the driver on an empty FIFO) and completes normally later;
 *   - a request queued behind it on the same fd is removed: AIO_CANCELED,
 *     aio_error ECANCELED, aio_return -1;
 *   - aio_cancel(fd, NULL) with one running and others queued cancels the
 *     queued ones and returns AIO_NOTCANCELED;
 *   - a finished request, or aio_cancel(fd, NULL) with nothing queued:
 *     AIO_ALLDONE;  aiocb->aio_fildes != fd: -1/EINVAL;  a bad fd: -1/EBADF.
 * A request is "allocated" the moment aio_read returns only if glibc starts
 * a new thread for it; with an idle helper thread around it is merely
 * queued for a moment.  So main() calls aio_init() with aio_idle_time = -1:
 * helper threads exit as soon as they run out of work, none is ever idle,
 * and the first request on an fd is always allocated at once - the cancel
 * cases are deterministic, not timing-dependent.
 *
 * Data: a position-dependent pattern per stream (self-written) or the host
 * pattern (i * 7 + 3) % 251 with --external; every byte is checked at its
 * stream offset.  A read of the FIFO returns what is there (>= 1 byte), so a
 * read racing a write may be short; the rest is read and checked too.
 */
#include "common.h"

#include <aio.h>
#include <pthread.h>

#define POSIX_AIO_SIG	(SIGRTMIN + 1)
#define LIST_SIG	(SIGRTMIN + 2)

static const char *const subs[] = {
	"all", "basic", "pending", "cancel", "listio", "notify", NULL
};

static const char usage[] =
	"usage: posix_aio DEV [all|basic|pending|cancel|listio|notify] [--counters]\n"
	"       posix_aio DEV pending --external N --ready FILE\n";

static void prep(struct aiocb *cb, int fd, void *buf, size_t n)
{
	memset(cb, 0, sizeof(*cb));
	cb->aio_fildes = fd;
	cb->aio_buf = buf;
	cb->aio_nbytes = n;
	cb->aio_offset = 0;
	cb->aio_sigevent.sigev_notify = SIGEV_NONE;
}

static void xaio_read(struct aiocb *cb, const char *what)
{
	if (aio_read(cb))
		die_errno("aio_read (%s)", what);
}

static void xaio_write(struct aiocb *cb, const char *what)
{
	if (aio_write(cb))
		die_errno("aio_write (%s)", what);
}

/* Wait (aio_suspend, bounded) until @cb is no longer EINPROGRESS; return
 * aio_return, dying on an error status. */
static ssize_t complete(struct aiocb *cb, const char *what)
{
	const struct aiocb *list[1] = { cb };
	double end = now() + EVENT_TIMEOUT_MS / 1e3;
	int err;
	ssize_t r;

	while ((err = aio_error(cb)) == EINPROGRESS) {
		struct timespec ts = { 1, 0 };

		if (aio_suspend(list, 1, &ts) && errno != EAGAIN && errno != EINTR)
			die_errno("aio_suspend (%s)", what);
		if (now() > end)
			die("%s: still EINPROGRESS after %d ms", what, EVENT_TIMEOUT_MS);
	}
	if (err)
		die("%s: aio_error is %d (%s), expected 0", what, err, strerror(err));
	r = aio_return(cb);
	if (r < 0)
		die("%s: aio_error 0 but aio_return %zd", what, r);
	return r;
}

static void expect_inprogress(struct aiocb *cb, const char *what)
{
	int err = aio_error(cb);

	if (err != EINPROGRESS)
		die("%s: aio_error is %d (%s), expected EINPROGRESS", what, err,
		    err > 0 ? strerror(err) : "done");
}

/* ------------------------------------------------------------ basic */

static int cmd_basic(void)
{
	size_t sizes[4] = { 1, 4095, 3000, 12345 };
	struct aiocb w, r, ws[4], rs[4];
	uint8_t *wb, *rb, *wbs[4], *rbs[4];
	const size_t n = fit(5000, fifo_depth(opt.dev));
	uint32_t seed = 0xa10b;
	uint64_t off = 0;
	int fd_w, fd_r;
	ssize_t ret;

	fit_sizes(sizes, 4, fifo_depth(opt.dev));
	drain(opt.dev);
	fd_w = xopen(opt.dev, O_WRONLY);
	fd_r = xopen(opt.dev, O_RDONLY);

	/* one write, then one read of the same size: it is all there */
	wb = map_buf(n);
	rb = map_buf(n);
	fill(wb, n, seed, 0);
	prep(&w, fd_w, wb, n);
	xaio_write(&w, "single");
	if ((ret = complete(&w, "aio_write")) != (ssize_t)n)
		die("aio_write of %zu bytes: aio_return %zd", n, ret);
	prep(&r, fd_r, rb, n);
	xaio_read(&r, "single");
	if ((ret = complete(&r, "aio_read")) != (ssize_t)n)
		die("aio_read of %zu bytes with %zu in the FIFO: aio_return %zd", n, n, ret);
	stream_check(rb, n, seed, 0, "aio_read");
	expect_empty(opt.dev, "after one aio_write + aio_read");

	/* four writes in flight on one fd run in order; then four reads */
	seed++;
	for (int i = 0; i < 4; i++) {
		wbs[i] = map_buf(sizes[i]);
		rbs[i] = map_buf(sizes[i]);
		fill(wbs[i], sizes[i], seed, off);
		off += sizes[i];
		prep(&ws[i], fd_w, wbs[i], sizes[i]);
		xaio_write(&ws[i], "4 in flight");
	}
	for (int i = 0; i < 4; i++)
		if ((ret = complete(&ws[i], "aio_write (4 in flight)")) != (ssize_t)sizes[i])
			die("aio_write %d of %zu bytes: aio_return %zd", i, sizes[i], ret);
	for (int i = 0; i < 4; i++) {
		prep(&rs[i], fd_r, rbs[i], sizes[i]);
		xaio_read(&rs[i], "4 in flight");
	}
	off = 0;
	for (int i = 0; i < 4; i++) {
		if ((ret = complete(&rs[i], "aio_read (4 in flight)")) != (ssize_t)sizes[i])
			die("aio_read %d of %zu bytes (all in the FIFO): aio_return %zd",
			    i, sizes[i], ret);
		stream_check(rbs[i], sizes[i], seed, off, "aio_read (4 in flight)");
		off += sizes[i];
	}
	expect_empty(opt.dev, "after 4 aio_writes + 4 aio_reads");
	close(fd_w);
	close(fd_r);
	printf("ok basic: 1+4 aio_write, 1+4 aio_read, %llu bytes verified\n",
	       (unsigned long long)(off + n));
	return 0;
}

/* ------------------------------------------------------------ pending */

/* Read until @total bytes of stream @seed have arrived, @got of them already
 * in place; each further read is an aio_read too. */
static void aio_collect(int fd, size_t got, size_t total, uint32_t seed)
{
	uint8_t *b = map_buf(65536);
	struct aiocb cb;

	while (got < total) {
		size_t want = total - got < 65536 ? total - got : 65536;
		ssize_t r;

		prep(&cb, fd, b, want);
		xaio_read(&cb, "the rest");
		r = complete(&cb, "aio_read of the rest");
		if (r == 0)
			die("aio_read returned 0 after %zu of %zu bytes", got, total);
		stream_check(b, r, seed, got, "aio_read of the rest");
		got += r;
	}
	munmap(b, 65536);
}

static int cmd_pending(void)
{
	const struct aiocb *list[1];
	size_t total = opt.external ? opt.external : fit(3000, fifo_depth(opt.dev));
	uint32_t seed = opt.external ? HOST_SEED : 0xbe9d;
	struct timespec ts = { 0, 300 * 1000000L };
	uint8_t *rb = map_buf(4096);
	struct aiocb r;
	double t0;
	ssize_t ret;
	int fd_r, fd_w = -1;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	if (!opt.external)
		fd_w = xopen(opt.dev, O_WRONLY);
	print_counters(opt.dev, "before");

	prep(&r, fd_r, rb, 4096);
	xaio_read(&r, "of an empty FIFO");
	expect_inprogress(&r, "aio_read of an empty FIFO, at once");
	sleep_ms(200);
	expect_inprogress(&r, "aio_read of an empty FIFO, 200 ms later");
	list[0] = &r;
	t0 = now();
	if (aio_suspend(list, 1, &ts) == 0)
		die("aio_suspend with a 300 ms timeout returned 0 with nothing completed");
	if (errno != EAGAIN)
		die_errno("aio_suspend with a 300 ms timeout: expected EAGAIN");
	if (now() - t0 < 0.25)
		die("aio_suspend with a 300 ms timeout returned after %.0f ms", (now() - t0) * 1e3);
	expect_inprogress(&r, "aio_read of an empty FIFO after aio_suspend timed out");

	if (opt.external) {
		armed();
	} else {
		write_stream(fd_w, total, seed, 0, "write completing the aio_read");
	}
	ts.tv_sec = EVENT_TIMEOUT_MS / 1000;
	ts.tv_nsec = 0;
	if (aio_suspend(list, 1, &ts))
		die_errno("aio_suspend after the data came");
	ret = complete(&r, "the pending aio_read");
	if (ret < 1 || (size_t)ret > total)
		die("the pending aio_read returned %zd, %zu bytes were sent", ret, total);
	stream_check(rb, ret, seed, 0, "the pending aio_read");
	aio_collect(fd_r, ret, total, seed);
	if (!opt.external)
		expect_empty(opt.dev, "at the end");
	print_counters(opt.dev, "after");
	printf("ok pending: EINPROGRESS, aio_suspend EAGAIN, then %zd + %zu bytes %s, crc32=%08x\n",
	       ret, total - ret, opt.external ? "from the host" : "written",
	       stream_crc(seed, total));
	close(fd_r);
	if (fd_w >= 0)
		close(fd_w);
	return 0;
}

/* ------------------------------------------------------------ cancel */

static const char *cancel_name(int r)
{
	switch (r) {
	case AIO_CANCELED: return "AIO_CANCELED";
	case AIO_NOTCANCELED: return "AIO_NOTCANCELED";
	case AIO_ALLDONE: return "AIO_ALLDONE";
	case -1: return "-1";
	}
	return "?";
}

static void expect_cancel(int fd, struct aiocb *cb, int want, const char *what)
{
	int r = aio_cancel(fd, cb);

	if (r != want)
		die("%s: aio_cancel returned %s (%d), expected %s (errno %d)", what,
		    cancel_name(r), r, cancel_name(want), r == -1 ? errno : 0);
}

static void expect_cancelled(struct aiocb *cb, const char *what)
{
	int err = aio_error(cb);
	ssize_t r;

	if (err != ECANCELED)
		die("%s: aio_error is %d (%s), expected ECANCELED", what, err, strerror(err));
	r = aio_return(cb);
	if (r != -1)
		die("%s: aio_return of a cancelled request is %zd, expected -1", what, r);
}

static int cmd_cancel(void)
{
	uint8_t *ba = map_buf(4096), *bb = map_buf(4096), *bc = map_buf(4096);
	struct aiocb a, b, c, other;
	uint32_t seed = 0xcace1;
	int fd_r, fd_w, r;
	ssize_t ret;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	fd_w = xopen(opt.dev, O_WRONLY);

	/* nothing queued on the fd */
	expect_cancel(fd_r, NULL, AIO_ALLDONE, "aio_cancel(fd, NULL), no requests");

	/* A runs (a helper thread blocks in read()), B and C queue behind it */
	prep(&a, fd_r, ba, 4096);
	prep(&b, fd_r, bb, 4096);
	prep(&c, fd_r, bc, 4096);
	xaio_read(&a, "A");
	xaio_read(&b, "B");
	xaio_read(&c, "C");
	expect_inprogress(&a, "A");
	expect_inprogress(&b, "B");
	expect_inprogress(&c, "C");

	/* bad arguments */
	r = aio_cancel(fd_w, &b);
	if (r != -1 || errno != EINVAL)
		die("aio_cancel(other fd, &B): returned %d errno %d, expected -1/EINVAL", r, errno);
	r = aio_cancel(987, NULL);
	if (r != -1 || errno != EBADF)
		die("aio_cancel(bad fd, NULL): returned %d errno %d, expected -1/EBADF", r, errno);

	/* B is only queued: cancelled */
	expect_cancel(fd_r, &b, AIO_CANCELED, "aio_cancel(&B), queued behind A");
	expect_cancelled(&b, "B after aio_cancel");
	/* A is running in a helper thread: not cancelled, still in progress */
	expect_cancel(fd_r, &a, AIO_NOTCANCELED, "aio_cancel(&A), running");
	expect_inprogress(&a, "A after AIO_NOTCANCELED");
	expect_inprogress(&c, "C after cancelling A and B");
	/* all of the fd: C (queued) goes, A (running) stays */
	expect_cancel(fd_r, NULL, AIO_NOTCANCELED, "aio_cancel(fd, NULL), A running, C queued");
	expect_cancelled(&c, "C after aio_cancel(fd, NULL)");
	expect_inprogress(&a, "A after aio_cancel(fd, NULL)");

	/* the write completes A, normally */
	write_stream(fd_w, 100, seed, 0, "write completing A");
	ret = complete(&a, "A after the write");
	if (ret < 1 || ret > 100)
		die("A returned %zd after a 100-byte write", ret);
	stream_check(ba, ret, seed, 0, "A");
	if (ret < 100)
		read_stream(fd_r, 100 - ret, seed, ret, "the rest after A");

	/* finished: nothing to cancel */
	expect_cancel(fd_r, &a, AIO_ALLDONE, "aio_cancel(&A), finished");
	expect_cancel(fd_r, NULL, AIO_ALLDONE, "aio_cancel(fd, NULL), all finished");

	/* a finished write, too */
	fill(ba, 10, seed + 1, 0);
	prep(&other, fd_w, ba, 10);
	xaio_write(&other, "10 bytes");
	if (complete(&other, "aio_write") != 10)
		die("aio_write of 10 bytes: short");
	expect_cancel(fd_w, &other, AIO_ALLDONE, "aio_cancel of a finished aio_write");
	read_stream(fd_r, 10, seed + 1, 0, "the 10 bytes");

	/* the cancelled reads took nothing */
	expect_empty(opt.dev, "at the end");
	close(fd_r);
	close(fd_w);
	printf("ok cancel: ALLDONE (idle fd, finished), CANCELED (queued, ECANCELED/-1), "
	       "NOTCANCELED (running; fd-wide with one queued), EINVAL, EBADF\n");
	return 0;
}

/* ------------------------------------------------------------ listio */

static int cmd_listio(void)
{
	size_t sizes[2] = { 3000, 5000 }, nw = fit(2000, fifo_depth(opt.dev));
	struct aiocb w[2], r[2], nop, lr, lw;
	struct aiocb *wl[3] = { &w[0], &nop, &w[1] }, *rl[2] = { &r[0], &r[1] };
	struct aiocb *nl[2] = { &lr, &lw };
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL };
	uint8_t *wb[2], *rb[2], *lrb = map_buf(4096), *lwb = map_buf(2000);
	uint32_t seed = 0x1150;
	struct timespec ts = { EVENT_TIMEOUT_MS / 1000, 0 };
	siginfo_t si;
	sigset_t set;
	uint64_t off = 0;
	int fd_r, fd_w, sig;
	ssize_t ret;

	fit_sizes(sizes, 2, fifo_depth(opt.dev));
	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	fd_w = xopen(opt.dev, O_WRONLY);

	/* LIO_WAIT: two writes (and a LIO_NOP) */
	for (int i = 0; i < 2; i++) {
		wb[i] = map_buf(sizes[i]);
		rb[i] = map_buf(sizes[i]);
		fill(wb[i], sizes[i], seed, off);
		off += sizes[i];
		prep(&w[i], fd_w, wb[i], sizes[i]);
		w[i].aio_lio_opcode = LIO_WRITE;
		prep(&r[i], fd_r, rb[i], sizes[i]);
		r[i].aio_lio_opcode = LIO_READ;
	}
	prep(&nop, fd_w, wb[0], 1);
	nop.aio_lio_opcode = LIO_NOP;
	if (lio_listio(LIO_WAIT, wl, 3, NULL))
		die_errno("lio_listio(LIO_WAIT, 2 writes + NOP)");
	for (int i = 0; i < 2; i++) {
		if (aio_error(&w[i]) != 0)
			die("LIO_WAIT returned but write %d has aio_error %d", i, aio_error(&w[i]));
		if ((ret = aio_return(&w[i])) != (ssize_t)sizes[i])
			die("LIO_WAIT write %d of %zu: aio_return %zd", i, sizes[i], ret);
	}

	/* LIO_WAIT: two reads on one fd, in list order; all bytes are there */
	if (lio_listio(LIO_WAIT, rl, 2, NULL))
		die_errno("lio_listio(LIO_WAIT, 2 reads)");
	off = 0;
	for (int i = 0; i < 2; i++) {
		if (aio_error(&r[i]) != 0)
			die("LIO_WAIT returned but read %d has aio_error %d", i, aio_error(&r[i]));
		if ((ret = aio_return(&r[i])) != (ssize_t)sizes[i])
			die("LIO_WAIT read %d of %zu (all in the FIFO): aio_return %zd",
			    i, sizes[i], ret);
		stream_check(rb[i], sizes[i], seed, off, "LIO_WAIT read");
		off += sizes[i];
	}
	expect_empty(opt.dev, "after the LIO_WAIT lists");

	/* LIO_NOWAIT: a read of the empty FIFO and a write; a signal when both
	 * are done, si_value = the list */
	sigemptyset(&set);
	sigaddset(&set, LIST_SIG);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		die_errno("sigprocmask");
	seed++;
	fill(lwb, nw, seed, 0);
	prep(&lr, fd_r, lrb, 4096);
	lr.aio_lio_opcode = LIO_READ;
	prep(&lw, fd_w, lwb, nw);
	lw.aio_lio_opcode = LIO_WRITE;
	sev.sigev_signo = LIST_SIG;
	sev.sigev_value.sival_ptr = nl;
	if (lio_listio(LIO_NOWAIT, nl, 2, &sev))
		die_errno("lio_listio(LIO_NOWAIT, read + write)");
	sig = sigtimedwait(&set, &si, &ts);
	if (sig < 0)
		die_errno("waiting for the LIO_NOWAIT list signal");
	if (si.si_code != SI_ASYNCIO)
		die("list signal: si_code %d, expected SI_ASYNCIO (%d)", si.si_code, SI_ASYNCIO);
	if (si.si_value.sival_ptr != (void *)nl)
		die("list signal: si_value %p, expected the list %p", si.si_value.sival_ptr,
		    (void *)nl);
	if (aio_error(&lr) || aio_error(&lw))
		die("list signal came with aio_error read %d, write %d",
		    aio_error(&lr), aio_error(&lw));
	if ((ret = aio_return(&lw)) != (ssize_t)nw)
		die("LIO_NOWAIT write: aio_return %zd, expected %zu", ret, nw);
	ret = aio_return(&lr);
	if (ret < 1 || ret > (ssize_t)nw)
		die("LIO_NOWAIT read: aio_return %zd after a %zu-byte write", ret, nw);
	stream_check(lrb, ret, seed, 0, "LIO_NOWAIT read");
	if (ret < (ssize_t)nw)
		read_stream(fd_r, nw - ret, seed, ret, "the rest after the LIO_NOWAIT read");
	expect_empty(opt.dev, "at the end");
	close(fd_r);
	close(fd_w);
	printf("ok listio: LIO_WAIT 2 writes + NOP, LIO_WAIT 2 reads, LIO_NOWAIT read+write "
	       "signalled (SI_ASYNCIO, list in si_value), LIO_NOWAIT read got %zd\n", ret);
	return 0;
}

/* ------------------------------------------------------------ notify */

static volatile sig_atomic_t sig_count;
static void *volatile sig_ptr;
static volatile int sig_code, sig_pid;

static void on_aio_signal(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	sig_ptr = si->si_value.sival_ptr;
	sig_code = si->si_code;
	sig_pid = si->si_pid;
	sig_count++;
}

static void wait_sig(int before, const char *what)
{
	double end = now() + EVENT_TIMEOUT_MS / 1e3;

	while (sig_count == before) {
		if (now() > end)
			die("%s: no SIGEV_SIGNAL notification within %d ms", what,
			    EVENT_TIMEOUT_MS);
		sleep_ms(1);
	}
}

static void check_sig(struct aiocb *cb, const char *what)
{
	if (sig_ptr != (void *)cb)
		die("%s: si_value %p, expected the aiocb %p", what, sig_ptr, (void *)cb);
	if (sig_code != SI_ASYNCIO)
		die("%s: si_code %d, expected SI_ASYNCIO (%d)", what, sig_code, SI_ASYNCIO);
	if (sig_pid != getpid())
		die("%s: si_pid %d, expected %d", what, sig_pid, getpid());
	if (aio_error(cb) != 0)
		die("%s: notified, but aio_error is %d", what, aio_error(cb));
}

static pthread_mutex_t th_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t th_cond = PTHREAD_COND_INITIALIZER;
static int th_done, th_err;
static pid_t th_tid;
static void *th_ptr;

static void on_aio_thread(union sigval sv)
{
	pthread_mutex_lock(&th_lock);
	th_ptr = sv.sival_ptr;
	th_tid = xgettid();
	th_err = aio_error(sv.sival_ptr);
	th_done++;
	pthread_cond_signal(&th_cond);
	pthread_mutex_unlock(&th_lock);
}

static int cmd_notify(void)
{
	struct sigaction sa = { .sa_sigaction = on_aio_signal, .sa_flags = SA_SIGINFO };
	size_t depth = fifo_depth(opt.dev), n1 = fit(5000, depth), n2 = fit(3000, depth),
	       n3 = fit(4000, depth);
	uint8_t *wb = map_buf(5000), *rb = map_buf(8192);
	uint32_t seed = 0x9071;
	struct aiocb w, r;
	struct timespec dl;
	int fd_r, fd_w, before, rc = 0;
	ssize_t ret, got;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	fd_w = xopen(opt.dev, O_WRONLY);
	if (sigaction(POSIX_AIO_SIG, &sa, NULL))
		die_errno("sigaction");

	/* SIGEV_SIGNAL on a write */
	fill(wb, n1, seed, 0);
	prep(&w, fd_w, wb, n1);
	w.aio_sigevent.sigev_notify = SIGEV_SIGNAL;
	w.aio_sigevent.sigev_signo = POSIX_AIO_SIG;
	w.aio_sigevent.sigev_value.sival_ptr = &w;
	before = sig_count;
	xaio_write(&w, "SIGEV_SIGNAL");
	wait_sig(before, "aio_write");
	check_sig(&w, "aio_write's SIGEV_SIGNAL");
	if ((ret = aio_return(&w)) != (ssize_t)n1)
		die("aio_write: aio_return %zd, expected %zu", ret, n1);
	read_stream(fd_r, n1, seed, 0, "the signalled write's bytes");

	/* SIGEV_SIGNAL on a read that waits for data */
	seed++;
	prep(&r, fd_r, rb, 8192);
	r.aio_sigevent.sigev_notify = SIGEV_SIGNAL;
	r.aio_sigevent.sigev_signo = POSIX_AIO_SIG;
	r.aio_sigevent.sigev_value.sival_ptr = &r;
	before = sig_count;
	xaio_read(&r, "SIGEV_SIGNAL");
	sleep_ms(100);
	if (sig_count != before)
		die("SIGEV_SIGNAL of a read of an empty FIFO came before any data");
	expect_inprogress(&r, "SIGEV_SIGNAL read of an empty FIFO");
	write_stream(fd_w, n2, seed, 0, "write completing the read");
	wait_sig(before, "aio_read");
	check_sig(&r, "aio_read's SIGEV_SIGNAL");
	got = aio_return(&r);
	if (got < 1 || got > (ssize_t)n2)
		die("signalled aio_read: aio_return %zd after a %zu-byte write", got, n2);
	stream_check(rb, got, seed, 0, "signalled aio_read");
	if (got < (ssize_t)n2)
		read_stream(fd_r, n2 - got, seed, got, "the rest");

	/* SIGEV_THREAD on a read that waits for data */
	seed++;
	prep(&r, fd_r, rb, 8192);
	r.aio_sigevent.sigev_notify = SIGEV_THREAD;
	r.aio_sigevent.sigev_notify_function = on_aio_thread;
	r.aio_sigevent.sigev_value.sival_ptr = &r;
	xaio_read(&r, "SIGEV_THREAD");
	sleep_ms(100);
	pthread_mutex_lock(&th_lock);
	if (th_done)
		die("SIGEV_THREAD of a read of an empty FIFO ran before any data");
	pthread_mutex_unlock(&th_lock);
	write_stream(fd_w, n3, seed, 0, "write completing the read");
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += EVENT_TIMEOUT_MS / 1000;
	pthread_mutex_lock(&th_lock);
	while (!th_done && rc == 0)
		rc = pthread_cond_timedwait(&th_cond, &th_lock, &dl);
	pthread_mutex_unlock(&th_lock);
	if (!th_done)
		die("no SIGEV_THREAD notification within %d ms", EVENT_TIMEOUT_MS);
	if (th_done != 1)
		die("SIGEV_THREAD function ran %d times", th_done);
	if (th_ptr != (void *)&r)
		die("SIGEV_THREAD: sival_ptr %p, expected the aiocb %p", th_ptr, (void *)&r);
	if (th_tid == xgettid())
		die("SIGEV_THREAD function ran in the main thread");
	if (th_err != 0)
		die("SIGEV_THREAD function saw aio_error %d, expected 0", th_err);
	got = aio_return(&r);
	if (got < 1 || got > (ssize_t)n3)
		die("SIGEV_THREAD aio_read: aio_return %zd after a %zu-byte write", got, n3);
	stream_check(rb, got, seed, 0, "SIGEV_THREAD aio_read");
	if (got < (ssize_t)n3)
		read_stream(fd_r, n3 - got, seed, got, "the rest");
	expect_empty(opt.dev, "at the end");
	close(fd_r);
	close(fd_w);
	printf("ok notify: SIGEV_SIGNAL write+read (SI_ASYNCIO, si_value = aiocb), "
	       "SIGEV_THREAD read (own thread, aiocb, aio_error 0)\n");
	return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	struct aioinit init = { .aio_threads = 8, .aio_num = 64, .aio_idle_time = -1 };
	const char *sub;
	int ret;

	prog = "posix_aio";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, subs, usage);
	sub = opt.sub ? opt.sub : "all";
	cmd = sub;
	if (opt.external && strcmp(sub, "pending"))
		die("--external is for the pending subcommand");
	/* no idle helper threads: see the top comment */
	aio_init(&init);
	watchdog(WATCHDOG_SECONDS);
	if (!strcmp(sub, "all"))
		return run_all(subs);
	if (strcmp(sub, "pending"))
		print_counters(opt.dev, "before");
	if (!strcmp(sub, "basic"))
		ret = cmd_basic();
	else if (!strcmp(sub, "pending"))
		return cmd_pending();
	else if (!strcmp(sub, "cancel"))
		ret = cmd_cancel();
	else if (!strcmp(sub, "listio"))
		ret = cmd_listio();
	else
		ret = cmd_notify();
	print_counters(opt.dev, "after");
	return ret;
}

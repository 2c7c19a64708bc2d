// SPDX-License-Identifier: GPL-2.0
/*
 * streamtest - the stream semantics users rely on (GitHub issue 11), one
 * subcommand per clause of the contract; tests/test_stream_vm.py runs them.
 *
 *   streamtest SUB DEV [ARG...] [--ready FILE] [--go FILE]
 *
 * Every subcommand prints machine-checkable lines ("key=value ...") and a
 * last line "ok SUB ..." when the contract held; at the first violation it
 * says what was wrong on stderr and exits 1 (3: the watchdog ended a hang).
 * A subcommand leaves the FIFO empty whatever happened, so that the next one
 * starts clean (it drains what a violation left behind).
 *
 * 1. vectors
 *   readv          4096 bytes in the FIFO; readv {1 B, 4095 B} gets all 4096
 *   writev         64 segments of odd sizes (7, 21, 35 ... 889; 28672 bytes)
 *                  in one writev: every byte, in order
 *   aio-writev     libaio IOCB_CMD_PWRITEV, 3 iovecs (1000+96+3000): res 4096
 *   aio-readv      libaio IOCB_CMD_PREADV, 3 iovecs (1+2047+2048): res 4096
 *   uring-writev   io_uring WRITEV, the same iovecs: res 4096
 *   uring-readv    io_uring READV: res 4096
 *   vec-many PATH write|read [partial]
 *                  IOV_MAX (1024) segments, not contiguous in memory (more
 *                  descriptors than the device chains): write: odd sizes,
 *                  211816 bytes, a reader process draining: res == total,
 *                  every byte in order; read: a full FIFO into 1024 segments
 *                  of depth/1024 bytes: all of it
 * 2. unlimited writes
 *   big-write PATH [SIZE [host]]
 *                  PATH sync|libaio|uring: ONE write of SIZE (3 MiB) bytes
 *                  while a reader process drains the other end: res == SIZE,
 *                  the reader gets every byte in order, no read > the depth;
 *                  host: a wired device, the host reads (stream 21 from 0)
 *   read-amount [PATH]
 *                  a read (sync, libaio or uring) gets what the FIFO holds,
 *                  up to the iovec total and the depth (10000 of 10000; the
 *                  depth of a full FIFO with a 1 MiB buffer; 1000 of 3000
 *                  with a 400+600 readv)
 * 3. nothing stays in the driver without bound
 *   uring-gone MODE
 *                  a child submits an io_uring WRITE of 2 x depth bytes (no
 *                  reader: it cannot finish), then MODE: exec (exec() must be
 *                  done within 1 s), exit-open (exit() with the fd open),
 *                  exit-closed (exit() after close(fd)), fixed (a registered
 *                  file, fd closed, then exit()), ring-close (a live process
 *                  closes the ring: io_uring_queue_exit() within 1 s).  The
 *                  parent measures it (kills after 10 s), then checks that
 *                  the request ended: after 1 s the FIFO holds a prefix of
 *                  the write (<= depth bytes) and no byte follows once it is
 *                  drained; then a checksummed write/read
 *   aio-gone MODE [read|write]
 *                  a libaio read pending on the empty FIFO (or a write of
 *                  2 x depth bytes, no reader), then MODE: cancel (io_cancel;
 *                  -ECANCELED event, or the count a write moved), destroy
 *                  (io_destroy), exit (a child exits): each within 1 s; a
 *                  write ended (as uring-gone checks); then a checksummed
 *                  write/read (the read did not steal the bytes)
 * 4. errors reported once
 *   err-once [PATH]
 *                  run after the host armed fault-dma-error queue=rx (and
 *                  `streamtest drain`): fds B, B2, S (O_ASYNC+F_SETSIG) and A
 *                  open; 1000 bytes written through A; a read of A (PATH:
 *                  sync, libaio or uring) fails with EIO; poll(A) shows no
 *                  POLLERR; S gets SIGIO POLL_ERR; B: POLLERR (twice), read EIO once, poll clean, then the
 *                  1000 bytes in order; B2: POLLERR, write EIO once (nothing
 *                  written), then a write works; C opened after the error:
 *                  no POLLERR, I/O works
 *   reset-once --ready R --go G
 *                  fds A and B open, 1000 bytes in the FIFO, R created; the
 *                  host resets the device (fault-reset) and creates G: A and
 *                  B show POLLERR; read(A) and write(B) fail with EIO once;
 *                  then poll is clean, the FIFO is empty, an fd opened after
 *                  sees no error, and I/O works
 *   reset-blocked --ready R --go G
 *                  a read blocked on fd R (empty FIFO) at the reset fails
 *                  with EIO, and that was R's report: its poll is clean and
 *                  its next read does not fail; idle fd B: POLLERR, EIO once
 * 5. ioctls
 *   ioctl          FIONREAD 0 / N, GET_DEPTH == sysfs fifo_depth, GET_SPACE
 *                  == depth - level, unknown numbers ENOTTY, a bad pointer
 *                  EFAULT, CLEAR empties the FIFO (FIONREAD 0, EAGAIN), no
 *                  POLLERR after it, another open fd sees no error
 *   fionread N     the host put N bytes into the (wired) RX FIFO: FIONREAD
 *                  is N, then 0 once they are read
 *   clear-blocked  CLEAR ends a thread blocked in write() larger than the
 *                  free space, a thread blocked in read() on the empty FIFO,
 *                  a libaio read pending on it, a libaio and an io_uring
 *                  write larger than the free space: ECANCELED or the count
 *                  moved; the FIFO is empty after each, and works
 * 6. lost wake-up
 *   lost-wake poll|epoll loop|host N --ready R --go G
 *                  one poll()/epoll_wait() on the empty FIFO, no request in
 *                  flight; the host arms fault-lost-irq and creates G; then
 *                  N bytes arrive (loop: written by another process on G;
 *                  host: injected by the host after G): the waiter must wake
 *                  within 2 x completion_timeout_ms + 500 ms of G ("woke_ms")
 * 7. PIPE_BUF
 *   nonblock-atomic
 *                  O_NONBLOCK writes of n <= PIPE_BUF bytes with less free
 *                  space than n: EAGAIN, nothing written; n <= free: all of n
 *                  (write and a 3-iovec writev)
 *   pollout        POLLOUT only while free space >= min(PIPE_BUF, depth)
 *   pollout-wake   a poll(POLLOUT) waiter on a full FIFO sleeps while less
 *                  than that is free, and is woken once it is
 *
 *   drain          read and discard what the FIFO holds: "drained N"
 *   exec-target    (internal: what uring-gone's exec runs)
 */
#include "common.h"

#include <libaio.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include "fifolab.h"		/* ../include/uapi: the ioctls */

#define PIPEBUF		4096
#define BOUND_MS	1000.0		/* contract 3: exec/exit/close */
#define KILL_MS		10000		/* ... after this it is a hang */
#define TIMEDOUT	(-2)
#define SIGIO_SIG	(SIGRTMIN + 1)

static const char *dev;
static const char *ready_file, *go_file;
static char **args;
static int nargs;

/* ------------------------------------------------------------ helpers */

static volatile sig_atomic_t alarm_fired;

static void on_alarm(int sig)
{
	(void)sig;
	alarm_fired = 1;
}

/* SIGALRM after @ms, without SA_RESTART: a blocked call returns EINTR. */
static void alarm_ms(unsigned int ms)
{
	static int installed;
	struct itimerval it = { .it_value = { ms / 1000, (ms % 1000) * 1000 } };

	if (!installed) {
		struct sigaction sa = { .sa_handler = on_alarm };

		if (sigaction(SIGALRM, &sa, NULL))
			die_errno("sigaction(SIGALRM)");
		installed = 1;
	}
	alarm_fired = 0;
	if (setitimer(ITIMER_REAL, &it, NULL))
		die_errno("setitimer");
}

static void alarm_off(void)
{
	struct itimerval it = { 0 };

	setitimer(ITIMER_REAL, &it, NULL);
}

/* @call with a time limit: TIMEDOUT if it was still blocked after @ms. */
#define TIMED(ms, call) ({					\
	ssize_t _r; int _e;					\
	alarm_ms(ms);						\
	_r = (call);						\
	_e = errno;						\
	alarm_off();						\
	if (_r < 0 && _e == EINTR && alarm_fired)		\
		_r = TIMEDOUT;					\
	errno = _e;						\
	_r; })

/* Threads leave SIGALRM to the main thread (its timed calls). */
static void block_alarm(void)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
}

/* "4096", "-1 EIO" or "timeout" */
static const char *res_str(ssize_t r, int err)
{
	static char b[4][64];
	static int k;
	char *s = b[k++ & 3];

	if (r == TIMEDOUT)
		snprintf(s, 64, "timeout");
	else if (r < 0)
		snprintf(s, 64, "-1 %s", strerrorname_np(err) ?: "?");
	else
		snprintf(s, 64, "%zd", r);
	return s;
}

/* the same for a negative-errno result (libaio, io_uring) */
static const char *neg_str(long r)
{
	return r < 0 ? res_str(-1, (int)-r) : res_str(r, 0);
}

static const char *rev_str(short rev)
{
	static char b[4][64];
	static int k;
	char *s = b[k++ & 3];

	s[0] = 0;
	if (rev & POLLIN)
		strcat(s, "|IN");
	if (rev & POLLOUT)
		strcat(s, "|OUT");
	if (rev & POLLERR)
		strcat(s, "|ERR");
	if (rev & POLLHUP)
		strcat(s, "|HUP");
	if (rev & POLLNVAL)
		strcat(s, "|NVAL");
	return s[0] ? s + 1 : "0";
}

/* poll() without waiting */
static short revents(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };

	if (poll(&p, 1, 0) < 0)
		die_errno("poll");
	return p.revents;
}

static size_t need_depth(void)
{
	size_t d = fifo_depth(dev);

	if (!d)
		die("no fifo_depth in sysfs for %s", dev);
	return d;
}

/* Read and discard everything (non-blocking fd of its own); the count. */
static size_t drain_quiet(void)
{
	static uint8_t buf[65536];
	int fd = xopen(dev, O_RDONLY | O_NONBLOCK);
	size_t total = 0;
	ssize_t n;

	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			total += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	close(fd);
	return total;
}

/* After a violation: leave the FIFO empty for the next subcommand, then die.
 * (The message is formatted first: draining changes errno.) */
static void __attribute__((noreturn, format(printf, 1, 2)))
fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	size_t d;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fflush(stdout);
	d = drain_quiet();
	if (d)
		fprintf(stderr, "%s %s: (drained %zu bytes left)\n", prog, cmd, d);
	die("%s", msg);
}

static int fionread(int fd)
{
	int v = -1;

	if (ioctl(fd, FIONREAD, &v))
		fail("ioctl(FIONREAD): %s", strerrorname_np(errno) ?: "?");
	return v;
}

static void check_pat(const uint8_t *b, size_t n, uint32_t seed, uint64_t start,
		      const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(seed, start + i))
			fail("%s: byte %llu of the stream is %#04x, expected %#04x "
			     "(byte %zu of %zu here)", what,
			     (unsigned long long)(start + i), b[i],
			     pat(seed, start + i), i, n);
}

/* Write exactly @n bytes of stream @seed from @start; fail otherwise. */
static void put(int fd, size_t n, uint32_t seed, uint64_t start, const char *what)
{
	uint8_t *b = xmalloc(n);
	ssize_t r;

	fill(b, n, seed, start);
	r = TIMED(10000, write(fd, b, n));
	if (r != (ssize_t)n)
		fail("%s: write of %zu bytes: %s", what, n, res_str(r, errno));
	free(b);
}

/* Read exactly @n bytes (several reads if need be) and check them. */
static void get(int fd, size_t n, uint32_t seed, uint64_t start, const char *what)
{
	uint8_t *b = xmalloc(n);
	size_t got = 0;

	while (got < n) {
		ssize_t r = TIMED(10000, read(fd, b + got, n - got));

		if (r <= 0)
			fail("%s: read after %zu of %zu bytes: %s", what, got, n,
			     res_str(r, errno));
		got += r;
	}
	check_pat(b, n, seed, start, what);
	free(b);
}

/* The device works: @n checksummed bytes through it (at most the depth: one
 * process writes, then reads), then it is empty. */
static void works(int wfd, int rfd, size_t n, uint32_t seed, const char *what)
{
	n = fit(n, fifo_depth(dev));
	put(wfd, n, seed, 0, what);
	get(rfd, n, seed, 0, what);
	expect_empty(dev, what);
}

static void wait_file(const char *path, unsigned int ms, const char *what)
{
	double end = now() + ms / 1e3;
	struct stat st;

	if (!path)
		die("%s: needs its file option", what);
	while (stat(path, &st)) {
		if (now() > end)
			fail("%s: %s did not appear within %u ms", what, path, ms);
		sleep_ms(2);
	}
}

static void touch(const char *path)
{
	int fd;

	if (!path)
		return;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die_errno("creating %s", path);
	close(fd);
}

/* ------------------------------------------------------------ libaio / io_uring */

static io_context_t aio_ctx(void)
{
	io_context_t ctx = 0;
	int r = io_setup(8, &ctx);

	if (r < 0)
		die_neg(r, "io_setup");
	return ctx;
}

/* One event within @ms: its res, or TIMEDOUT. */
static long aio_wait(io_context_t ctx, unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	struct io_event ev;
	int r;

	do
		r = io_getevents(ctx, 1, 1, &ev, &ts);
	while (r == -EINTR);
	if (r < 0)
		die_neg(r, "io_getevents");
	return r == 1 ? (long)ev.res : TIMEDOUT;
}

static void aio_go(io_context_t ctx, struct iocb *cb)
{
	struct iocb *cbs[1] = { cb };
	int r = io_submit(ctx, 1, cbs);

	if (r != 1)
		fail("io_submit: %s", neg_str(r < 0 ? r : -EIO));
}

static void uring_init(struct io_uring *ring)
{
	int r = io_uring_queue_init(8, ring, 0);

	if (r < 0)
		die_neg(r, "io_uring_queue_init");
}

static void uring_submit(struct io_uring *ring)
{
	int r = io_uring_submit(ring);

	if (r != 1)
		fail("io_uring_submit: %s", neg_str(r < 0 ? r : -EIO));
}

/* The next CQE's res within @ms, or TIMEDOUT. */
static long uring_wait(struct io_uring *ring, unsigned int ms)
{
	struct __kernel_timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	struct io_uring_cqe *cqe;
	long res;
	int r;

	do
		r = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
	while (r == -EINTR);
	if (r == -ETIME)
		return TIMEDOUT;
	if (r < 0)
		die_neg(r, "io_uring_wait_cqe_timeout");
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res;
}

static int valid_path(const char *path)
{
	return !strcmp(path, "sync") || !strcmp(path, "libaio") || !strcmp(path, "uring");
}

/*
 * One vectored read or write through @path (sync: readv/writev; libaio:
 * IOCB_CMD_PREADV/PWRITEV; uring: READV/WRITEV): what it returned, as a
 * system call would (-1 and errno), or TIMEDOUT after @ms.
 */
static ssize_t path_rw(const char *path, int fd, int write_, struct iovec *iov, int n,
		       unsigned int ms)
{
	long res;

	if (!strcmp(path, "sync"))
		return write_ ? TIMED(ms, writev(fd, iov, n)) : TIMED(ms, readv(fd, iov, n));
	if (!strcmp(path, "libaio")) {
		io_context_t ctx = aio_ctx();
		struct iocb cb;

		if (write_)
			io_prep_pwritev(&cb, fd, iov, n, 0);
		else
			io_prep_preadv(&cb, fd, iov, n, 0);
		aio_go(ctx, &cb);
		res = aio_wait(ctx, ms);
		io_destroy(ctx);
	} else {
		struct io_uring ring;
		struct io_uring_sqe *sqe;

		uring_init(&ring);
		sqe = io_uring_get_sqe(&ring);
		if (write_)
			io_uring_prep_writev(sqe, fd, iov, n, -1);
		else
			io_uring_prep_readv(sqe, fd, iov, n, -1);
		uring_submit(&ring);
		res = uring_wait(&ring, ms);
		io_uring_queue_exit(&ring);
	}
	if (res < 0 && res != TIMEDOUT) {
		errno = (int)-res;
		return -1;
	}
	return res;
}

/* ------------------------------------------------------------ 1. vectors */

static int cmd_readv(void)
{
	uint8_t a[1], *b = xmalloc(4095);
	struct iovec iov[2] = { { a, 1 }, { b, 4095 } };
	int fd;
	ssize_t r;

	drain(dev);
	fd = xopen(dev, O_RDWR);
	put(fd, 4096, 11, 0, "readv: filling");
	a[0] = ~pat(11, 0);
	memset(b, 0, 4095);
	r = TIMED(10000, readv(fd, iov, 2));
	printf("readv res=%s\n", res_str(r, errno));
	if (r != 4096)
		fail("readv {1, 4095} with 4096 bytes in the FIFO returned %s, expected 4096",
		     res_str(r, errno));
	check_pat(a, 1, 11, 0, "readv segment 0 (1 byte)");
	check_pat(b, 4095, 11, 1, "readv segment 1 (4095 bytes)");
	expect_empty(dev, "after readv");
	printf("ok readv 4096\n");
	return 0;
}

static int cmd_writev(void)
{
	enum { NSEG = 64 };
	struct iovec iov[NSEG];
	size_t total = 0;
	int fd;
	ssize_t r;

	drain(dev);
	fd = xopen(dev, O_RDWR);
	for (int k = 0; k < NSEG; k++) {
		size_t n = (2 * k + 1) * 7;	/* odd: 7, 21, ... 889 */

		iov[k].iov_base = xmalloc(n);
		iov[k].iov_len = n;
		fill(iov[k].iov_base, n, 12, total);
		total += n;
	}
	if (total > need_depth())
		die("writev: %zu bytes do not fit the FIFO", total);
	r = TIMED(10000, writev(fd, iov, NSEG));
	printf("writev segments=%d total=%zu res=%s\n", NSEG, total, res_str(r, errno));
	if (r != (ssize_t)total)
		fail("writev of %d segments (%zu bytes) returned %s", NSEG, total,
		     res_str(r, errno));
	get(fd, total, 12, 0, "reading the writev back");
	expect_empty(dev, "after writev");
	printf("ok writev %zu\n", total);
	return 0;
}

/* vectored libaio / io_uring requests: @uring, @write */
static int vec_async(int uring, int write_)
{
	static const size_t wsz[3] = { 1000, 96, 3000 }, rsz[3] = { 1, 2047, 2048 };
	const size_t *sz = write_ ? wsz : rsz;
	const char *name = cmd;
	uint8_t *seg[3];
	struct iovec iov[3];
	uint32_t seed = 13 + uring * 2 + write_;
	size_t off = 0;
	long res;
	int fd;

	drain(dev);
	fd = xopen(dev, O_RDWR);
	for (int k = 0; k < 3; k++) {
		seg[k] = xmalloc(sz[k]);
		if (write_)
			fill(seg[k], sz[k], seed, off);
		else
			memset(seg[k], 0, sz[k]);
		iov[k] = (struct iovec){ seg[k], sz[k] };
		off += sz[k];
	}
	if (!write_)
		put(fd, 4096, seed, 0, "filling the FIFO");

	if (uring) {
		struct io_uring ring;
		struct io_uring_sqe *sqe;

		uring_init(&ring);
		sqe = io_uring_get_sqe(&ring);
		if (write_)
			io_uring_prep_writev(sqe, fd, iov, 3, -1);
		else
			io_uring_prep_readv(sqe, fd, iov, 3, -1);
		uring_submit(&ring);
		res = uring_wait(&ring, 10000);
		io_uring_queue_exit(&ring);
	} else {
		io_context_t ctx = aio_ctx();
		struct iocb cb;

		if (write_)
			io_prep_pwritev(&cb, fd, iov, 3, 0);
		else
			io_prep_preadv(&cb, fd, iov, 3, 0);
		aio_go(ctx, &cb);
		res = aio_wait(ctx, 10000);
		io_destroy(ctx);
	}
	printf("%s iovecs=%zu+%zu+%zu res=%s\n", name, sz[0], sz[1], sz[2],
	       res == TIMEDOUT ? "timeout" : neg_str(res));
	if (res != 4096)
		fail("%s of 3 iovecs totalling 4096: res %s, expected 4096", name,
		     res == TIMEDOUT ? "timeout" : neg_str(res));
	if (write_) {
		get(fd, 4096, seed, 0, "reading the vectored write back");
	} else {
		off = 0;
		for (int k = 0; k < 3; k++) {
			check_pat(seg[k], sz[k], seed, off, "vectored read segment");
			off += sz[k];
		}
	}
	expect_empty(dev, name);
	printf("ok %s 4096\n", name);
	return 0;
}

static int cmd_aio_writev(void) { return vec_async(0, 1); }
static int cmd_aio_readv(void) { return vec_async(0, 0); }
static int cmd_uring_writev(void) { return vec_async(1, 1); }
static int cmd_uring_readv(void) { return vec_async(1, 0); }

/* ------------------------------------------------------------ 2. unlimited writes */

/* The reader process: exactly @size bytes of stream @seed, each read <= depth. */
static void big_reader(size_t size, uint32_t seed, size_t depth)
{
	size_t got = 0, reads = 0, maxr = 0, bufsz = 1 << 20;
	uint8_t *b = map_buf(bufsz);
	int fd = xopen(dev, O_RDONLY);

	while (got < size) {
		ssize_t r = read(fd, b, bufsz);

		if (r <= 0)
			die("reader: read after %zu of %zu bytes: %s", got, size,
			    res_str(r, errno));
		if ((size_t)r > depth)
			die("reader: one read returned %zd bytes, more than the FIFO depth %zu",
			    r, depth);
		if (got + r > size)
			die("reader: %zu bytes, more than the %zu written", got + r, size);
		stream_check(b, r, seed, got, "reader");
		got += r;
		reads++;
		if ((size_t)r > maxr)
			maxr = r;
	}
	printf("reader bytes=%zu reads=%zu max_read=%zu crc=ok\n", got, reads, maxr);
	exit(0);
}

static int cmd_big_write(void)
{
	const char *path = nargs > 0 ? args[0] : "";
	size_t size = nargs > 1 ? parse_size(args[1], "SIZE") : 3 << 20;
	int host = nargs > 2 && !strcmp(args[2], "host");
	size_t depth = need_depth();
	uint32_t seed = 21;
	uint8_t *b;
	long res;
	int fd, status, violated = 0;
	pid_t reader = 0;

	if (!valid_path(path) || (nargs > 2 && !host))
		die("big-write sync|libaio|uring [SIZE [host]]");
	if (!host)
		drain(dev);
	b = map_buf(size);
	fill(b, size, seed, 0);
	fd = xopen(dev, O_WRONLY);
	if (!host) {
		reader = xfork("reader");
		if (!reader)
			big_reader(size, seed, depth);
	}

	if (!strcmp(path, "sync")) {
		ssize_t r = TIMED(60000, write(fd, b, size));

		res = r < 0 && r != TIMEDOUT ? -errno : r;
	} else if (!strcmp(path, "libaio")) {
		io_context_t ctx = aio_ctx();
		struct iocb cb;

		io_prep_pwrite(&cb, fd, b, size, 0);
		aio_go(ctx, &cb);
		res = aio_wait(ctx, 60000);
		if (res == TIMEDOUT)
			printf("libaio write: no event in 60 s\n");
	} else {
		struct io_uring ring;
		struct io_uring_sqe *sqe;

		uring_init(&ring);
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_write(sqe, fd, b, size, -1);
		uring_submit(&ring);
		res = uring_wait(&ring, 60000);
	}
	printf("big-write path=%s size=%zu res=%s\n", path, size,
	       res == TIMEDOUT ? "timeout" : neg_str(res));
	if (res != (long)size) {
		violated = 1;
		/* complete the stream so that the reader can check every byte */
		if (res >= 0 && res < (long)size) {
			size_t off = res;

			while (off < size) {
				ssize_t r = TIMED(30000, write(fd, b + off, size - off));

				if (r <= 0) {
					printf("completing the stream: write %s\n",
					       res_str(r, errno));
					break;
				}
				off += r;
			}
		}
	}
	if (host) {
		/* the host reads (and checks) what went out */
	} else if (!wait_child_for(reader, &status, 60000)) {
		kill(reader, SIGKILL);
		waitpid(reader, &status, 0);
		fail("the reader did not get all %zu bytes within 60 s", size);
	} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fail("the reader failed (status %#x)", status);
	}
	if (violated)
		fail("one %s write of %zu bytes with a reader draining: res %s, expected %zu",
		     path, size, res == TIMEDOUT ? "timeout" : neg_str(res), size);
	if (!host)
		expect_empty(dev, "after the big write");
	printf("ok big-write %s %zu\n", path, size);
	return 0;
}

static int cmd_read_amount(void)
{
	const char *path = nargs > 0 ? args[0] : "sync";
	size_t depth = need_depth(), bufsz = 1 << 20;
	uint8_t *b = map_buf(bufsz), *small = xmalloc(1000);
	struct iovec big = { b, 65536 };
	struct iovec iov[2] = { { small, 400 }, { small + 400, 600 } };
	int fd;
	ssize_t r;

	if (!valid_path(path))
		die("read-amount [sync|libaio|uring]");
	drain(dev);
	fd = xopen(dev, O_RDWR);
	printf("path=%s\n", path);
	put(fd, 10000, 31, 0, "10000 bytes in");
	r = path_rw(path, fd, 0, &big, 1, 10000);
	printf("held=10000 buffer=65536 res=%s\n", res_str(r, errno));
	if (r != 10000)
		fail("with 10000 bytes in the FIFO a %s read of 65536 got %s", path,
		     res_str(r, errno));
	check_pat(b, r, 31, 0, "10000 bytes");

	put(fd, depth, 32, 0, "a full FIFO");
	big.iov_len = bufsz;
	r = path_rw(path, fd, 0, &big, 1, 10000);
	printf("held=%zu buffer=%zu res=%s\n", depth, bufsz, res_str(r, errno));
	if (r != (ssize_t)depth)
		fail("with the FIFO full (%zu) a %s read of %zu got %s", depth, path, bufsz,
		     res_str(r, errno));
	check_pat(b, r, 32, 0, "a full FIFO");

	put(fd, 3000, 33, 0, "3000 bytes in");
	r = path_rw(path, fd, 0, iov, 2, 10000);
	printf("held=3000 iovecs=400+600 res=%s\n", res_str(r, errno));
	if (r != 1000)
		fail("with 3000 bytes in the FIFO a %s readv of 1000 got %s", path,
		     res_str(r, errno));
	check_pat(small, 1000, 33, 0, "readv 400+600");
	r = path_rw(path, fd, 0, &big, 1, 10000);
	printf("held=2000 buffer=%zu res=%s\n", bufsz, res_str(r, errno));
	if (r != 2000)
		fail("with 2000 bytes in the FIFO a %s read of %zu got %s", path, bufsz,
		     res_str(r, errno));
	check_pat(b, r, 33, 1000, "the rest");
	expect_empty(dev, "at the end");
	printf("ok read-amount %s\n", path);
	return 0;
}

/*
 * vec-many PATH write|read: IOV_MAX (1024) segments that are not contiguous
 * in memory (a gap after each), so that one request needs more descriptors
 * than the device chains (MAX_SEGS 260).  write: odd sizes, more than the
 * FIFO holds, a reader process drains: res == total, every byte in order.
 * read: a full FIFO read into 1024 segments of depth/1024 bytes: all of it.
 */
static int cmd_vec_many(void)
{
	enum { NSEG = 1024 };
	const char *path = nargs > 0 ? args[0] : "", *dir = nargs > 1 ? args[1] : "";
	/*
	 * "partial" (read): the FIFO holds exactly two device chains' worth
	 * (MAX_SEGS = 260 segments each, datasheet 2): the third chain must
	 * come back empty at once, not wait for bytes that will not come.
	 */
	int partial = nargs > 2 && !strcmp(args[2], "partial");
	size_t depth = need_depth(), total = 0, span = 0, fill_n;
	struct iovec *iov = xmalloc(NSEG * sizeof(*iov));
	int write_ = !strcmp(dir, "write"), fd, status;
	uint32_t seed = 121;
	uint8_t *area;
	double t0, took;
	ssize_t r;
	pid_t reader = 0;

	size_t gap = 16;

	if (!valid_path(path) || (!write_ && strcmp(dir, "read")))
		die("vec-many sync|libaio|uring write|read [partial]");
	/* reads: one segment per 128 bytes, none across a page: one descriptor each */
	if (!write_ && depth / NSEG <= 128)
		gap = 128 - depth / NSEG;
	else if (partial)
		die("vec-many read partial: needs a FIFO of at most 128 KiB");
	for (int k = 0; k < NSEG; k++) {
		size_t n = write_ ? (size_t)(2 * (k % 150) + 61) : depth / NSEG;

		if (!n)
			die("the FIFO is too small");
		span += n + gap;
		total += n;
	}
	area = map_buf(span);
	span = 0;
	for (int k = 0; k < NSEG; k++) {
		size_t n = write_ ? (size_t)(2 * (k % 150) + 61) : depth / NSEG;

		iov[k] = (struct iovec){ area + span, n };
		span += n + gap;
	}
	drain(dev);
	fd = xopen(dev, O_RDWR);
	if (write_) {
		uint64_t off = 0;

		for (int k = 0; k < NSEG; k++) {
			fill(iov[k].iov_base, iov[k].iov_len, seed, off);
			off += iov[k].iov_len;
		}
		reader = xfork("reader");
		if (!reader)
			big_reader(total, seed, depth);
	} else {
		fill_n = partial ? 2 * 260 * (depth / NSEG) : total;
		put(fd, fill_n, seed, 0, "filling the FIFO");
		total = fill_n;
	}
	t0 = now();
	r = path_rw(path, fd, write_, iov, NSEG, 60000);
	took = now() - t0;
	printf("vec-many path=%s dir=%s segments=%d total=%zu res=%s took_ms=%.0f\n", path, dir,
	       NSEG, total, res_str(r, errno), took * 1e3);
	if (partial && took > 5)
		fail("the readv waited %.1f s for bytes that were not there", took);
	if (write_) {
		if (r != (ssize_t)total) {
			/* let the reader finish or end it */
			if (r >= 0)
				drain_quiet();
			kill(reader, SIGKILL);
			waitpid(reader, &status, 0);
			fail("%s writev of %d segments (%zu bytes): %s", path, NSEG, total,
			     res_str(r, errno));
		}
		if (!wait_child_for(reader, &status, 60000)) {
			kill(reader, SIGKILL);
			waitpid(reader, &status, 0);
			fail("the reader did not get all %zu bytes", total);
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			fail("the reader failed (status %#x)", status);
	} else {
		uint64_t off = 0;

		if (r != (ssize_t)total)
			fail("%s readv of %d segments with %zu bytes in the FIFO: %s", path,
			     NSEG, total, res_str(r, errno));
		for (int k = 0; k < NSEG && off < total; k++) {
			check_pat(iov[k].iov_base, iov[k].iov_len, seed, off, "readv segment");
			off += iov[k].iov_len;
		}
	}
	expect_empty(dev, "at the end");
	printf("ok vec-many %s %s %zu\n", path, dir, total);
	return 0;
}

/* ------------------------------------------------------------ 3. bounded */

/* A line from the child's status pipe within @ms; NULL at EOF or timeout. */
static char *read_line(int fd, unsigned int ms, int *eof)
{
	static char line[256];
	size_t n = 0;
	double end = now() + ms / 1e3;

	*eof = 0;
	while (n < sizeof(line) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)((end - now()) * 1000);
		ssize_t r;

		if (left < 0 || poll(&p, 1, left) == 0)
			return NULL;
		r = read(fd, line + n, 1);
		if (r == 0) {
			*eof = 1;
			return NULL;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die_errno("reading the child's status");
		}
		if (line[n] == '\n') {
			line[n] = 0;
			return line;
		}
		n++;
	}
	line[n] = 0;
	return line;
}

/* Drain what a request left, checking it is a prefix of its stream; -1 if
 * the bytes were not. */
static size_t drain_prefix(uint32_t seed, uint64_t *off, int *bad)
{
	static uint8_t buf[65536];
	int fd = xopen(dev, O_RDONLY | O_NONBLOCK);
	size_t total = 0;
	ssize_t n;

	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pat(seed, *off + i))
				*bad = 1;
		*off += n;
		total += n;
	}
	if (n < 0 && errno != EAGAIN)
		printf("drain: %s\n", res_str(n, errno));
	close(fd);
	return total;
}

/* After the request is gone: it moved a prefix, <= depth, and nothing more. */
static void check_ended(uint32_t seed, size_t depth, size_t wsize, const char *what)
{
	uint64_t off = 0;
	size_t moved, late = 0;
	int bad = 0;

	sleep_ms(1000);		/* teardown work of the ring, task work */
	moved = drain_prefix(seed, &off, &bad);
	for (int k = 0; k < 6; k++) {	/* 600 ms: does a request still feed it? */
		sleep_ms(100);
		late += drain_prefix(seed, &off, &bad);
	}
	printf("ended moved=%zu late=%zu data=%s\n", moved, late, bad ? "corrupt" : "ok");
	if (bad)
		fail("%s: the FIFO held bytes that are not the write's stream", what);
	if (late || moved > depth)
		fail("%s: the write of %zu bytes was still pending: draining the FIFO (depth %zu) "
		     "gave %zu bytes, %zu more came after", what, wsize, depth, moved, late);
}

static void uring_child(const char *mode, size_t wsize, int st, int go)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	uint8_t *b = map_buf(wsize);
	int fd = xopen(dev, O_RDWR), pending = 1, res = 0;
	double t0, t1;

	fill(b, wsize, 41, 0);
	uring_init(&ring);
	sqe = io_uring_get_sqe(&ring);
	if (!strcmp(mode, "fixed")) {
		int r = io_uring_register_files(&ring, &fd, 1);

		if (r < 0)
			die_neg(r, "io_uring_register_files");
		close(fd);
		io_uring_prep_write(sqe, 0, b, wsize, -1);
		sqe->flags |= IOSQE_FIXED_FILE;
	} else {
		io_uring_prep_write(sqe, fd, b, wsize, -1);
	}
	if (io_uring_submit(&ring) != 1)
		die("io_uring_submit");
	sleep_ms(300);
	if (io_uring_peek_cqe(&ring, &cqe) == 0) {
		pending = 0;
		res = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
	}
	dprintf(st, "armed pending=%d res=%d\n", pending, res);
	if (!strcmp(mode, "exit-closed"))
		close(fd);
	if (!strcmp(mode, "ring-close")) {
		char c;

		t0 = now();
		io_uring_queue_exit(&ring);
		t1 = now();
		dprintf(st, "closed_ms=%.1f\n", (t1 - t0) * 1e3);
		if (read(go, &c, 1) < 0)	/* the parent looked; the fd stays open */
			_exit(1);
		_exit(0);
	}
	dprintf(st, "go\n");
	if (!strcmp(mode, "exec")) {
		execl("/proc/self/exe", prog, "exec-target", dev, (char *)NULL);
		die_errno("exec /proc/self/exe");
	}
	exit(0);
}

static int cmd_uring_gone(void)
{
	const char *mode = nargs > 0 ? args[0] : "";
	size_t depth = need_depth(), wsize = 2 * depth;
	int st[2], go[2], eof, status, done;
	char *line;
	double t0, took;
	pid_t pid;

	if (strcmp(mode, "exec") && strcmp(mode, "exit-open") && strcmp(mode, "exit-closed") &&
	    strcmp(mode, "fixed") && strcmp(mode, "ring-close"))
		die("uring-gone MODE: exec, exit-open, exit-closed, fixed or ring-close");
	drain(dev);
	if (pipe2(st, O_CLOEXEC) || pipe(go))
		die_errno("pipe");
	pid = xfork("io_uring child");
	if (!pid) {
		close(st[0]);
		close(go[1]);
		uring_child(mode, wsize, st[1], go[0]);
	}
	close(st[1]);
	close(go[0]);

	line = read_line(st[0], 10000, &eof);
	if (!line)
		die("the child did not arm its write");
	printf("write=%zu %s\n", wsize, line);

	if (!strcmp(mode, "ring-close")) {
		double ms;

		t0 = now();
		line = read_line(st[0], KILL_MS, &eof);
		took = (now() - t0) * 1e3;
		if (!line) {
			printf("ring-close: io_uring_queue_exit not done in %d ms\n", KILL_MS);
			drain_quiet();
			kill(pid, SIGKILL);
			wait_child_for(pid, &status, 5000);
			fail("closing the ring took more than %d ms", KILL_MS);
		}
		if (sscanf(line, "closed_ms=%lf", &ms) != 1)
			die("child: %s", line);
		printf("gone mode=%s took_ms=%.1f\n", mode, ms);
		if (ms > BOUND_MS) {
			kill(pid, SIGKILL);
			wait_child_for(pid, &status, 5000);
			fail("io_uring_queue_exit took %.1f ms (bound %.0f ms)", ms, BOUND_MS);
		}
		check_ended(41, depth, wsize, "ring closed by a live process");
		if (write(go[1], "x", 1) != 1)
			die_errno("telling the child to exit");
		if (!wait_child_for(pid, &status, 5000))
			die("the child did not exit");
	} else {
		line = read_line(st[0], 10000, &eof);
		if (!line || strcmp(line, "go"))
			die("the child did not reach %s (%s)", mode, line ? line : "eof");
		t0 = now();
		if (!strcmp(mode, "exec")) {
			/* the status pipe is O_CLOEXEC: EOF once exec() is through */
			line = read_line(st[0], KILL_MS, &eof);
			done = eof;
		} else {
			done = wait_child_for(pid, &status, KILL_MS);
		}
		took = (now() - t0) * 1e3;
		if (!done) {
			size_t d;

			printf("gone mode=%s took_ms=>%d (hung)\n", mode, KILL_MS);
			/* the hang waits for the write: reading lets it finish */
			d = drain_quiet();
			sleep_ms(200);
			d += drain_quiet();
			kill(pid, SIGKILL);
			if (!wait_child_for(pid, &status, 5000))
				printf("the child is still stuck after SIGKILL\n");
			else
				printf("unstuck after draining %zu bytes\n", d);
			fail("%s with an io_uring write pending did not finish in %d ms",
			     mode, KILL_MS);
		}
		printf("gone mode=%s took_ms=%.1f\n", mode, took);
		if (took > BOUND_MS) {
			drain_quiet();
			fail("%s with an io_uring write pending took %.1f ms (bound %.0f ms)",
			     mode, took, BOUND_MS);
		}
		if (!strcmp(mode, "exec") && !wait_child_for(pid, &status, 5000))
			die("the exec'd child did not exit");
		check_ended(41, depth, wsize, mode);
	}
	{
		int fd = xopen(dev, O_RDWR);

		works(fd, fd, 4096, 42, "afterwards");
	}
	printf("ok uring-gone %s took_ms=%.1f\n", mode, took);
	return 0;
}

static int cmd_exec_target(void)
{
	printf("exec-target pid=%d\n", getpid());
	return 0;
}

/* the libaio request aio-gone leaves pending: a read of the empty FIFO, or a
 * write of 2 x depth bytes with no reader (it moves depth bytes, then waits) */
static void aio_gone_prep(struct iocb *cb, int fd, int write_, size_t depth)
{
	static uint8_t rbuf[4096];

	if (write_) {
		uint8_t *b = map_buf(2 * depth);

		fill(b, 2 * depth, 44, 0);
		io_prep_pwrite(cb, fd, b, 2 * depth, 0);
	} else {
		io_prep_pread(cb, fd, rbuf, sizeof(rbuf), 0);
	}
}

static int cmd_aio_gone(void)
{
	const char *mode = nargs > 0 ? args[0] : "", *op = nargs > 1 ? args[1] : "read";
	int write_ = !strcmp(op, "write");
	size_t depth = need_depth();
	double t0, took;
	int fd;

	if ((strcmp(mode, "cancel") && strcmp(mode, "destroy") && strcmp(mode, "exit")) ||
	    (!write_ && strcmp(op, "read")))
		die("aio-gone cancel|destroy|exit [read|write]");
	drain(dev);
	if (!strcmp(mode, "exit")) {
		int st[2], eof, status;
		char *line;
		pid_t pid;

		if (pipe(st))
			die_errno("pipe");
		pid = xfork("libaio child");
		if (!pid) {
			io_context_t ctx = aio_ctx();
			struct iocb cb;

			close(st[0]);
			fd = xopen(dev, O_RDWR);
			aio_gone_prep(&cb, fd, write_, depth);
			aio_go(ctx, &cb);
			sleep_ms(200);
			dprintf(st[1], "go\n");
			exit(0);
		}
		close(st[1]);
		line = read_line(st[0], 10000, &eof);
		if (!line || strcmp(line, "go"))
			die("the child did not submit its %s", op);
		t0 = now();
		if (!wait_child_for(pid, &status, KILL_MS)) {
			printf("gone mode=exit took_ms=>%d (hung)\n", KILL_MS);
			drain_quiet();		/* a write may end now */
			kill(pid, SIGKILL);
			fail("exit with a libaio %s pending did not finish in %d ms", op, KILL_MS);
		}
		took = (now() - t0) * 1e3;
	} else {
		io_context_t ctx = aio_ctx();
		struct io_event ev;
		struct iocb cb;
		long res;
		int r;

		fd = xopen(dev, O_RDWR);
		aio_gone_prep(&cb, fd, write_, depth);
		aio_go(ctx, &cb);
		sleep_ms(200);
		if ((res = aio_wait(ctx, 0)) != TIMEDOUT)
			fail("the libaio %s that cannot finish completed: %s", op, neg_str(res));
		t0 = now();
		if (!strcmp(mode, "cancel")) {
			r = io_cancel(ctx, &cb, &ev);
			printf("io_cancel=%s\n", neg_str(r));
			if (r == 0)
				res = ev.res;
			else if (r == -EINPROGRESS)
				res = aio_wait(ctx, KILL_MS);
			else
				fail("io_cancel of a pending %s: %s", op, neg_str(r));
			took = (now() - t0) * 1e3;
			printf("event res=%s\n", res == TIMEDOUT ? "timeout" : neg_str(res));
			if (res == TIMEDOUT)
				fail("no event for the cancelled %s within %d ms", op, KILL_MS);
			if (res != -ECANCELED && !(write_ && res > 0 && res <= (long)(2 * depth)))
				fail("the cancelled %s's event: %s, expected -ECANCELED%s", op,
				     neg_str(res), write_ ? " or the count it moved" : "");
		} else {
			r = io_destroy(ctx);
			took = (now() - t0) * 1e3;
			printf("io_destroy=%s\n", neg_str(r));
			if (r)
				fail("io_destroy: %s", neg_str(r));
		}
	}
	printf("gone mode=%s op=%s took_ms=%.1f\n", mode, op, took);
	if (took > BOUND_MS)
		fail("libaio %s with a %s pending took %.1f ms (bound %.0f ms)", mode, op, took,
		     BOUND_MS);
	if (write_)
		check_ended(44, depth, 2 * depth, "the libaio write");
	fd = xopen(dev, O_RDWR);
	works(fd, fd, 4096, 43, "afterwards");
	printf("ok aio-gone %s %s took_ms=%.1f\n", mode, op, took);
	return 0;
}

/* A thread blocked in read() or write() (SIGALRM left to the main thread). */
struct blocked {
	int fd;
	int write_;
	size_t len;
	ssize_t res;
	int err;
	volatile int done;
};

static void *blocked_io(void *arg)
{
	struct blocked *bl = arg;
	uint8_t *b = map_buf(bl->len);

	block_alarm();
	fill(b, bl->len, 81, 0);
	bl->res = bl->write_ ? write(bl->fd, b, bl->len) : read(bl->fd, b, bl->len);
	bl->err = errno;
	__atomic_store_n(&bl->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int wait_done(struct blocked *bl, unsigned int ms)
{
	double end = now() + ms / 1e3;

	while (!__atomic_load_n(&bl->done, __ATOMIC_ACQUIRE)) {
		if (now() > end)
			return 0;
		sleep_ms(5);
	}
	return 1;
}

/* ------------------------------------------------------------ 4. errors once */

static void expect_rev(int fd, const char *name, int err, const char *when)
{
	short rev = revents(fd);

	printf("poll %s %s revents=%s\n", name, when, rev_str(rev));
	if (err && !(rev & POLLERR))
		fail("poll(%s) %s: no POLLERR (revents %s)", name, when, rev_str(rev));
	if (!err && (rev & POLLERR))
		fail("poll(%s) %s: POLLERR (revents %s)", name, when, rev_str(rev));
}

static void expect_eio(ssize_t r, int err, const char *what)
{
	printf("%s res=%s\n", what, res_str(r, err));
	if (!(r == -1 && err == EIO))
		fail("%s: %s, expected -1 EIO", what, res_str(r, err));
}

/* The first si_code of a POLL_ERR signal within @ms: 1 if one came. */
static int wait_poll_err(unsigned int ms, char *seen, size_t seen_len)
{
	double end = now() + ms / 1e3;
	sigset_t set;
	siginfo_t si;

	sigemptyset(&set);
	sigaddset(&set, SIGIO_SIG);
	seen[0] = 0;
	for (;;) {
		double left = end - now();
		struct timespec ts;

		if (left <= 0)
			return 0;
		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - ts.tv_sec) * 1e9);
		if (sigtimedwait(&set, &si, &ts) < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			die_errno("sigtimedwait");
		}
		snprintf(seen + strlen(seen), seen_len - strlen(seen), "%s%d",
			 seen[0] ? "," : "", si.si_code);
		if (si.si_code == POLL_ERR)
			return 1;
	}
}

static int sigio_fd(void)
{
	int fd = xopen(dev, O_RDWR | O_NONBLOCK);
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGIO_SIG);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		die_errno("sigprocmask");
	if (fcntl(fd, F_SETOWN, getpid()) || fcntl(fd, F_SETSIG, SIGIO_SIG) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC))
		die_errno("fcntl O_ASYNC");
	return fd;
}

static int cmd_err_once(void)
{
	const char *path = nargs > 0 ? args[0] : "sync";
	uint8_t *b = xmalloc(4096);
	struct iovec iov = { b, 4096 };
	char seen[256];
	int A, B, B2, S, C;
	ssize_t r;

	if (!valid_path(path))
		die("err-once [sync|libaio|uring]");
	/* no drain: a read would meet the armed fault; the test drained */
	B = xopen(dev, O_RDWR);
	B2 = xopen(dev, O_RDWR);
	S = sigio_fd();
	A = xopen(dev, O_RDWR);
	put(A, 1000, 51, 0, "1000 bytes before the fault");

	r = path_rw(path, A, 0, &iov, 1, 10000);
	printf("path=%s\n", path);
	expect_eio(r, errno, "read A (the faulty request)");
	expect_rev(A, "A", 0, "after its read failed");
	if (!wait_poll_err(2000, seen, sizeof(seen))) {
		printf("sigio codes=%s\n", seen);
		fail("no SIGIO with si_code POLL_ERR within 2 s of the error (codes %s)", seen);
	}
	printf("sigio POLL_ERR (codes %s)\n", seen);
	expect_rev(S, "S", 1, "(opened before, no I/O)");

	expect_rev(B, "B", 1, "(opened before, no I/O)");
	expect_rev(B, "B", 1, "again");
	r = TIMED(5000, read(B, b, 4096));
	expect_eio(r, errno, "read B");
	expect_rev(B, "B", 0, "after its EIO");
	memset(b, 0, 4096);
	r = TIMED(5000, read(B, b, 4096));
	printf("read B again res=%s\n", res_str(r, errno));
	if (r != 1000)
		fail("read B after its EIO: %s, expected the 1000 bytes written before the fault",
		     res_str(r, errno));
	check_pat(b, 1000, 51, 0, "the bytes written before the fault");

	expect_rev(B2, "B2", 1, "(opened before, no I/O)");
	fill(b, 100, 52, 0);
	r = TIMED(5000, write(B2, b, 100));
	expect_eio(r, errno, "write B2");
	expect_rev(B2, "B2", 0, "after its EIO");
	r = TIMED(5000, write(B2, b, 100));
	printf("write B2 again res=%s\n", res_str(r, errno));
	if (r != 100)
		fail("write B2 after its EIO: %s, expected 100", res_str(r, errno));

	C = xopen(dev, O_RDWR);
	expect_rev(C, "C", 0, "(opened after the error)");
	get(C, 100, 52, 0, "read C: B2's second write, alone (its EIO wrote nothing)");
	printf("read C res=100 data=ok\n");
	works(C, C, 4096, 53, "C works");
	works(A, B, 4096, 54, "A and B work");
	expect_rev(A, "A", 0, "at the end");
	expect_rev(B, "B", 0, "at the end");
	close(S);
	printf("ok err-once\n");
	return 0;
}

static int cmd_reset_once(void)
{
	uint8_t *b = xmalloc(4096);
	char seen[256];
	int A, B, C, S;
	ssize_t r;

	drain(dev);
	A = xopen(dev, O_RDWR);
	B = xopen(dev, O_RDWR);
	S = sigio_fd();
	put(A, 1000, 61, 0, "1000 bytes before the reset");
	touch(ready_file);
	printf("waiting\n");
	fflush(stdout);
	wait_file(go_file, 60000, "reset-once");

	if (!wait_poll_err(2000, seen, sizeof(seen))) {
		printf("sigio codes=%s\n", seen);
		fail("no SIGIO with si_code POLL_ERR for the reset (codes %s)", seen);
	}
	printf("sigio POLL_ERR (codes %s)\n", seen);
	expect_rev(A, "A", 1, "after the reset");
	expect_rev(B, "B", 1, "after the reset");
	expect_rev(A, "A", 1, "again");
	r = TIMED(5000, read(A, b, 4096));
	expect_eio(r, errno, "read A");
	expect_rev(A, "A", 0, "after its EIO");
	fill(b, 100, 62, 0);
	r = TIMED(5000, write(B, b, 100));
	expect_eio(r, errno, "write B");
	expect_rev(B, "B", 0, "after its EIO");

	C = xopen(dev, O_RDWR | O_NONBLOCK);
	expect_rev(C, "C", 0, "(opened after the reset)");
	r = read(C, b, 4096);
	printf("read C (non-blocking) res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == EAGAIN))
		fail("after the reset the FIFO should be empty: a non-blocking read got %s",
		     res_str(r, errno));
	works(A, B, 4096, 63, "A to B");
	works(B, A, 4096, 64, "B to A");
	expect_rev(A, "A", 0, "at the end");
	expect_rev(B, "B", 0, "at the end");
	close(S);
	printf("ok reset-once\n");
	return 0;
}

/*
 * reset-blocked --ready R --go G: a thread blocked in read() on fd R (empty
 * FIFO) when the device resets: that read fails with EIO -- R's report --
 * so R's poll is clean after and its next read does not fail again; fd B,
 * idle, sees POLLERR and EIO once.
 */
static int cmd_reset_blocked(void)
{
	struct blocked rd = { .write_ = 0, .len = 4096 };
	uint8_t b[4096];
	pthread_t t;
	int B;
	ssize_t r;

	drain(dev);
	rd.fd = xopen(dev, O_RDWR);
	B = xopen(dev, O_RDWR);
	if (pthread_create(&t, NULL, blocked_io, &rd))
		die("pthread_create");
	sleep_ms(300);
	if (rd.done)
		fail("a read of the empty FIFO returned %s", res_str(rd.res, rd.err));
	touch(ready_file);
	printf("waiting\n");
	fflush(stdout);
	wait_file(go_file, 60000, "reset-blocked");
	if (!wait_done(&rd, KILL_MS)) {
		put(B, 1, 1, 0, "unblocking the reader");
		pthread_join(t, NULL);
		fail("the read blocked at the reset had not ended %d ms later", KILL_MS);
	}
	pthread_join(t, NULL);
	printf("blocked read res=%s\n", res_str(rd.res, rd.err));
	if (!(rd.res == -1 && rd.err == EIO))
		fail("the read blocked at the reset: %s, expected -1 EIO", res_str(rd.res, rd.err));
	expect_rev(rd.fd, "R", 0, "after its read failed");
	if (fcntl(rd.fd, F_SETFL, O_NONBLOCK))
		die_errno("fcntl O_NONBLOCK");
	r = read(rd.fd, b, sizeof(b));
	printf("read R again (non-blocking) res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == EAGAIN))
		fail("R's next read after its failed one: %s, expected EAGAIN (empty FIFO, "
		     "the error already reported)", res_str(r, errno));
	expect_rev(B, "B", 1, "(idle at the reset)");
	r = TIMED(5000, read(B, b, sizeof(b)));
	expect_eio(r, errno, "read B");
	expect_rev(B, "B", 0, "after its EIO");
	if (fcntl(rd.fd, F_SETFL, 0))
		die_errno("fcntl");
	works(B, rd.fd, 4096, 65, "B to R");
	printf("ok reset-blocked\n");
	return 0;
}

/* ------------------------------------------------------------ 5. ioctls */

static int cmd_ioctl(void)
{
	size_t depth = need_depth();
	uint8_t b[16];
	__u32 v = 0;
	int fd, other, r, n;

	drain(dev);
	fd = xopen(dev, O_RDWR);
	other = xopen(dev, O_RDWR | O_NONBLOCK);

	n = fionread(fd);
	printf("FIONREAD empty=%d\n", n);
	if (n != 0)
		fail("FIONREAD on an empty FIFO: %d", n);
	put(fd, 1234, 71, 0, "1234 bytes");
	n = fionread(fd);
	printf("FIONREAD after 1234=%d\n", n);
	if (n != 1234)
		fail("FIONREAD after writing 1234 bytes: %d", n);

	r = ioctl(fd, FIFOLAB_IOC_GET_DEPTH, &v);
	printf("GET_DEPTH res=%s value=%u sysfs=%zu\n", res_str(r, errno), v, depth);
	if (r || v != depth)
		fail("FIFOLAB_IOC_GET_DEPTH: %s, value %u, sysfs fifo_depth %zu",
		     res_str(r, errno), v, depth);
	v = 0;
	r = ioctl(fd, FIFOLAB_IOC_GET_SPACE, &v);
	printf("GET_SPACE res=%s value=%u expected=%zu\n", res_str(r, errno), v, depth - 1234);
	if (r || v != depth - 1234)
		fail("FIFOLAB_IOC_GET_SPACE with 1234 bytes held: %s, value %u, expected %zu",
		     res_str(r, errno), v, depth - 1234);

	r = ioctl(fd, _IO(FIFOLAB_IOC_MAGIC, 0x7f));
	printf("unknown _IO(0xF1,0x7f) res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == ENOTTY))
		fail("unknown ioctl _IO(0xF1, 0x7f): %s, expected ENOTTY", res_str(r, errno));
	r = ioctl(fd, _IOR('x', 0x42, __u32), &v);
	printf("unknown _IOR('x',0x42) res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == ENOTTY))
		fail("unknown ioctl _IOR('x', 0x42): %s, expected ENOTTY", res_str(r, errno));
	r = ioctl(fd, FIFOLAB_IOC_GET_DEPTH, (void *)8);
	printf("GET_DEPTH bad pointer res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == EFAULT))
		fail("FIFOLAB_IOC_GET_DEPTH with a bad pointer: %s, expected EFAULT",
		     res_str(r, errno));

	r = ioctl(fd, FIFOLAB_IOC_GET_SPACE, (void *)8);
	printf("GET_SPACE bad pointer res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == EFAULT))
		fail("FIFOLAB_IOC_GET_SPACE with a bad pointer: %s, expected EFAULT",
		     res_str(r, errno));
	r = ioctl(fd, FIONREAD, (void *)8);
	printf("FIONREAD bad pointer res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == EFAULT))
		fail("FIONREAD with a bad pointer: %s, expected EFAULT", res_str(r, errno));
	n = fionread(fd);
	if (n != 1234)
		fail("FIONREAD after the failed ioctls: %d, expected 1234", n);

	r = ioctl(fd, FIFOLAB_IOC_CLEAR);
	printf("CLEAR res=%s\n", res_str(r, errno));
	if (r)
		fail("FIFOLAB_IOC_CLEAR: %s", res_str(r, errno));
	n = fionread(fd);
	printf("FIONREAD after CLEAR=%d\n", n);
	if (n != 0)
		fail("FIONREAD after CLEAR: %d", n);
	r = read(other, b, sizeof(b));
	printf("non-blocking read after CLEAR res=%s\n", res_str(r, errno));
	if (!(r == -1 && errno == EAGAIN))
		fail("a non-blocking read after CLEAR: %s, expected EAGAIN", res_str(r, errno));
	v = 0;
	r = ioctl(fd, FIFOLAB_IOC_GET_SPACE, &v);
	if (r || v != depth)
		fail("FIFOLAB_IOC_GET_SPACE after CLEAR: %s, value %u, expected %zu",
		     res_str(r, errno), v, depth);
	expect_rev(fd, "fd", 0, "after CLEAR");
	expect_rev(other, "other", 0, "after CLEAR");
	if (revents(fd) & POLLIN)
		fail("POLLIN after CLEAR");
	works(other, fd, 4096, 72, "after CLEAR (no error for it)");
	printf("ok ioctl\n");
	return 0;
}

static void clear(int fd, const char *what)
{
	int r = ioctl(fd, FIFOLAB_IOC_CLEAR);

	printf("CLEAR (%s) res=%s\n", what, res_str(r, errno));
	if (r)
		fail("FIFOLAB_IOC_CLEAR: %s", res_str(r, errno));
}

/* "ECANCELED or the count it moved"; a read of an empty FIFO moved none */
static void check_ended_blocked(struct blocked *bl, const char *what)
{
	pthread_t dummy;

	(void)dummy;
	if (!wait_done(bl, KILL_MS)) {
		drain_quiet();		/* a write may end now */
		fail("%s pending at CLEAR had not ended %d ms later", what, KILL_MS);
	}
	printf("%s res=%s\n", what, res_str(bl->res, bl->err));
	if (bl->res == -1 && bl->err == ECANCELED)
		return;
	if (bl->res >= 0 && (size_t)bl->res <= bl->len && (bl->write_ || bl->res == 0))
		return;
	fail("%s pending at CLEAR: %s, expected ECANCELED or the count it moved", what,
	     res_str(bl->res, bl->err));
}

static int cmd_clear_blocked(void)
{
	size_t depth = need_depth();
	struct blocked wr = { .write_ = 1, .len = 2 * depth };
	struct blocked rd = { .write_ = 0, .len = 4096 };
	pthread_t t;
	double end;
	__u32 space = 1;
	int ctl, n;

	drain(dev);
	ctl = xopen(dev, O_RDWR);

	/* a writer blocked in write() larger than the free space */
	wr.fd = xopen(dev, O_WRONLY);
	if (pthread_create(&t, NULL, blocked_io, &wr))
		die("pthread_create");
	end = now() + 10;
	do {
		sleep_ms(10);
		if (ioctl(ctl, FIFOLAB_IOC_GET_SPACE, &space))
			fail("FIFOLAB_IOC_GET_SPACE: %s", res_str(-1, errno));
	} while (space && now() < end);
	sleep_ms(200);
	if (wr.done)
		fail("write of %zu bytes with no reader returned %s before CLEAR", wr.len,
		     res_str(wr.res, wr.err));
	printf("writer blocked: space=%u\n", space);
	clear(ctl, "a writer blocked");
	check_ended_blocked(&wr, "blocked write()");
	pthread_join(t, NULL);
	sleep_ms(100);
	n = fionread(ctl);
	printf("FIONREAD after the writer ended=%d\n", n);
	if (n != 0)
		fail("after CLEAR and the blocked writer's end the FIFO holds %d bytes", n);
	expect_rev(ctl, "ctl", 0, "after CLEAR");
	expect_rev(wr.fd, "writer", 0, "after CLEAR");

	/* a reader blocked in read() on the empty FIFO */
	rd.fd = xopen(dev, O_RDONLY);
	if (pthread_create(&t, NULL, blocked_io, &rd))
		die("pthread_create");
	sleep_ms(300);
	if (rd.done)
		fail("read of the empty FIFO returned %s", res_str(rd.res, rd.err));
	clear(ctl, "a reader blocked");
	check_ended_blocked(&rd, "blocked read()");
	pthread_join(t, NULL);
	expect_rev(rd.fd, "reader", 0, "after CLEAR");

	/* a libaio read pending on the empty FIFO */
	{
		static uint8_t rbuf[4096];
		io_context_t ctx = aio_ctx();
		struct iocb cb;
		long res;

		io_prep_pread(&cb, ctl, rbuf, sizeof(rbuf), 0);
		aio_go(ctx, &cb);
		sleep_ms(300);
		if ((res = aio_wait(ctx, 0)) != TIMEDOUT)
			fail("a libaio read of the empty FIFO completed: %s", neg_str(res));
		clear(ctl, "a libaio read pending");
		res = aio_wait(ctx, KILL_MS);
		printf("libaio read res=%s\n", res == TIMEDOUT ? "timeout" : neg_str(res));
		if (res != -ECANCELED && res != 0)
			fail("libaio read pending at CLEAR: %s, expected -ECANCELED",
			     res == TIMEDOUT ? "no event" : neg_str(res));
		io_destroy(ctx);
	}

	/* a libaio write and an io_uring write larger than the free space */
	for (int uring = 0; uring < 2; uring++) {
		const char *what = uring ? "io_uring write" : "libaio write";
		uint8_t *b = map_buf(2 * depth);
		struct io_uring ring;
		io_context_t ctx = 0;
		struct iocb cb;
		long res;

		fill(b, 2 * depth, 83, 0);
		if (uring) {
			struct io_uring_sqe *sqe;

			uring_init(&ring);
			sqe = io_uring_get_sqe(&ring);
			io_uring_prep_write(sqe, ctl, b, 2 * depth, -1);
			uring_submit(&ring);
		} else {
			ctx = aio_ctx();
			io_prep_pwrite(&cb, ctl, b, 2 * depth, 0);
			aio_go(ctx, &cb);
		}
		sleep_ms(300);
		res = uring ? uring_wait(&ring, 0) : aio_wait(ctx, 0);
		if (res != TIMEDOUT)
			fail("a %s of %zu bytes with no reader completed: %s", what, 2 * depth,
			     neg_str(res));
		clear(ctl, what);
		res = uring ? uring_wait(&ring, KILL_MS) : aio_wait(ctx, KILL_MS);
		printf("%s res=%s\n", what, res == TIMEDOUT ? "timeout" : neg_str(res));
		if (res == TIMEDOUT) {
			drain_quiet();
			fail("the %s pending at CLEAR had not ended %d ms later", what, KILL_MS);
		}
		if (res != -ECANCELED && !(res >= 0 && res <= (long)(2 * depth)))
			fail("%s pending at CLEAR: %s, expected -ECANCELED or the count it moved",
			     what, neg_str(res));
		sleep_ms(100);
		n = fionread(ctl);
		printf("FIONREAD after the %s ended=%d\n", what, n);
		if (n != 0)
			fail("after CLEAR and the %s's end the FIFO holds %d bytes", what, n);
		if (uring)
			io_uring_queue_exit(&ring);
		else
			io_destroy(ctx);
		munmap(b, 2 * depth);
	}
	expect_rev(ctl, "ctl", 0, "at the end");
	works(ctl, ctl, 4096, 82, "after CLEAR");
	printf("ok clear-blocked\n");
	return 0;
}

/* fionread N: the host put N bytes (its pattern) into the RX FIFO first. */
static int cmd_fionread(void)
{
	size_t n = nargs > 0 ? parse_size(args[0], "N") : 0;
	int fd = xopen(dev, O_RDWR), v;

	v = fionread(fd);
	printf("FIONREAD held=%zu res=%d\n", n, v);
	if (v != (int)n)
		fail("FIONREAD with %zu bytes from the host: %d", n, v);
	get(fd, n, HOST_SEED, 0, "the host's bytes");
	v = fionread(fd);
	printf("FIONREAD after reading res=%d\n", v);
	if (v)
		fail("FIONREAD after reading everything: %d", v);
	printf("ok fionread %zu\n", n);
	return 0;
}

struct out_waiter {
	int fd;
	short rev;
	int r;
	volatile int done;
};

static void *pollout_waiter(void *arg)
{
	struct out_waiter *w = arg;
	struct pollfd p = { .fd = w->fd, .events = POLLOUT };

	block_alarm();
	do
		w->r = poll(&p, 1, KILL_MS + 5000);
	while (w->r < 0 && errno == EINTR);
	w->rev = p.revents;
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * pollout-wake: a poll(POLLOUT) waiter on a full FIFO stays asleep while
 * less than min(PIPE_BUF, depth) is free, and is woken (POLLOUT) once that
 * much is.
 */
static int cmd_pollout_wake(void)
{
	size_t depth = need_depth(), pb = depth < PIPEBUF ? depth : PIPEBUF;
	struct out_waiter w = { 0 };
	double end;
	pthread_t t;
	int fd;

	drain(dev);
	fd = xopen(dev, O_RDWR);
	w.fd = xopen(dev, O_WRONLY);
	put(fd, depth, 131, 0, "filling the FIFO");
	if (pthread_create(&t, NULL, pollout_waiter, &w))
		die("pthread_create");
	sleep_ms(300);
	if (w.done)
		fail("poll(POLLOUT) on a full FIFO returned %d (revents %s)", w.r, rev_str(w.rev));
	get(fd, pb - 1, 131, 0, "making room for PIPE_BUF - 1");
	sleep_ms(500);
	printf("free=%zu waiter=%s\n", pb - 1, w.done ? "returned" : "asleep");
	if (w.done)
		fail("poll(POLLOUT) returned %d (revents %s) with %zu bytes free (< %zu)", w.r,
		     rev_str(w.rev), pb - 1, pb);
	get(fd, 1, 131, pb - 1, "one more byte");
	end = now() + KILL_MS / 1e3;
	while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE) && now() < end)
		sleep_ms(5);
	printf("free=%zu waiter=%s revents=%s\n", pb, w.done ? "returned" : "asleep",
	       rev_str(w.rev));
	if (!w.done) {
		get(fd, depth - pb, 131, pb, "the rest");
		pthread_join(t, NULL);
		fail("poll(POLLOUT) not woken %d ms after %zu bytes became free", KILL_MS, pb);
	}
	pthread_join(t, NULL);
	if (w.r != 1 || !(w.rev & POLLOUT))
		fail("poll(POLLOUT) returned %d, revents %s", w.r, rev_str(w.rev));
	get(fd, depth - pb, 131, pb, "the rest");
	expect_empty(dev, "at the end");
	printf("ok pollout-wake\n");
	return 0;
}

/* ------------------------------------------------------------ 6. lost wake-up */

static double t_go;		/* when the go file appeared (or the write began) */

static void *go_watcher(void *arg)
{
	(void)arg;
	block_alarm();
	wait_file(go_file, 60000, "lost-wake");
	t_go = now();		/* read after pthread_join() */
	return NULL;
}

/* ONE poll()/epoll_wait() for POLLIN, no request in flight: only a wake-up
 * (or the 15 s limit) ends it.  1 if it woke; its revents in *rev. */
static int one_wait(int fd, const char *how, short *rev)
{
	int r;

	*rev = 0;
	if (!strcmp(how, "poll")) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		do
			r = poll(&p, 1, KILL_MS + 5000);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			die_errno("poll");
		*rev = p.revents;
	} else {
		struct epoll_event ev = { .events = EPOLLIN }, out;
		int ep = epoll_create1(0);

		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
			die_errno("epoll");
		do
			r = epoll_wait(ep, &out, 1, KILL_MS + 5000);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			die_errno("epoll_wait");
		if (r > 0)
			*rev = (short)out.events;
		close(ep);
	}
	return r > 0;
}

static int cmd_lost_wake(void)
{
	const char *how = nargs > 0 ? args[0] : "", *src = nargs > 1 ? args[1] : "";
	size_t n = nargs > 2 ? parse_size(args[2], "N") : 100;
	int host = !strcmp(src, "host"), fd, woke, status;
	uint32_t seed = host ? HOST_SEED : 91;
	double bound_ms, woke_ms, t_wait, t_wake, t_from;
	uint8_t *b = xmalloc(n);
	long long cto = -1;
	short rev;
	FILE *f;

	if ((strcmp(how, "poll") && strcmp(how, "epoll")) || (!host && strcmp(src, "loop")))
		die("lost-wake poll|epoll loop|host [N]");
	f = fopen("/sys/module/fifolab/parameters/completion_timeout_ms", "r");
	if (!f || fscanf(f, "%lld", &cto) != 1)
		die("cannot read completion_timeout_ms");
	fclose(f);
	bound_ms = 2.0 * cto + 500;
	drain(dev);
	fd = xopen(dev, O_RDWR | O_NONBLOCK);
	if (revents(fd) & POLLIN)
		fail("the FIFO is not empty");

	if (host) {
		/* the host creates the go file, then sends the bytes */
		pthread_t t;

		if (pthread_create(&t, NULL, go_watcher, NULL))
			die("pthread_create");
		touch(ready_file);
		printf("waiting\n");
		fflush(stdout);
		t_wait = now();
		woke = one_wait(fd, how, &rev);
		t_wake = now();
		pthread_join(t, NULL);
		t_from = t_go;
	} else {
		/* another process writes the bytes once the go file exists */
		double *when = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		pid_t writer;

		if (when == MAP_FAILED)
			die_errno("mmap");
		writer = xfork("writer");
		if (!writer) {
			int wfd = xopen(dev, O_WRONLY);

			wait_file(go_file, 60000, "lost-wake writer");
			when[0] = now();
			put(wfd, n, seed, 0, "the writer");
			exit(0);
		}
		touch(ready_file);
		printf("waiting\n");
		fflush(stdout);
		t_wait = now();
		woke = one_wait(fd, how, &rev);
		t_wake = now();
		if (!wait_child_for(writer, &status, 20000))
			die("the writer did not finish");
		t_from = when[0];
	}
	woke_ms = (t_wake - t_from) * 1e3;
	if (woke && t_wake - t_wait >= (KILL_MS + 5000) / 1e3 - 0.05) {
		/* poll()/epoll_wait() look once more when they time out */
		printf("the wait ended at its %d ms timeout, not by a wake-up\n", KILL_MS + 5000);
		woke = 0;
	}
	printf("lost-wake how=%s source=%s woke=%s revents=%s woke_ms=%.1f bound_ms=%.0f\n",
	       how, src, woke ? "yes" : "no", rev_str(rev), woke ? woke_ms : -1.0, bound_ms);
	/* collect the bytes whatever happened */
	{
		size_t got = 0;
		double end = now() + 10;

		while (got < n && now() < end) {
			ssize_t r = read(fd, b + got, n - got);

			if (r > 0)
				got += r;
			else if (r < 0 && errno == EAGAIN)
				sleep_ms(10);
			else
				fail("reading the bytes: %s", res_str(r, errno));
		}
		if (got != n)
			fail("only %zu of %zu bytes arrived", got, n);
		check_pat(b, n, seed, 0, "the bytes that woke the waiter");
	}
	if (!woke)
		fail("%s on the empty FIFO was not woken by the bytes' arrival in %d ms "
		     "(their DATA_AVAIL message was lost)", how, KILL_MS + 5000);
	if (!(rev & POLLIN))
		fail("%s woke without POLLIN (revents %s)", how, rev_str(rev));
	if (woke_ms > bound_ms)
		fail("%s woke %.1f ms after the bytes arrived: more than 2 x completion_timeout_ms "
		     "+ 500 = %.0f ms", how, woke_ms, bound_ms);
	printf("ok lost-wake %s %s woke_ms=%.1f\n", how, src, woke_ms);
	return 0;
}

/* ------------------------------------------------------------ 7. PIPE_BUF */

static int cmd_nonblock_atomic(void)
{
	size_t depth = need_depth(), pb = depth < PIPEBUF ? depth : PIPEBUF;
	size_t level = 0;
	uint64_t off = 0;
	uint8_t *b = xmalloc(depth);
	int wfd, nfd;
	/* {free space before, n}: n > free, so EAGAIN and nothing written */
	ssize_t r;

	drain(dev);
	wfd = xopen(dev, O_WRONLY);
	nfd = xopen(dev, O_RDWR | O_NONBLOCK);

#define NB_WRITE(n_, expect_ok) do {					\
	size_t _n = (n_);						\
	fill(b, _n, 101, off);						\
	r = write(nfd, b, _n);						\
	printf("free=%zu nonblock write n=%zu res=%s\n", depth - level, _n,	\
	       res_str(r, errno));					\
	if (expect_ok && r != (ssize_t)_n)				\
		fail("O_NONBLOCK write of %zu bytes with %zu free: %s, expected %zu", \
		     _n, depth - level, res_str(r, errno), _n);		\
	if (!expect_ok && !(r == -1 && errno == EAGAIN))		\
		fail("O_NONBLOCK write of %zu <= PIPE_BUF bytes with only %zu free: %s, " \
		     "expected EAGAIN and nothing written", _n, depth - level,	\
		     res_str(r, errno));					\
	if (r > 0) {							\
		off += r;						\
		level += r;						\
	}								\
} while (0)

	/* free = pb - 1 */
	fill(b, depth - pb + 1, 101, off);
	r = TIMED(10000, write(wfd, b, depth - pb + 1));
	if (r != (ssize_t)(depth - pb + 1))
		fail("filling: %s", res_str(r, errno));
	off += r;
	level += r;
	NB_WRITE(pb, 0);		/* 4096 with 4095 free */
	{
		/* the same as 3 iovecs (1000 + 96 + 3000 when PIPE_BUF is 4096) */
		size_t a = pb / 4, c = pb - a - pb / 40;
		struct iovec iov[3] = { { b, a }, { b + a, pb / 40 }, { b + a + pb / 40, c } };

		fill(b, pb, 101, off);
		r = writev(nfd, iov, 3);
		printf("free=%zu nonblock writev n=%zu res=%s\n", depth - level, pb,
		       res_str(r, errno));
		if (!(r == -1 && errno == EAGAIN))
			fail("O_NONBLOCK writev of %zu <= PIPE_BUF bytes with only %zu free: %s, "
			     "expected EAGAIN and nothing written", pb, depth - level,
			     res_str(r, errno));
	}
	NB_WRITE(2000, 1);		/* fits */
	NB_WRITE(pb - 2000, 0);		/* 2096 with 2095 free */
	NB_WRITE(pb, 0);
	NB_WRITE(depth - level, 1);	/* exactly the free space */
	NB_WRITE(1, 0);			/* full */

	/* everything accepted is there, in order, and nothing else */
	{
		int rfd = xopen(dev, O_RDONLY | O_NONBLOCK);
		size_t got = 0;

		while (got < level) {
			r = read(rfd, b, depth);
			if (r <= 0)
				fail("reading back after %zu of %zu bytes: %s", got, level,
				     res_str(r, errno));
			check_pat(b, r, 101, got, "bytes the non-blocking writes accepted");
			got += r;
		}
		r = read(rfd, b, depth);
		if (!(r == -1 && errno == EAGAIN))
			fail("%s more than the %zu bytes accepted", res_str(r, errno), level);
		printf("read back %zu bytes in order\n", got);
	}
	printf("ok nonblock-atomic\n");
	return 0;
}

static int cmd_pollout(void)
{
	size_t depth = need_depth(), pb = depth < PIPEBUF ? depth : PIPEBUF, level = 0;
	size_t wrote = 0;	/* stream offset of the next byte written */
	uint8_t *b = xmalloc(depth);
	int fd;

	drain(dev);
	fd = xopen(dev, O_RDWR);

#define POLLOUT_AT(free_) do {						\
	size_t _f = (free_);						\
	short _rev;							\
	if (_f < depth - level) {					\
		size_t _n = depth - level - _f;				\
		fill(b, _n, 111, wrote);				\
		if (TIMED(10000, write(fd, b, _n)) != (ssize_t)_n)	\
			fail("filling to %zu free", _f);		\
		level += _n;						\
		wrote += _n;						\
	} else if (_f > depth - level) {				\
		size_t _n = _f - (depth - level);			\
		get(fd, _n, 111, level_read, "making room");		\
		level_read += _n;					\
		level -= _n;						\
	}								\
	_rev = revents(fd);						\
	printf("free=%zu revents=%s\n", _f, rev_str(_rev));		\
	if (_f >= pb && !(_rev & POLLOUT))				\
		fail("no POLLOUT with %zu bytes free (>= %zu)", _f, pb);	\
	if (_f < pb && (_rev & POLLOUT))				\
		fail("POLLOUT with only %zu bytes free (< min(PIPE_BUF, depth) = %zu)", \
		     _f, pb);						\
} while (0)
	{
		size_t level_read = 0;

		POLLOUT_AT(depth);
		POLLOUT_AT(pb);
		POLLOUT_AT(pb - 1);
		POLLOUT_AT(1);
		POLLOUT_AT(0);
		POLLOUT_AT(pb - 1);
		POLLOUT_AT(pb);
		if (pb < depth)
			POLLOUT_AT(pb + 1);
		get(fd, level, 111, level_read, "the rest");
	}
	expect_empty(dev, "at the end");
	printf("ok pollout\n");
	return 0;
}

/* ------------------------------------------------------------ misc */

static int cmd_drain(void)
{
	printf("drained %zu\n", drain_quiet());
	printf("ok drain\n");
	return 0;
}

static const struct sub {
	const char *name;
	int (*fn)(void);
} subs[] = {
	{ "readv", cmd_readv },
	{ "writev", cmd_writev },
	{ "aio-writev", cmd_aio_writev },
	{ "aio-readv", cmd_aio_readv },
	{ "uring-writev", cmd_uring_writev },
	{ "uring-readv", cmd_uring_readv },
	{ "big-write", cmd_big_write },
	{ "read-amount", cmd_read_amount },
	{ "vec-many", cmd_vec_many },
	{ "uring-gone", cmd_uring_gone },
	{ "aio-gone", cmd_aio_gone },
	{ "err-once", cmd_err_once },
	{ "reset-once", cmd_reset_once },
	{ "reset-blocked", cmd_reset_blocked },
	{ "ioctl", cmd_ioctl },
	{ "clear-blocked", cmd_clear_blocked },
	{ "lost-wake", cmd_lost_wake },
	{ "nonblock-atomic", cmd_nonblock_atomic },
	{ "pollout", cmd_pollout },
	{ "pollout-wake", cmd_pollout_wake },
	{ "fionread", cmd_fionread },
	{ "drain", cmd_drain },
	{ "exec-target", cmd_exec_target },
};

int main(int argc, char **argv)
{
	static char *rest[16];

	prog = "streamtest";
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ready") && i + 1 < argc)
			ready_file = argv[++i];
		else if (!strcmp(argv[i], "--go") && i + 1 < argc)
			go_file = argv[++i];
		else if (nargs < 16)
			rest[nargs++] = argv[i];
	}
	if (nargs < 2) {
		fprintf(stderr, "usage: streamtest SUB DEV [ARG...] [--ready FILE] [--go FILE]\n"
			"  (the subcommands are listed at the top of streamtest.c)\n");
		return 2;
	}
	cmd = rest[0];
	dev = rest[1];
	args = rest + 2;
	nargs -= 2;
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (!strcmp(subs[i].name, cmd)) {
			if (strcmp(cmd, "exec-target"))
				watchdog(90);
			return subs[i].fn();
		}
	}
	fprintf(stderr, "streamtest: unknown subcommand %s\n", cmd);
	return 2;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * pipediff - a differential oracle (GitHub issue 11): the stream semantics of
 * /dev/fifolabN checked, op by op, against the kernel's own pipe.
 *
 *   pipediff DEV SEED COUNT [--start N] [--profile mixed|big] [--quiet]
 *   pipediff --pipe-vs-pipe SEED COUNT [--depth BYTES] [...]
 *
 * COUNT random operation sequences, numbered from N (default 0), are drawn
 * from SEED.  Sequence k depends on SEED and k alone and starts from an empty
 * FIFO, so `pipediff DEV SEED 1 --start k` replays it.  Every op runs on the
 * device and on a named FIFO (mkfifo in /tmp, opened O_RDWR: it never sees
 * EOF), in this one thread, and the results are compared: return values and
 * errno, the bytes read (and that nothing beyond them was written), FIONREAD,
 * poll and level-triggered epoll_wait revents (IN|OUT|ERR|HUP), the SIGIO
 * signals (F_SETSIG: si_code, si_band), libaio PREAD/PWRITE/PREADV/PWRITEV
 * event res and io_uring READ/WRITE/READV/WRITEV cqe res.  After every op
 * FIONREAD of both and FIFOLAB_IOC_GET_SPACE of the device are checked
 * against the byte count this program keeps (the model).
 *
 * Ops: read/readv, write/writev (1..64 segments of odd sizes and alignments,
 * empty segments among them), O_NONBLOCK on/off, poll, epoll_wait, FIONREAD,
 * "settle" (no late signal may come), the same transfers through libaio and
 * io_uring, a read of an EMPTY FIFO left waiting in io_uring (both sides) or
 * libaio (device side only; a libaio read of an empty pipe would block inside
 * io_submit) until a write feeds it, and a read into an unmapped buffer
 * (EFAULT).  Nothing is ever issued that cannot complete in one thread: no
 * blocking read of an empty FIFO, no blocking write that does not fit; a
 * SIGALRM watchdog reports a hang naming the op.  A sequence ends by reading
 * both FIFOs empty, so every byte written is compared.
 *
 * The contract (the driver's stream semantics) and what differs by design:
 *   - Capacity.  The device holds depth bytes (FIFOLAB_IOC_GET_DEPTH); a
 *     pipe counts page slots, so its "full" depends on history.  The pipe is
 *     made 16 times deeper than the device, so it never fills, and the
 *     device's expected result is the pipe's with the byte rule applied: a
 *     non-blocking write of n bytes with free = depth - level fails with
 *     EAGAIN if free == 0, or if n <= PIPE_BUF and free < n (atomicity),
 *     else moves min(n, free) -- and the pipe is then written exactly that
 *     many bytes, so the streams stay equal.  EPOLLOUT is expected iff
 *     free >= min(PIPE_BUF, depth).  Everything else must equal the pipe.
 *   - SIGIO.  fs/pipe.c sends POLL_IN to readers at the end of every write
 *     and POLL_OUT to writers at the end of every read, also of one that
 *     failed (EAGAIN, EFAULT) and moved nothing; the device signals from its
 *     interrupt path when bytes arrive or space grows.  So the pipe's
 *     signals of an op that moved no byte are not expected from the device
 *     (they are counted, and the closing lines say how many); and the
 *     signals of the waiting-read ops are not compared at all (the pipe's
 *     depend on how io_uring retried it), only drained.
 *   - A device read returns min(level, iovec total, depth); a pending read
 *     fed by a write of w bytes returns min(w, its length), as the pipe's.
 *
 * Prints nothing per op unless it differs; at the end
 * "pipediff: N sequences, M ops, 0 differences" (exit 0), or the first
 * difference with seed, sequence, op, both results, the replay command and
 * the op history of the sequence (exit 1).  --mutate-device drops the last
 * segment of every vectored device read (readv, PREADV, READV) of more than
 * one: a self-test that the comparison is live (it must fail).  --pipe-vs-pipe runs against a second
 * named FIFO that plays the device, --depth BYTES deep (default 65536; the
 * byte rule emulated, signals compared as they are): a host check of the
 * generator without a VM.  --profile big: mostly 32..64 segments of up to
 * 9000 bytes.  Without --quiet: a line per sequence and the op mix; --trace:
 * every op's history line as it runs (for a replay).
 */
#include "common.h"

#include <fifolab.h>
#include <libaio.h>
#include <liburing.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#define PIPEBUF		4096	/* PIPE_BUF: POSIX atomicity of small writes */
#define MAXSEG		64
#define MAXSEGLEN	9000
#define PIPE_FACTOR	16	/* the pipe holds this many device depths */
#define OP_TIMEOUT_S	20	/* an op taking longer hung */
#define SIG_WAIT_MS	2000	/* the device signals from its interrupt path */
#define PENDING_MS	20	/* a read of an empty FIFO still waits after this */
#define SETTLE_MS	10	/* quiet time before "no more signals" is believed */
#define LATE_MS		200	/* after a signal difference: what comes later */
#define REAP_MS		10000
#define MAXSIG		64
#define HIST_SIZE	(128 << 10)
#define EVMASK		(POLLIN | POLLOUT | POLLERR | POLLHUP)
#define PENDING		LONG_MIN	/* an async request not completed (yet) */
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

enum kind {
	OP_READ,	/* read / readv */
	OP_WRITE,	/* write / writev */
	OP_AIO_READ,	/* libaio PREAD / PREADV */
	OP_AIO_WRITE,	/* libaio PWRITE / PWRITEV */
	OP_URING_READ,	/* io_uring READ / READV */
	OP_URING_WRITE,	/* io_uring WRITE / WRITEV */
	OP_AIO_WAIT,	/* libaio read of the empty device; a write feeds it */
	OP_URING_WAIT,	/* io_uring read of both empty FIFOs; a write feeds them */
	OP_BAD_READ,	/* read into an unmapped buffer */
	OP_NONBLOCK,	/* O_NONBLOCK on or off */
	OP_POLL,
	OP_EPOLL,
	OP_FIONREAD,
	OP_SETTLE,	/* no late signal may come */
};

static const char *const kind_name[][2] = {
	[OP_READ] = { "read", "readv" },
	[OP_WRITE] = { "write", "writev" },
	[OP_AIO_READ] = { "aio PREAD", "aio PREADV" },
	[OP_AIO_WRITE] = { "aio PWRITE", "aio PWRITEV" },
	[OP_URING_READ] = { "uring READ", "uring READV" },
	[OP_URING_WRITE] = { "uring WRITE", "uring WRITEV" },
	[OP_AIO_WAIT] = { "aio PREAD of empty", "aio PREADV of empty" },
	[OP_URING_WAIT] = { "uring READ of empty", "uring READV of empty" },
	[OP_BAD_READ] = { "read to bad buffer", "readv to bad buffer" },
	[OP_NONBLOCK] = { "O_NONBLOCK", "O_NONBLOCK" },
	[OP_POLL] = { "poll", "poll" },
	[OP_EPOLL] = { "epoll_wait", "epoll_wait" },
	[OP_FIONREAD] = { "FIONREAD", "FIONREAD" },
	[OP_SETTLE] = { "settle", "settle" },
};

enum path { SYS, AIO, URING };

struct op {
	enum kind kind;
	int vec;		/* the vectored variant */
	int nseg;
	int on;			/* OP_NONBLOCK: the new state */
	size_t len[MAXSEG];
	size_t off[MAXSEG];	/* into the read arena, or from base */
	size_t base;		/* a write's segments: in the source arena */
	size_t total, span;
	size_t feed;		/* OP_*_WAIT: the write that feeds the read */
};

struct side {
	const char *name;
	int fd, ep, sig;
	io_context_t aio;
	struct io_uring ring;
	uint8_t *rd;			/* read arena: same layout on both sides */
	struct iovec iov[MAXSEG];	/* the op's, alive until reaped */
	int niov;
	int sigs[MAXSIG];		/* si_code << 16 | si_band */
	int nsig;
};

static struct side dev = { .name = "device" }, fifo = { .name = "pipe" };
static uint8_t *src;	/* what writes send: random bytes */
static uint8_t *bad;	/* PROT_NONE */
static size_t arena;	/* size of the read arenas; the source is twice it */

static struct {
	size_t depth, level;
	int nonblock, sigio;
} m;

static struct {
	const char *dev;
	const char *argv0;
	uint64_t seed;
	unsigned long start, count, seq;
	int opi, big, quiet, mutate, emulate, trace;
	size_t depth;				/* --depth (--pipe-vs-pipe) */
	char fifo_path[64], dev_path[64];	/* to unlink at exit */
	unsigned long ops, sigs, sigs_unmoved, waits;
	unsigned long kinds[OP_SETTLE + 1][2];	/* ops run, by kind and vec */
} run;

static const char usage[] =
	"usage: pipediff DEV SEED COUNT [--start N] [--profile mixed|big] [--quiet] [--trace] [--mutate-device]\n"
	"       pipediff --pipe-vs-pipe SEED COUNT [--depth BYTES] [options as above]\n";

/* -------------------------------------------------------------- random */

static uint64_t rng;

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* 0 .. n-1 */
static size_t rnd(size_t n)
{
	return n ? splitmix64(&rng) % n : 0;
}

static int chance(unsigned int percent)
{
	return rnd(100) < percent;
}

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ------------------------------------------------ history and reporting */

static char hist[HIST_SIZE];	/* this sequence's ops, one a line */
static size_t hist_len;
static char cur[1024];		/* the running op, for a report or a hang */
static size_t desc_at;		/* where its description starts in cur */
static char replay[256];

/* write(), not stdio: also used by the watchdog's signal handler */
static void put(const char *s)
{
	if (write(1, s, strlen(s)) < 0)
		_exit(4);
}

static void hist_add(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (hist_len >= sizeof(hist) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(hist + hist_len, sizeof(hist) - hist_len, fmt, ap);
	va_end(ap);
	if (n > 0 && run.trace)
		put(hist + hist_len);
	if (n > 0)
		hist_len = min_sz(hist_len + n, sizeof(hist) - 1);
}

/* Only write(): it also runs in the watchdog's signal handler. */
static void print_context(void)
{
	put("pipediff:   op:       ");
	put(cur);
	put("\npipediff:   replay:   ");
	put(replay);
	put("\npipediff:   history of this sequence (op: what => device | pipe):\n");
	put(hist);
}

static void on_alarm(int sig)
{
	(void)sig;
	put("pipediff: DIFFERENCE: the op did not complete within the watchdog's time (hang)\n");
	print_context();
	_exit(1);
}

static const char *errname(long e)
{
	const char *s = strerrorname_np((int)e);

	return s ? s : "E?";
}

/* A result as text: a count, -ERRNO or "pending". */
static const char *fmt_ret(char *buf, size_t n, long r)
{
	if (r == PENDING)
		snprintf(buf, n, "pending");
	else if (r < 0)
		snprintf(buf, n, "-%s", errname(-r));
	else
		snprintf(buf, n, "%ld", r);
	return buf;
}

static void fmt_sigs(char *buf, size_t n, const int *sigs, int k)
{
	size_t at = 0;

	at += snprintf(buf, n, "{");
	for (int i = 0; i < k && at < n; i++) {
		int code = sigs[i] >> 16;

		at += snprintf(buf + at, n - at, "%s%s/%#x", i ? " " : "",
			       code == POLL_IN ? "POLL_IN" : code == POLL_OUT ?
			       "POLL_OUT" : "code?", sigs[i] & 0xFFFF);
	}
	if (at < n)
		snprintf(buf + at, n - at, "}");
}

static void fmt_events(char *buf, size_t n, unsigned int ev)
{
	snprintf(buf, n, "%s%s%s%s%s", ev ? "" : "0",
		 ev & POLLIN ? "IN " : "", ev & POLLOUT ? "OUT " : "",
		 ev & POLLERR ? "ERR " : "", ev & POLLHUP ? "HUP " : "");
}

/* The first difference: what, the device's value, the expected one. */
static void __attribute__((noreturn))
differ(const char *what, const char *devs, const char *want)
{
	alarm(0);
	fflush(stdout);
	printf("pipediff: DIFFERENCE seed=%#llx sequence=%lu op=%d: %s\n",
	       (unsigned long long)run.seed, run.seq, run.opi, what);
	printf("pipediff:   device:   %s\n", devs);
	printf("pipediff:   expected: %s (the pipe's, with the contract applied)\n", want);
	fflush(stdout);
	print_context();
	exit(1);
}

static void differ_ret(const char *what, long d, long want)
{
	char a[32], b[32];

	differ(what, fmt_ret(a, sizeof(a), d), fmt_ret(b, sizeof(b), want));
}

/* The pipe did not do what a pipe does: the oracle itself is wrong. */
static void __attribute__((noreturn, format(printf, 1, 2)))
oracle_error(const char *fmt, ...)
{
	va_list ap;

	alarm(0);
	fflush(stdout);
	printf("pipediff: ORACLE ERROR seed=%#llx sequence=%lu op=%d: ",
	       (unsigned long long)run.seed, run.seq, run.opi);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	print_context();
	exit(1);
}

/* ------------------------------------------------------------- set-up */

static void cleanup(void)
{
	if (run.fifo_path[0])
		unlink(run.fifo_path);
	if (run.dev_path[0])
		unlink(run.dev_path);
}

/* A named FIFO, read and write end in one fd, PIPE_FACTOR depths deep. */
static int open_fifo(char *path, size_t n, const char *tag)
{
	size_t want = PIPE_FACTOR * m.depth;
	int fd, got;

	snprintf(path, n, "/tmp/pipediff.%d.%s", (int)getpid(), tag);
	unlink(path);
	if (mkfifo(path, 0600))
		die_errno("mkfifo %s", path);
	fd = xopen(path, O_RDWR);
	/* as root (CAP_SYS_RESOURCE) beyond /proc/sys/fs/pipe-max-size too */
	got = fcntl(fd, F_SETPIPE_SZ, (int)want);
	if (got < 0)
		die_errno("F_SETPIPE_SZ %zu on %s", want, path);
	if ((size_t)got < want)
		die("%s holds %d bytes, not %zu", path, got, want);
	return fd;
}

static size_t dev_depth(void)
{
	__u32 v;

	if (run.emulate)
		return run.depth;
	if (ioctl(dev.fd, FIFOLAB_IOC_GET_DEPTH, &v))
		die_errno("FIFOLAB_IOC_GET_DEPTH on %s", run.dev);
	if (!v)
		die("%s: depth 0", run.dev);
	return v;
}

static long dev_space(void)
{
	__u32 v;

	if (run.emulate)
		return (long)(m.depth - m.level);
	if (ioctl(dev.fd, FIFOLAB_IOC_GET_SPACE, &v))
		return -errno;
	return v;
}

static void setup_side(struct side *s, int sig)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT };
	int r;

	s->sig = sig;
	s->ep = epoll_create1(EPOLL_CLOEXEC);
	if (s->ep < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->fd, &ev))
		die_errno("epoll on the %s", s->name);
	if (fcntl(s->fd, F_SETOWN, getpid()) || fcntl(s->fd, F_SETSIG, sig))
		die_errno("F_SETOWN/F_SETSIG on the %s", s->name);
	r = io_setup(8, &s->aio);
	if (r)
		die_neg(r, "io_setup");
	r = io_uring_queue_init(8, &s->ring, 0);
	if (r)
		die_neg(r, "io_uring_queue_init");
	s->rd = map_buf(arena);
}

static void setup(void)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	sigset_t set;
	uint64_t s = run.seed;

	/* signals are taken with sigtimedwait; SIGIO is what an overflowing
	 * realtime queue would send instead */
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 1);
	sigaddset(&set, SIGRTMIN + 2);
	sigaddset(&set, SIGIO);
	if (sigprocmask(SIG_BLOCK, &set, NULL) || sigaction(SIGALRM, &sa, NULL))
		die_errno("signal set-up");
	atexit(cleanup);

	if (run.emulate) {
		m.depth = run.depth;
		dev.fd = open_fifo(run.dev_path, sizeof(run.dev_path), "dev");
	} else {
		dev.fd = xopen(run.dev, O_RDWR);
		m.depth = dev_depth();
	}
	fifo.fd = open_fifo(run.fifo_path, sizeof(run.fifo_path), "pipe");

	arena = (4 * m.depth > (1u << 20) ? 4 * m.depth : 1u << 20) + (1u << 20);
	setup_side(&dev, SIGRTMIN + 1);
	setup_side(&fifo, SIGRTMIN + 2);
	src = map_buf(2 * arena);
	for (size_t i = 0; i < 2 * arena; i += 8) {
		uint64_t v = splitmix64(&s);

		memcpy(src + i, &v, 8);
	}
	bad = mmap(NULL, 2 * PIPEBUF, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bad == MAP_FAILED)
		die_errno("mmap PROT_NONE");
}

static void set_flags(struct side *s, int nonblock, int async)
{
	int fl = fcntl(s->fd, F_GETFL);

	fl &= ~(O_NONBLOCK | O_ASYNC);
	fl |= (nonblock ? O_NONBLOCK : 0) | (async ? O_ASYNC : 0);
	if (fl < 0 || fcntl(s->fd, F_SETFL, fl))
		die_errno("F_SETFL on the %s", s->name);
}

/* --------------------------------------------------------------- signals */

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* Take @s's queued signals into s->sigs (sorted), waiting up to @ms for at
 * least @want of them. */
static void collect(struct side *s, int want, unsigned int ms)
{
	double end = now() + ms / 1e3;
	sigset_t set;
	siginfo_t si;

	sigemptyset(&set);
	sigaddset(&set, s->sig);
	s->nsig = 0;
	for (;;) {
		struct timespec ts = { 0, 0 };
		double left = end - now();

		if (s->nsig < want && left > 0) {
			ts.tv_sec = (time_t)left;
			ts.tv_nsec = (long)((left - ts.tv_sec) * 1e9);
		}
		if (sigtimedwait(&set, &si, &ts) < 0) {
			if (errno != EAGAIN && errno != EINTR)
				die_errno("sigtimedwait");
			if (s->nsig >= want || now() >= end)
				break;
			continue;
		}
		if (si.si_fd != s->fd)
			oracle_error("a signal for fd %d on the %s's signal (fd %d)",
				     si.si_fd, s->name, s->fd);
		if (s->nsig < MAXSIG)
			s->sigs[s->nsig++] = si.si_code << 16 | (si.si_band & 0xFFFF);
	}
	qsort(s->sigs, s->nsig, sizeof(int), cmp_int);
}

/* SIGIO instead of a queued signal: the realtime queue overflowed. */
static void check_no_sigio(void)
{
	sigset_t pend;

	if (sigpending(&pend) == 0 && sigismember(&pend, SIGIO))
		oracle_error("a plain SIGIO: the realtime signal queue overflowed");
}

/* the driver's sysfs counters a SIGIO difference is shown with */
static const char *const irq_counters[] = { "irqs", "lost_irqs", "spurious_irqs",
					    "sigio_sent" };

/* The op's signals: the device must send what the pipe sent, except for an
 * op that moved no byte on the device (the pipe signals every attempt). */
static void compare_sigs(int moved)
{
	char a[512], b[512];
	int keep;

	if (!m.sigio)
		return;
	collect(&fifo, 0, 0);
	keep = moved || run.emulate;
	if (!keep)
		run.sigs_unmoved += fifo.nsig;
	collect(&dev, keep ? fifo.nsig : 0, SIG_WAIT_MS);
	check_no_sigio();
	if (!keep)
		fifo.nsig = 0;
	run.sigs += dev.nsig;
	if (dev.nsig != fifo.nsig ||
	    memcmp(dev.sigs, fifo.sigs, dev.nsig * sizeof(int))) {
		size_t at;

		fmt_sigs(a, sizeof(a), dev.sigs, dev.nsig);
		/* late or stale?  what comes after, and the interrupt counts */
		collect(&dev, MAXSIG, LATE_MS);
		at = strlen(a);
		at += snprintf(a + at, sizeof(a) - at, ", %d ms later ", LATE_MS);
		fmt_sigs(a + at, sizeof(a) - at, dev.sigs, dev.nsig);
		at = strlen(a);
		for (int i = 0; !run.emulate && i < (int)ARRAY_SIZE(irq_counters); i++)
			at += snprintf(a + at, sizeof(a) - at, " %s=%lld", irq_counters[i],
				       sysfs_read(run.dev, irq_counters[i]));
		fmt_sigs(b, sizeof(b), fifo.sigs, fifo.nsig);
		differ("SIGIO signals (si_code/si_band) of the op", a, b);
	}
}

/* After an op whose signals are not compared: let the device's arrive, drop
 * both sides'. */
static void drop_sigs(void)
{
	if (!m.sigio)
		return;
	sleep_ms(SETTLE_MS);
	collect(&fifo, 0, 0);
	collect(&dev, 0, 0);
	check_no_sigio();
}

/* --------------------------------------------------------------- transfers */

/* Point @s's iovec at @op's segments in @buf, @max bytes at most (a write
 * the byte rule cut short); at least one segment stays. */
static void build_iov(struct side *s, const struct op *op, uint8_t *buf, size_t max)
{
	size_t left = max;
	int n = 0;

	for (int i = 0; i < op->nseg && (left || !n); i++) {
		size_t l = min_sz(op->len[i], left);

		s->iov[n].iov_base = buf + op->off[i];
		s->iov[n].iov_len = l;
		left -= l;
		n++;
	}
	s->niov = n;
}

static long sys_rw(struct side *s, int wr, int vec)
{
	ssize_t r;

	if (vec)
		r = wr ? writev(s->fd, s->iov, s->niov) : readv(s->fd, s->iov, s->niov);
	else if (wr)
		r = write(s->fd, s->iov[0].iov_base, s->iov[0].iov_len);
	else
		r = read(s->fd, s->iov[0].iov_base, s->iov[0].iov_len);
	return r < 0 ? -errno : r;
}

/* Submit @s's iovec through libaio or io_uring; -errno if that failed. */
static long submit(struct side *s, enum path p, int wr, int vec)
{
	struct iovec *v = s->iov;

	if (p == AIO) {
		struct iocb cb, *cbs[1] = { &cb };
		int r;

		if (vec && wr)
			io_prep_pwritev(&cb, s->fd, v, s->niov, 0);
		else if (vec)
			io_prep_preadv(&cb, s->fd, v, s->niov, 0);
		else if (wr)
			io_prep_pwrite(&cb, s->fd, v->iov_base, v->iov_len, 0);
		else
			io_prep_pread(&cb, s->fd, v->iov_base, v->iov_len, 0);
		r = io_submit(s->aio, 1, cbs);
		return r == 1 ? 0 : r < 0 ? r : -EIO;
	} else {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
		int r;

		if (!sqe)
			die("io_uring_get_sqe: queue full");
		if (vec && wr)
			io_uring_prep_writev(sqe, s->fd, v, s->niov, -1);
		else if (vec)
			io_uring_prep_readv(sqe, s->fd, v, s->niov, -1);
		else if (wr)
			io_uring_prep_write(sqe, s->fd, v->iov_base, v->iov_len, -1);
		else
			io_uring_prep_read(sqe, s->fd, v->iov_base, v->iov_len, -1);
		r = io_uring_submit(&s->ring);
		if (r != 1)
			die_neg(r < 0 ? r : -EIO, "io_uring_submit on the %s", s->name);
		return 0;
	}
}

/* The result of @s's one submitted request, PENDING if it took over @ms. */
static long reap(struct side *s, enum path p, unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (p == AIO) {
		struct io_event ev;
		int r = io_getevents(s->aio, 1, 1, &ev, &ts);

		if (r < 0)
			die_neg(r, "io_getevents on the %s", s->name);
		return r ? (long)ev.res : PENDING;
	} else {
		struct __kernel_timespec kts = { ts.tv_sec, ts.tv_nsec };
		struct io_uring_cqe *cqe;
		long res;
		int r = ms ? io_uring_wait_cqe_timeout(&s->ring, &cqe, &kts)
			   : io_uring_peek_cqe(&s->ring, &cqe);

		if (r == -ETIME || r == -EAGAIN)
			return PENDING;
		if (r)
			die_neg(r, "io_uring wait on the %s", s->name);
		res = cqe->res;
		io_uring_cqe_seen(&s->ring, cqe);
		return res;
	}
}

static long xfer(struct side *s, enum path p, int wr, int vec)
{
	long r;

	if (p == SYS)
		return sys_rw(s, wr, vec);
	r = submit(s, p, wr, vec);
	if (r)
		return r;
	r = reap(s, p, REAP_MS);
	if (r == PENDING)
		differ("a request that can complete did not within 10 s",
		       "pending", s == &dev ? "a result" : "(the pipe's own)");
	return r;
}

/* ----------------------------------------------------------------- model */

/* What a write of @n bytes moves on the device: -EAGAIN or a count. */
static long capacity(size_t n)
{
	size_t free = m.depth - m.level;

	if (!n || !m.nonblock)
		return n;	/* blocking writes are generated to fit */
	if (!free || (n <= PIPEBUF && free < n))
		return -EAGAIN;
	return min_sz(n, free);
}

static int fionread(struct side *s)
{
	int v = -1;

	if (ioctl(s->fd, FIONREAD, &v))
		return -errno;
	return v;
}

/* After every op: FIONREAD of both and the device's free space agree with
 * the model. */
static void check_level(void)
{
	long want = (long)m.level, d = fionread(&dev), f = fionread(&fifo);

	if (f != want)
		oracle_error("the pipe's FIONREAD is %ld, the model says %ld", f, want);
	if (d != want)
		differ_ret("FIONREAD after the op", d, want);
	d = dev_space();
	if (d != (long)(m.depth - m.level))
		differ_ret("FIFOLAB_IOC_GET_SPACE after the op", d,
			   (long)(m.depth - m.level));
}

/* ----------------------------------------------------------------- ops */

static void poison(const struct op *op)
{
	memset(dev.rd, 0xA5, op->span);
	memset(fifo.rd, 0xA5, op->span);
}

/* The read arenas must be equal: the bytes read and nothing beyond them. */
static void compare_data(const struct op *op)
{
	char a[96], b[96];
	size_t i;

	if (!memcmp(dev.rd, fifo.rd, op->span))
		return;
	for (i = 0; dev.rd[i] == fifo.rd[i]; i++)
		;
	for (int k = 0; k < op->nseg; k++) {
		if (i >= op->off[k] && i < op->off[k] + op->len[k]) {
			snprintf(a, sizeof(a), "byte %zu of segment %d is %#04x",
				 i - op->off[k], k, dev.rd[i]);
			snprintf(b, sizeof(b), "%#04x", fifo.rd[i]);
			differ("the bytes read", a, b);
		}
	}
	snprintf(a, sizeof(a), "arena byte %zu, outside every segment, is %#04x",
		 i, dev.rd[i]);
	snprintf(b, sizeof(b), "%#04x (untouched)", fifo.rd[i]);
	differ("a byte beyond the read's segments", a, b);
}

static void note(const char *fmt, ...)
{
	va_list ap;
	char buf[256];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	hist_add("  #%d %s => %s\n", run.opi, cur + desc_at, buf);
}

static void note_ret(long d, long f)
{
	char a[32], b[32];

	note("%s | %s", fmt_ret(a, sizeof(a), d), fmt_ret(b, sizeof(b), f));
}

static void op_read(const struct op *op, enum path p)
{
	long d, f, want;

	poison(op);
	build_iov(&dev, op, dev.rd, op->total);
	build_iov(&fifo, op, fifo.rd, op->total);
	if (run.mutate && op->vec && dev.niov > 1)
		dev.niov--;	/* the self-test: the comparison must see this */
	d = xfer(&dev, p, 0, op->vec);
	f = xfer(&fifo, p, 0, op->vec);
	want = !op->total ? 0 : m.level ? (long)min_sz(m.level, op->total) : -EAGAIN;
	if (f != want)
		oracle_error("the pipe's read returned %ld, the model says %ld", f, want);
	note_ret(d, f);
	if (d != f)
		differ_ret("read count", d, f);
	compare_data(op);
	m.level -= f > 0 ? f : 0;
	compare_sigs(d > 0);
}

static void op_write(const struct op *op, enum path p)
{
	uint8_t *buf = src + op->base;
	long want = capacity(op->total), d, f = want;

	/* the emulated device is a pipe: give it what the device would take */
	build_iov(&dev, op, buf, run.emulate && want > 0 ? (size_t)want : op->total);
	d = run.emulate && want < 0 ? want : xfer(&dev, p, 1, op->vec);
	if (want >= 0) {
		build_iov(&fifo, op, buf, want);
		f = xfer(&fifo, p, 1, op->vec);
		if (f != want)
			oracle_error("the pipe took %ld of %ld bytes: it filled up", f, want);
	}
	note_ret(d, f);
	if (d != want)
		differ_ret("write count (the pipe's, with the byte-capacity rule)", d, want);
	m.level += want > 0 ? want : 0;
	compare_sigs(d > 0);
}

/* A blocking or non-blocking write of @n source bytes that fits. */
static void feed(struct side *s, size_t base, size_t n)
{
	ssize_t r = write(s->fd, src + base, n);

	if (r != (ssize_t)n) {
		char a[32];

		if (s == &fifo)
			oracle_error("the pipe took %zd of %zu fed bytes", r, n);
		differ("the write that feeds the waiting read",
		       fmt_ret(a, sizeof(a), r < 0 ? -errno : r), "all of it");
	}
}

/* A read of the empty FIFO waits until a write feeds it: through io_uring
 * on both sides, or libaio on the device (the pipe's libaio read, which would
 * block in io_submit, runs after the write). */
static void op_wait(const struct op *op, enum path p)
{
	long d, f;

	poison(op);
	build_iov(&dev, op, dev.rd, op->total);
	build_iov(&fifo, op, fifo.rd, op->total);
	d = submit(&dev, p, 0, op->vec);
	if (!d)
		d = reap(&dev, p, PENDING_MS);
	if (d != PENDING)
		differ_ret("a read of the empty FIFO completed before any write", d, PENDING);
	if (p == URING) {
		if (submit(&fifo, p, 0, op->vec) || reap(&fifo, p, 0) != PENDING)
			oracle_error("the pipe's io_uring read of an empty FIFO did not wait");
	}
	feed(&dev, op->base, op->feed);
	feed(&fifo, op->base, op->feed);
	d = reap(&dev, p, REAP_MS);
	f = p == URING ? reap(&fifo, p, REAP_MS) : xfer(&fifo, p, 0, op->vec);
	if (f != (long)min_sz(op->feed, op->total))
		oracle_error("the pipe's waiting read returned %ld", f);
	note_ret(d, f);
	if (d != f)
		differ_ret("count of the read that waited for the write", d, f);
	compare_data(op);
	m.level = op->feed - f;
	drop_sigs();
	run.waits += m.sigio;
}

static void op_bad_read(const struct op *op)
{
	long d, f;

	dev.iov[0].iov_base = fifo.iov[0].iov_base = bad + op->off[0];
	dev.iov[0].iov_len = fifo.iov[0].iov_len = op->total;
	dev.niov = fifo.niov = 1;
	d = sys_rw(&dev, 0, op->vec);
	f = sys_rw(&fifo, 0, op->vec);
	note_ret(d, f);
	if (d != f)
		differ_ret("read into an unmapped buffer", d, f);
	compare_sigs(d > 0);
}

static unsigned int poll_now(struct side *s, int use_epoll)
{
	if (use_epoll) {
		struct epoll_event ev;
		int n = epoll_wait(s->ep, &ev, 1, 0);

		if (n < 0)
			die_errno("epoll_wait on the %s", s->name);
		return n ? ev.events & EVMASK : 0;
	} else {
		struct pollfd pfd = { .fd = s->fd, .events = POLLIN | POLLOUT };

		if (poll(&pfd, 1, 0) < 0)
			die_errno("poll on the %s", s->name);
		return pfd.revents & EVMASK;
	}
}

/* Readable as the pipe; writable iff a PIPE_BUF write (or one of the whole
 * FIFO) would not block. */
static void op_poll(int use_epoll)
{
	unsigned int d = poll_now(&dev, use_epoll), f = poll_now(&fifo, use_epoll);
	unsigned int want = f & ~POLLOUT;
	char a[48], b[48];

	if (run.emulate)	/* a pipe plays the device: its POLLOUT is the model's */
		d &= ~POLLOUT;

	if (!(f & POLLOUT))
		oracle_error("the pipe is not writable: it filled up");
	if (m.depth - m.level >= min_sz(PIPEBUF, m.depth)) {
		want |= POLLOUT;
		d |= run.emulate ? POLLOUT : 0;
	}
	fmt_events(a, sizeof(a), d);
	fmt_events(b, sizeof(b), want);
	note("%s| %s", a, b);
	if (d != want)
		differ(use_epoll ? "epoll_wait events" : "poll revents", a, b);
}

static void op_fionread(void)
{
	long d = fionread(&dev), f = fionread(&fifo);

	note_ret(d, f);
	if (d != f)
		differ_ret("FIONREAD", d, f);
}

static void op_settle(void)
{
	sleep_ms(SETTLE_MS);
	note("-");
	compare_sigs(0);
}

static void op_nonblock(const struct op *op)
{
	set_flags(&dev, op->on, m.sigio);
	set_flags(&fifo, op->on, m.sigio);
	m.nonblock = op->on;
	note("ok");
}

/* "uring READV nb 3 segs [13+0+9000] = 9013 @+37 (level 100)" */
static void describe(const struct op *op)
{
	size_t at;

	desc_at = snprintf(cur, sizeof(cur), "seed=%#llx sequence=%lu op=%d: ",
			   (unsigned long long)run.seed, run.seq, run.opi);
	at = desc_at + snprintf(cur + desc_at, sizeof(cur) - desc_at, "%s",
				kind_name[op->kind][op->vec]);
	if (op->kind == OP_NONBLOCK) {
		snprintf(cur + at, sizeof(cur) - at, " %s", op->on ? "on" : "off");
		return;
	}
	at += snprintf(cur + at, sizeof(cur) - at, "%s", m.nonblock ? " nb" : "");
	if (op->kind <= OP_BAD_READ) {
		at += snprintf(cur + at, sizeof(cur) - at, " %d seg%s [", op->nseg,
			       op->nseg == 1 ? "" : "s");
		for (int i = 0; i < op->nseg && at < sizeof(cur) - 64; i++)
			at += snprintf(cur + at, sizeof(cur) - at, "%s%zu", i ? "+" : "",
				       op->len[i]);
		at += snprintf(cur + at, sizeof(cur) - at, "%s] = %zu @+%zu",
			       at >= sizeof(cur) - 64 ? "..." : "", op->total, op->off[0]);
		if (op->feed)
			at += snprintf(cur + at, sizeof(cur) - at, ", fed by write %zu",
				       op->feed);
	}
	snprintf(cur + at, sizeof(cur) - at, " (level %zu)", m.level);
}

static void run_op(const struct op *op)
{
	describe(op);
	alarm(OP_TIMEOUT_S);
	switch (op->kind) {
	case OP_READ:		op_read(op, SYS); break;
	case OP_AIO_READ:	op_read(op, AIO); break;
	case OP_URING_READ:	op_read(op, URING); break;
	case OP_WRITE:		op_write(op, SYS); break;
	case OP_AIO_WRITE:	op_write(op, AIO); break;
	case OP_URING_WRITE:	op_write(op, URING); break;
	case OP_AIO_WAIT:	op_wait(op, AIO); break;
	case OP_URING_WAIT:	op_wait(op, URING); break;
	case OP_BAD_READ:	op_bad_read(op); break;
	case OP_NONBLOCK:	op_nonblock(op); break;
	case OP_POLL:		op_poll(0); break;
	case OP_EPOLL:		op_poll(1); break;
	case OP_FIONREAD:	op_fionread(); break;
	case OP_SETTLE:		op_settle(); break;
	}
	check_level();
	alarm(0);
	run.kinds[op->kind][op->vec]++;
	run.ops++;
	run.opi++;
}

/* ------------------------------------------------------------- generator */

static int pick_nseg(int vec)
{
	if (!vec)
		return 1;
	if (run.big)
		return chance(50) ? 32 + rnd(MAXSEG - 31) : 1 + rnd(MAXSEG);
	return chance(75) ? 1 + rnd(8) : 1 + rnd(MAXSEG);
}

static size_t seg_len(int vec)
{
	static const size_t edge[] = { 1, 2, 511, 512, 513, 4095, 4096, 4097,
				       8191, 8192, 8193 };
	unsigned int r = rnd(100);

	if (vec && r < 3)
		return 0;	/* an empty segment among the others */
	if (r < 20)
		return 1 + rnd(32);
	if (r < 35)
		return edge[rnd(ARRAY_SIZE(edge))];
	if (run.big && r < 75)
		return MAXSEGLEN - rnd(1000);
	if (!vec && r >= 95)	/* one buffer of up to several depths */
		return 1 + rnd(min_sz(4 * m.depth, arena / 2));
	return 1 + rnd(MAXSEGLEN);
}

static void sum_segs(struct op *op)
{
	op->total = 0;
	for (int i = 0; i < op->nseg; i++)
		op->total += op->len[i];
}

/* At most @max bytes (>= 1) in all. */
static void shrink_to(struct op *op, size_t max)
{
	if (op->total <= max)
		return;
	if ((size_t)op->nseg > max)
		op->nseg = max;
	sum_segs(op);
	fit_sizes(op->len, op->nseg, max);
	sum_segs(op);
}

/* Exactly @n bytes (>= 1) in all. */
static void exactly(struct op *op, size_t n)
{
	shrink_to(op, n);
	op->len[op->nseg - 1] += n - op->total;
	op->total = n;
}

/* Odd alignments: the first segment at a random offset, random gaps. */
static void place(struct op *op, int wr)
{
	size_t at = rnd(64);

	for (int i = 0; i < op->nseg; i++) {
		op->off[i] = at;
		at += op->len[i] + rnd(8);
	}
	op->span = at;
	op->base = wr ? rnd(2 * arena - at) : 0;
	if (at > arena)
		die("internal: a %zu-byte op does not fit the %zu-byte arena", at, arena);
}

static void raw_segs(struct op *op)
{
	op->nseg = pick_nseg(op->vec);
	for (int i = 0; i < op->nseg; i++)
		op->len[i] = seg_len(op->vec);
	sum_segs(op);
}

static void gen_read_size(struct op *op)
{
	unsigned int c = rnd(100);

	raw_segs(op);
	if (!op->total)
		return;		/* a zero-length read: returns 0 at once */
	if (m.level && c < 35)
		shrink_to(op, 1 + rnd(m.level));	/* less than is there */
	else if (m.level && c < 50)
		exactly(op, m.level);
	else if (c < 80 && op->total <= m.level)	/* more than is there */
		op->len[op->nseg - 1] += m.level - op->total + 1 + rnd(PIPEBUF);
	sum_segs(op);
}

static void gen_write_size(struct op *op, size_t fit)
{
	size_t free = m.depth - m.level;
	unsigned int c = rnd(100);

	raw_segs(op);
	if (!op->total && !fit)
		return;
	if (!op->total)
		op->len[0] = 1;
	sum_segs(op);
	if (fit) {
		if (c < 30)
			exactly(op, fit);
		else
			shrink_to(op, 1 + rnd(fit));
	} else if (c < 20) {
		shrink_to(op, 1 + rnd(PIPEBUF));	/* the atomic ones */
	} else if (c < 40) {
		size_t n = free + rnd(3);	/* free - 1, free or free + 1 */

		exactly(op, n > 1 ? n - 1 : 1);
	}
}

/* A read of the empty FIFO that a write then feeds. */
static void gen_wait(struct op *op, enum path p)
{
	op->kind = p == AIO && !run.emulate && !m.nonblock ? OP_AIO_WAIT : OP_URING_WAIT;
	do
		raw_segs(op);
	while (!op->total);
	op->feed = 1 + rnd(chance(50) ? op->total + PIPEBUF : m.depth);
	op->feed = min_sz(op->feed, m.depth);
	place(op, 0);
	op->base = rnd(2 * arena - op->feed);
}

static const enum kind read_kind[] = { OP_READ, OP_AIO_READ, OP_URING_READ };
static const enum kind write_kind[] = { OP_WRITE, OP_AIO_WRITE, OP_URING_WRITE };

static enum path pick_path(void)
{
	unsigned int r = rnd(100);

	return r < 50 ? SYS : r < 70 ? AIO : URING;
}

static void gen_read(struct op *op, enum path p)
{
	op->kind = read_kind[p];
	op->vec = chance(50);
	if (!m.level && (p == URING || !m.nonblock)) {
		gen_wait(op, p);
		return;
	}
	do
		gen_read_size(op);
	while (!op->total && p != SYS);	/* zero-length: read(2) only */
	place(op, 0);
}

/* Never a write that would block (or, through io_uring, wait for room). */
static void gen_write(struct op *op, enum path p)
{
	size_t free = m.depth - m.level;

	op->kind = write_kind[p];
	op->vec = chance(50);
	if (!m.nonblock)
		gen_write_size(op, free);
	else if (p == URING)
		do
			gen_write_size(op, chance(50) ? free : 0);
		while (capacity(op->total) <= 0);
	else
		gen_write_size(op, 0);
	place(op, 1);
}

static void gen_control(struct op *op, unsigned int r)
{
	static const enum kind kinds[] = { OP_NONBLOCK, OP_NONBLOCK, OP_POLL, OP_POLL,
					   OP_EPOLL, OP_EPOLL, OP_FIONREAD, OP_SETTLE,
					   OP_BAD_READ };

	op->kind = kinds[r % ARRAY_SIZE(kinds)];
	op->on = !m.nonblock;
	if (op->kind == OP_SETTLE && !m.sigio)
		op->kind = OP_POLL;
	if (op->kind == OP_BAD_READ) {
		if (!m.level && !m.nonblock) {
			op->kind = OP_EPOLL;
			return;
		}
		op->vec = chance(50);
		op->nseg = 1;
		op->len[0] = op->total = 1 + rnd(PIPEBUF);
		op->off[0] = rnd(PIPEBUF);
	}
}

static void gen_op(struct op *op)
{
	size_t free = m.depth - m.level;
	unsigned int r = rnd(100);
	unsigned int reads = m.level ? 15 + 70 * m.level / m.depth : 25;
	enum path p = pick_path();

	memset(op, 0, sizeof(*op));
	if (r < 12) {
		gen_control(op, r);
		return;
	}
	r = rnd(100);
	/* a full FIFO takes a write only without blocking */
	if (r < reads || (!free && (!m.nonblock || p == URING)))
		gen_read(op, p);
	else
		gen_write(op, p);
}

/* ------------------------------------------------------------- sequences */

static void raw_drain(struct side *s)
{
	ssize_t n;
	size_t total = 0;

	while ((n = read(s->fd, s->rd, m.depth)) > 0)
		total += n;
	if (n < 0 && errno != EAGAIN)
		die_errno("draining the %s", s->name);
	if (total)
		warn("drained %zu stale bytes from the %s", total, s->name);
}

/* Both FIFOs empty, no signal left, the sequence's own random state. */
static void seq_begin(unsigned long seq)
{
	uint64_t s = run.seed ^ (seq + 1) * 0xD1B54A32D192ED03ull;

	run.seq = seq;
	run.opi = 0;
	hist_len = 0;
	hist[0] = 0;
	rng = splitmix64(&s);
	m.nonblock = chance(50);
	m.sigio = chance(60);
	m.level = 0;
	set_flags(&dev, 1, 0);
	set_flags(&fifo, 1, 0);
	raw_drain(&dev);
	raw_drain(&fifo);
	/* the device signals from its interrupt path, a little later: what
	 * the last ops did must be signalled (or not) before O_ASYNC is on,
	 * else it lands in this sequence's first op */
	if (m.sigio)
		sleep_ms(SETTLE_MS);
	collect(&dev, 0, 0);
	collect(&fifo, 0, 0);
	set_flags(&dev, m.nonblock, m.sigio);
	set_flags(&fifo, m.nonblock, m.sigio);
	snprintf(replay, sizeof(replay), "%s %s %#llx 1 --start %lu --profile %s%s",
		 run.argv0, run.emulate ? "--pipe-vs-pipe" : run.dev,
		 (unsigned long long)run.seed, seq, run.big ? "big" : "mixed",
		 run.mutate ? " --mutate-device" : "");
	if (run.emulate) {
		size_t at = strlen(replay);

		snprintf(replay + at, sizeof(replay) - at, " --depth %zu", run.depth);
	}
	hist_add("  sequence %lu: %s, SIGIO %s, depth %zu\n", seq,
		 m.nonblock ? "O_NONBLOCK" : "blocking", m.sigio ? "on" : "off", m.depth);
	check_level();
}

static void drain_read(size_t n)
{
	struct op op = { .kind = OP_READ, .nseg = 1, .len = { n }, .total = n };

	place(&op, 0);
	run_op(&op);
}

/* Read both FIFOs empty (every byte compared), then expect EAGAIN. */
static void seq_drain(void)
{
	struct op op = { .kind = OP_NONBLOCK, .on = 1 };

	if (!m.nonblock)
		run_op(&op);
	while (m.level)
		drain_read(m.level);
	drain_read(1);		/* EAGAIN */
	if (m.sigio) {
		op.kind = OP_SETTLE;
		run_op(&op);
	}
}

static void run_sequence(unsigned long seq)
{
	unsigned long before = run.ops;
	int n;
	struct op op;

	seq_begin(seq);
	n = run.big ? 10 + rnd(31) : 20 + rnd(41);
	for (int i = 0; i < n; i++) {
		gen_op(&op);
		run_op(&op);
	}
	seq_drain();
	set_flags(&dev, m.nonblock, 0);
	set_flags(&fifo, m.nonblock, 0);
	if (!run.quiet)
		printf("sequence %lu: %lu ops, ok\n", seq, run.ops - before);
}

/* --------------------------------------------------------------- main */

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		die("bad %s '%s'", what, s);
	return v;
}

static void parse(int argc, char **argv)
{
	const char *pos[3];
	int npos = 0;

	run.depth = 65536;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quiet")) {
			run.quiet = 1;
		} else if (!strcmp(a, "--trace")) {
			run.trace = 1;
		} else if (!strcmp(a, "--mutate-device")) {
			run.mutate = 1;
		} else if (!strcmp(a, "--pipe-vs-pipe")) {
			run.emulate = 1;
		} else if (!strcmp(a, "--start") && i + 1 < argc) {
			run.start = parse_u64(argv[++i], "--start N");
		} else if (!strcmp(a, "--depth") && i + 1 < argc) {
			run.depth = parse_size(argv[++i], "--depth BYTES");
		} else if (!strcmp(a, "--profile") && i + 1 < argc) {
			a = argv[++i];
			if (strcmp(a, "mixed") && strcmp(a, "big"))
				die("--profile: mixed or big, not '%s'", a);
			run.big = !strcmp(a, "big");
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(usage, stdout);
			exit(0);
		} else if (a[0] == '-' && a[1] == '-') {
			fputs(usage, stderr);
			exit(2);
		} else if (npos < 3) {
			pos[npos++] = a;
		} else {
			fputs(usage, stderr);
			exit(2);
		}
	}
	if (npos != 3 - run.emulate || (run.emulate && run.depth < 1)) {
		fputs(usage, stderr);
		exit(2);
	}
	if (!run.emulate)
		run.dev = pos[0];
	run.seed = parse_u64(pos[npos - 2], "SEED");
	run.count = parse_u64(pos[npos - 1], "COUNT");
}

/* How many ops of each kind ran: the generator's reach. */
static void print_mix(void)
{
	printf("pipediff: ops by kind:");
	for (int k = 0; k <= OP_SETTLE; k++)
		for (int v = 0; v < 2; v++)
			if (run.kinds[k][v])
				printf(" %s %lu,", kind_name[k][v], run.kinds[k][v]);
	printf("\n");
}

int main(int argc, char **argv)
{
	double t0 = now();

	prog = "pipediff";
	run.argv0 = argv[0];
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse(argc, argv);
	setup();
	if (!run.quiet)
		printf("pipediff: %s, depth %zu, pipe %zu bytes, seed %#llx, sequences %lu..%lu, profile %s\n",
		       run.emulate ? "pipe vs pipe" : run.dev, m.depth, PIPE_FACTOR * m.depth,
		       (unsigned long long)run.seed, run.start, run.start + run.count - 1,
		       run.big ? "big" : "mixed");
	for (unsigned long k = 0; k < run.count; k++)
		run_sequence(run.start + k);
	if (!run.quiet)
		print_mix();
	printf("pipediff: %lu device signals compared; %lu pipe signals of ops that moved no byte not expected from the device; %lu waiting reads' signals not compared; %.1f s\n",
	       run.sigs, run.sigs_unmoved, run.waits, now() - t0);
	printf("pipediff: %lu sequences, %lu ops, 0 differences\n", run.count, run.ops);
	return 0;
}

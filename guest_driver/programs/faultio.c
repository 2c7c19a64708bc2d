// SPDX-License-Identifier: GPL-2.0
/*
 * faultio - one read or write on /dev/fifolabN through a chosen I/O path,
 * and its outcome as one machine-readable line, for the fault scenarios
 * (harness/scenario.py, the files in scenarios/).
 *
 *   faultio PATH OP DEV SIZE [options]
 *
 *   PATH  sync       blocking read(2)/write(2)
 *         nonblock   O_NONBLOCK; on EAGAIN poll(2) for readiness and retry
 *                    until the timeout
 *         poll       poll(2) until ready (revents reported), then the op
 *                    (blocking if the wanted event came, else O_NONBLOCK so
 *                    that an error or hang-up is reported, not waited out)
 *         sigio      F_SETOWN + O_ASYNC + F_SETSIG (SIGRTMIN+1), then
 *                    sigtimedwait() for POLL_IN (read) or POLL_OUT (write),
 *                    or POLL_ERR/POLL_HUP; then the op as for poll
 *         posix-aio  aio_read/aio_write, aio_suspend (timeout), aio_error,
 *                    aio_return
 *         libaio     io_submit + io_getevents (timeout); res is -errno
 *         io_uring   liburing submit + io_uring_wait_cqe_timeout; cqe->res
 *   OP    read | write
 *
 *   --timeout S        give up after S seconds (default 10): result=timeout
 *   --expect-pattern   a read checks the bytes against the pattern: data=ok
 *                      or data=corrupt (and the first bad offset)
 *   --pattern-seed N   stream offset of the first byte (default 0)
 *   --pattern P        harness (default: byte i = (i*7+3) % 251, as
 *                      harness/checks.py pattern()) or counter (i % 256,
 *                      a host flood)
 *   --ready FILE       create FILE once armed (fd open, O_ASYNC set), before
 *                      waiting for readiness or issuing the op
 *   --go FILE          after readiness (poll/sigio), wait until FILE exists
 *                      before the op (the scenario arms a fault in between)
 *   --until N          repeat the op until N bytes moved in total (or an
 *                      error, or the timeout); the stream continues across
 *                      ops; result is the last op's
 *
 * Output, one line: path= op= result= (bytes, -ERRNO or timeout) errno=
 * bytes= ops= time_ms= crc= and, where they apply, revents= post_revents=
 * (poll, nonblock), si_code= si_band= signals= (sigio: every signal seen
 * until 200 ms after the op), data= bad_at= (--expect-pattern), stage=open
 * (the device could not even be opened).
 *
 * Exit status: 0 whenever the op completed, whatever its result (the
 * scenario judges); 2 usage error; 3 timeout with nothing completed.
 * alarm() bounds every run.
 */
#define _GNU_SOURCE
#include <aio.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum path { P_SYNC, P_NONBLOCK, P_POLL, P_SIGIO, P_POSIX_AIO, P_LIBAIO,
	    P_IO_URING };
static const char *const path_names[] = {
	"sync", "nonblock", "poll", "sigio", "posix-aio", "libaio", "io_uring",
};

static struct {
	enum path path;
	int write;
	const char *dev;
	size_t size;
	double timeout;
	int expect_pattern;
	uint64_t seed;
	int counter;
	const char *ready;
	const char *go;
	uint64_t until;
} opt = { .timeout = 10 };

static struct timespec t_start;
static volatile sig_atomic_t alarmed;
static char line[2048];		/* the outcome line, built as we go */

/* ------------------------------------------------------------ helpers */

static void add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add(const char *fmt, ...)
{
	size_t n = strlen(line);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
}

static double elapsed(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t_start.tv_sec) +
	       (now.tv_nsec - t_start.tv_nsec) / 1e9;
}

static double remaining(void)
{
	double r = opt.timeout - elapsed();

	return r > 0 ? r : 0;
}

static int remaining_ms(void)
{
	return (int)(remaining() * 1000);
}

static struct timespec remaining_ts(void)
{
	double r = remaining();
	struct timespec ts = { (time_t)r, (long)((r - (time_t)r) * 1e9) };

	return ts;
}

static void __attribute__((noreturn)) usage(const char *why)
{
	fprintf(stderr, "faultio: %s\n"
		"usage: faultio sync|nonblock|poll|sigio|posix-aio|libaio|io_uring "
		"read|write DEV SIZE [--timeout S] [--expect-pattern] "
		"[--pattern-seed N] [--pattern harness|counter] [--ready FILE] "
		"[--go FILE] [--until N]\n", why);
	exit(2);
}

static uint8_t pat(uint64_t i)
{
	i += opt.seed;
	return opt.counter ? (uint8_t)(i % 256) : (uint8_t)((i * 7 + 3) % 251);
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
	}
	return ~crc;
}

static const char *errname(int err)
{
	const char *s = strerrorname_np(err);

	return s ? s : "?";
}

static void names(char *out, size_t len, int bits)
{
	static const struct { int bit; const char *name; } tab[] = {
		{ POLLIN, "POLLIN" }, { POLLPRI, "POLLPRI" },
		{ POLLOUT, "POLLOUT" }, { POLLERR, "POLLERR" },
		{ POLLHUP, "POLLHUP" }, { POLLNVAL, "POLLNVAL" },
		{ POLLRDNORM, "POLLRDNORM" }, { POLLWRNORM, "POLLWRNORM" },
	};
	size_t n = 0;

	out[0] = 0;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (bits & tab[i].bit)
			n += snprintf(out + n, len - n, "%s%s", n ? "|" : "",
				      tab[i].name);
	if (!n)
		snprintf(out, len, "0");
}

static const char *code_name(int code)
{
	switch (code) {
	case POLL_IN: return "POLL_IN";
	case POLL_OUT: return "POLL_OUT";
	case POLL_MSG: return "POLL_MSG";
	case POLL_ERR: return "POLL_ERR";
	case POLL_PRI: return "POLL_PRI";
	case POLL_HUP: return "POLL_HUP";
	default: return "SI_OTHER";
	}
}

static void touch(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY, 0644);

	if (fd >= 0)
		close(fd);
}

static void wait_go(void)
{
	struct stat st;

	if (!opt.go)
		return;
	while (stat(opt.go, &st) && remaining() > 0)
		usleep(5000);
}

static void __attribute__((noreturn)) finish_timeout(const char *where)
{
	add(" result=timeout errno=0 bytes=0 where=%s time_ms=%.0f",
	    where, elapsed() * 1000);
	puts(line);
	exit(3);
}

/* The first SIGALRM interrupts a blocking call; a second one ends us. */
static void on_alarm(int sig)
{
	static const char msg[] = " result=timeout where=alarm\n";

	(void)sig;
	if (!alarmed) {
		alarmed = 1;
		alarm(5);
		return;
	}
	if (write(1, line, strlen(line)) < 0 || write(1, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(3);
}

/* ------------------------------------------------------------ the op */

struct outcome {
	long res;		/* bytes, or -errno */
	int done;		/* the op completed (any result) */
};

static int want_events(void)
{
	return opt.write ? POLLOUT : POLLIN;
}

/* Block until the fd is ready (or erred, or hung up); returns revents. */
static int wait_ready(int fd, const char *where)
{
	struct pollfd p = { .fd = fd, .events = want_events() };

	for (;;) {
		int n = poll(&p, 1, remaining_ms());

		if (n > 0)
			return p.revents;
		if (n == 0 || alarmed)
			finish_timeout(where);
		if (errno != EINTR)
			finish_timeout(where);
	}
}

static long plain_op(int fd, uint8_t *buf, size_t len)
{
	ssize_t n = opt.write ? write(fd, buf, len) : read(fd, buf, len);

	return n < 0 ? -errno : n;
}

static void set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static struct outcome op_sync(int fd, uint8_t *buf, size_t len)
{
	long r = plain_op(fd, buf, len);

	if (r == -EINTR && alarmed)
		finish_timeout("sync");
	return (struct outcome){ r, 1 };
}

static unsigned long retries;
static int last_revents = -1;

static struct outcome op_nonblock(int fd, uint8_t *buf, size_t len)
{
	for (;;) {
		long r = plain_op(fd, buf, len);

		if (r != -EAGAIN)
			return (struct outcome){ r, 1 };
		retries++;
		if (remaining() <= 0)
			finish_timeout("nonblock");
		last_revents = wait_ready(fd, "nonblock");
		if (!(last_revents & want_events()))
			usleep(10000);	/* only ERR/HUP: do not spin */
	}
}

static int first_revents = -1;

static struct outcome op_poll(int fd, uint8_t *buf, size_t len)
{
	int rev = wait_ready(fd, "poll");
	long r;

	if (first_revents < 0)
		first_revents = rev;
	wait_go();
	if (!(rev & want_events()))
		set_nonblock(fd, 1);	/* error or hang-up: report, not wait */
	r = plain_op(fd, buf, len);
	set_nonblock(fd, 0);
	if (r == -EINTR && alarmed)
		finish_timeout("poll-op");
	return (struct outcome){ r, 1 };
}

static int sig_no;
static sigset_t sig_set;
static int si_first = -1, si_band_first;
static char sig_list[512];

static void note_signal(const siginfo_t *si)
{
	size_t n = strlen(sig_list);

	if (n + 16 < sizeof(sig_list))
		snprintf(sig_list + n, sizeof(sig_list) - n, "%s%s",
			 n ? "," : "", code_name(si->si_code));
}

static void arm_sigio(int fd)
{
	sig_no = SIGRTMIN + 1;
	sigemptyset(&sig_set);
	sigaddset(&sig_set, sig_no);
	sigaddset(&sig_set, SIGIO);
	sigprocmask(SIG_BLOCK, &sig_set, NULL);
	if (fcntl(fd, F_SETOWN, getpid()) || fcntl(fd, F_SETSIG, sig_no) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC)) {
		fprintf(stderr, "faultio: arming SIGIO: %s\n", strerror(errno));
		exit(2);
	}
}

static struct outcome op_sigio(int fd, uint8_t *buf, size_t len)
{
	int want = opt.write ? POLL_OUT : POLL_IN, got = 0;
	static int waited;
	siginfo_t si;
	long r;

	if (waited) {
		/* --until: after the first signal, go on while the fd is ready */
		struct pollfd p = { .fd = fd, .events = want_events() };

		if (poll(&p, 1, 0) == 1 && (p.revents & want_events()))
			got = want;
	}
	waited = 1;
	while (!got) {
		struct timespec ts = remaining_ts();

		if (sigtimedwait(&sig_set, &si, &ts) < 0) {
			if (errno == EINTR && !alarmed)
				continue;
			finish_timeout("sigio");
		}
		note_signal(&si);
		if (si_first < 0) {
			si_first = si.si_code;
			si_band_first = (int)si.si_band;
		}
		if (si.si_code == want || si.si_code == POLL_ERR ||
		    si.si_code == POLL_HUP)
			got = si.si_code;
	}
	wait_go();
	if (got != want)
		set_nonblock(fd, 1);
	r = plain_op(fd, buf, len);
	set_nonblock(fd, 0);
	if (r == -EINTR && alarmed)
		finish_timeout("sigio-op");
	return (struct outcome){ r, 1 };
}

/* Signals that come after the op (POLL_ERR of an error, POLL_HUP). */
static void sigio_tail(void)
{
	struct timespec ts = { 0, 200 * 1000 * 1000 };
	siginfo_t si;

	while (sigtimedwait(&sig_set, &si, &ts) >= 0)
		note_signal(&si);
}

static struct outcome op_posix_aio(int fd, uint8_t *buf, size_t len)
{
	struct aiocb cb = { .aio_fildes = fd, .aio_buf = buf, .aio_nbytes = len };
	const struct aiocb *list[1] = { &cb };
	int r = opt.write ? aio_write(&cb) : aio_read(&cb);
	long res;

	if (r)
		return (struct outcome){ -errno, 1 };
	while (aio_error(&cb) == EINPROGRESS) {
		struct timespec ts = remaining_ts();

		if (remaining() <= 0)
			finish_timeout("aio_suspend");
		if (aio_suspend(list, 1, &ts) && errno != EINTR &&
		    errno != EAGAIN)
			break;
	}
	r = aio_error(&cb);
	if (r == EINPROGRESS)
		finish_timeout("aio_suspend");
	res = aio_return(&cb);
	return (struct outcome){ r ? -r : res, 1 };
}

static io_context_t aio_ctx;

static struct outcome op_libaio(int fd, uint8_t *buf, size_t len)
{
	struct iocb cb, *cbs[1] = { &cb };
	struct io_event ev;
	int r;

	if (!aio_ctx && (r = io_setup(4, &aio_ctx)))
		return (struct outcome){ r, 1 };
	if (opt.write)
		io_prep_pwrite(&cb, fd, buf, len, 0);
	else
		io_prep_pread(&cb, fd, buf, len, 0);
	r = io_submit(aio_ctx, 1, cbs);
	if (r != 1)
		return (struct outcome){ r < 0 ? r : -EIO, 1 };
	for (;;) {
		struct timespec ts = remaining_ts();

		r = io_getevents(aio_ctx, 1, 1, &ev, &ts);
		if (r == 1)
			return (struct outcome){ (long)ev.res, 1 };
		if (r == -EINTR && !alarmed)
			continue;
		if (r < 0 && r != -EINTR)
			return (struct outcome){ r, 1 };	/* io_getevents' own error */
		finish_timeout("io_getevents");
	}
}

static struct io_uring ring;
static int ring_up;

static struct outcome op_io_uring(int fd, uint8_t *buf, size_t len)
{
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	int r;

	if (!ring_up) {
		r = io_uring_queue_init(4, &ring, 0);
		if (r)
			return (struct outcome){ r, 1 };
		ring_up = 1;
	}
	sqe = io_uring_get_sqe(&ring);
	if (opt.write)
		io_uring_prep_write(sqe, fd, buf, len, 0);
	else
		io_uring_prep_read(sqe, fd, buf, len, 0);
	r = io_uring_submit(&ring);
	if (r != 1)
		return (struct outcome){ r < 0 ? r : -EIO, 1 };
	for (;;) {
		struct __kernel_timespec ts;
		struct timespec rts = remaining_ts();

		ts.tv_sec = rts.tv_sec;
		ts.tv_nsec = rts.tv_nsec;
		r = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
		if (!r) {
			long res = cqe->res;

			io_uring_cqe_seen(&ring, cqe);
			return (struct outcome){ res, 1 };
		}
		if (r == -EINTR && !alarmed)
			continue;
		finish_timeout("io_uring_wait_cqe");
	}
}

static struct outcome do_op(int fd, uint8_t *buf, size_t len)
{
	switch (opt.path) {
	case P_SYNC: return op_sync(fd, buf, len);
	case P_NONBLOCK: return op_nonblock(fd, buf, len);
	case P_POLL: return op_poll(fd, buf, len);
	case P_SIGIO: return op_sigio(fd, buf, len);
	case P_POSIX_AIO: return op_posix_aio(fd, buf, len);
	case P_LIBAIO: return op_libaio(fd, buf, len);
	case P_IO_URING: return op_io_uring(fd, buf, len);
	}
	return (struct outcome){ -EINVAL, 1 };
}

/* ------------------------------------------------------------ main */

static void parse(int argc, char **argv)
{
	int i;

	if (argc < 5)
		usage("too few arguments");
	for (i = 0; i < 7; i++)
		if (!strcmp(argv[1], path_names[i]))
			break;
	if (i == 7)
		usage("unknown PATH");
	opt.path = i;
	if (!strcmp(argv[2], "write"))
		opt.write = 1;
	else if (strcmp(argv[2], "read"))
		usage("OP must be read or write");
	opt.dev = argv[3];
	opt.size = strtoull(argv[4], NULL, 0);
	if (!opt.size || opt.size > (64u << 20))
		usage("SIZE must be 1..64 MiB");
	for (i = 5; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--expect-pattern")) {
			opt.expect_pattern = 1;
			continue;
		}
		if (!v)
			usage("option needs a value");
		if (!strcmp(a, "--timeout"))
			opt.timeout = atof(v);
		else if (!strcmp(a, "--pattern-seed"))
			opt.seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--pattern")) {
			if (!strcmp(v, "counter"))
				opt.counter = 1;
			else if (strcmp(v, "harness"))
				usage("--pattern is harness or counter");
		} else if (!strcmp(a, "--ready"))
			opt.ready = v;
		else if (!strcmp(a, "--go"))
			opt.go = v;
		else if (!strcmp(a, "--until"))
			opt.until = strtoull(v, NULL, 0);
		else
			usage("unknown option");
		i++;
	}
	if (opt.timeout <= 0)
		usage("--timeout must be > 0");
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_alarm };	/* no SA_RESTART */
	uint64_t moved = 0, bad_at = UINT64_MAX;
	unsigned long ops = 0;
	struct outcome o = { 0, 0 };
	uint32_t crc = 0;
	uint8_t *buf;
	char rbuf[128];
	int fd, flags;

	parse(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	sigaction(SIGALRM, &sa, NULL);
	alarm((unsigned int)opt.timeout + 1);
	snprintf(line, sizeof(line), "path=%s op=%s", path_names[opt.path],
		 opt.write ? "write" : "read");

	if (posix_memalign((void **)&buf, 4096, opt.size))
		return 2;

	flags = O_RDWR | (opt.path == P_NONBLOCK ? O_NONBLOCK : 0);
	fd = open(opt.dev, flags);
	if (fd < 0) {
		int e = errno;

		add(" result=-%s errno=%s bytes=0 stage=open time_ms=%.0f",
		    errname(e), errname(e), elapsed() * 1000);
		puts(line);
		return 0;
	}
	if (opt.path == P_SIGIO)
		arm_sigio(fd);
	if (opt.ready)
		touch(opt.ready);
	if (opt.path != P_POLL && opt.path != P_SIGIO)
		wait_go();

	do {
		size_t len = opt.size;

		if (opt.until && opt.until - moved < len)
			len = opt.until - moved;
		if (opt.write)
			for (size_t i = 0; i < len; i++)
				buf[i] = pat(moved + i);
		else
			memset(buf, 0, len);
		o = do_op(fd, buf, len);
		ops++;
		if (o.res <= 0)
			break;
		if (!opt.write && opt.expect_pattern && bad_at == UINT64_MAX)
			for (long i = 0; i < o.res; i++)
				if (buf[i] != pat(moved + i)) {
					bad_at = moved + i;
					break;
				}
		crc = crc32_update(crc, buf, o.res);
		moved += o.res;
	} while (opt.until && moved < opt.until && remaining() > 0);

	if (o.res < 0)
		add(" result=-%s errno=%s", errname((int)-o.res),
		    errname((int)-o.res));
	else
		add(" result=%ld errno=0", o.res);
	add(" bytes=%llu ops=%lu", (unsigned long long)moved, ops);
	if (opt.path == P_POLL) {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };

		names(rbuf, sizeof(rbuf), first_revents);
		add(" revents=%s", rbuf);
		if (poll(&p, 1, 0) >= 0) {
			names(rbuf, sizeof(rbuf), p.revents);
			add(" post_revents=%s", rbuf);
		}
	}
	if (opt.path == P_NONBLOCK) {
		add(" retries=%lu", retries);
		if (last_revents >= 0) {
			names(rbuf, sizeof(rbuf), last_revents);
			add(" revents=%s", rbuf);
		}
	}
	if (opt.path == P_SIGIO) {
		sigio_tail();
		names(rbuf, sizeof(rbuf), si_band_first);
		add(" si_code=%s si_band=%s signals=%s",
		    si_first < 0 ? "none" : code_name(si_first), rbuf,
		    sig_list[0] ? sig_list : "none");
	}
	if (!opt.write && opt.expect_pattern && moved) {
		if (bad_at == UINT64_MAX)
			add(" data=ok");
		else
			add(" data=corrupt bad_at=%llu",
			    (unsigned long long)bad_at);
	}
	add(" crc=%08x time_ms=%.0f", crc, elapsed() * 1000);
	puts(line);
	return o.done ? 0 : 3;
}

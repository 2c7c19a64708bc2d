// SPDX-License-Identifier: GPL-2.0
/*
 * uring_test - io_uring (liburing 2.3) against a fifolab FIFO, run inside
 * the guest.
 *
 *   uring_test DEV basic      8 writes in one io_uring_submit, then 8 reads
 *                             of the same sizes (1 B .. 20 KB; READ/WRITE
 *                             and READV/WRITEV), each batch a chain of
 *                             IOSQE_IO_LINK requests: a byte stream needs
 *                             them in order, and requests punted to io-wq
 *                             would otherwise run in parallel; every CQE
 *                             matched to its request through user_data,
 *                             res checked, data verified per request
 *   uring_test DEV pending [--external N --ready FILE]
 *                             a read of an EMPTY FIFO: io_uring_submit
 *                             returns 1 at once, io_uring_peek_cqe finds
 *                             nothing (also 200 ms later); then a write
 *                             through a second fd - or, with --external, N
 *                             bytes the harness injects from the host once
 *                             FILE exists (nothing is written then) -
 *                             completes it with exactly those bytes (more
 *                             io_uring reads collect the rest)
 *   uring_test DEV cancel     IORING_OP_ASYNC_CANCEL of a read pending on an
 *                             empty FIFO: the read's CQE has -ECANCELED, the
 *                             cancel's 0 (or -EALREADY if it was already
 *                             running in the driver); nothing consumed
 *   uring_test DEV exit-pending
 *                             a process exits with a read pending on an
 *                             empty FIFO: it ends, and no later byte is lost
 *                             to that read
 *   uring_test DEV [all]      every subcommand, each in a fresh process
 *   --counters                print the driver's sysfs counters before/after
 *
 * Prints "ok <subcommand> ..." and exits 0, or exits non-zero with a message
 * on stderr at the first deviation; a watchdog ends a hang (exit 3).
 *
 * Single-iovec READV/WRITEV only: the fifolab driver posts one device
 * request per async kiocb, from the first iovec, so a vectored request may
 * be short (libaio_test checks that), and a short result fails an
 * IOSQE_IO_LINK chain (the rest complete with -ECANCELED).
 */
#include "common.h"

#include <liburing.h>
#include <sys/uio.h>

#define NREQ	8

static const char *const subs[] = {
	"all", "basic", "pending", "cancel", "exit-pending", NULL
};

static const char usage[] =
	"usage: uring_test DEV [all|basic|pending|cancel|exit-pending] [--counters]\n"
	"       uring_test DEV pending --external N --ready FILE\n";

static struct io_uring ring;

static void ring_init(void)
{
	int r = io_uring_queue_init(32, &ring, 0);

	if (r < 0)
		die_neg(r, "io_uring_queue_init");
}

static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	if (!sqe)
		die("io_uring_get_sqe: submission queue full");
	return sqe;
}

static void submit(int n, const char *what)
{
	int r = io_uring_submit(&ring);

	if (r < 0)
		die_neg(r, "io_uring_submit (%s)", what);
	if (r != n)
		die("%s: io_uring_submit returned %d, expected %d", what, r, n);
}

/* The next CQE within EVENT_TIMEOUT_MS: user_data and res. */
static void wait_cqe(uint64_t *ud, int *res, const char *what)
{
	struct __kernel_timespec ts = { EVENT_TIMEOUT_MS / 1000, 0 };
	struct io_uring_cqe *cqe;
	int r;

	do
		r = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
	while (r == -EINTR);
	if (r == -ETIME)
		die("%s: no completion within %d ms", what, EVENT_TIMEOUT_MS);
	if (r < 0)
		die_neg(r, "io_uring_wait_cqe_timeout (%s)", what);
	*ud = cqe->user_data;
	*res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
}

/* No CQE is ready. */
static void expect_no_cqe(const char *what)
{
	struct io_uring_cqe *cqe;
	int r = io_uring_peek_cqe(&ring, &cqe);

	if (r == 0)
		die("%s: io_uring_peek_cqe found a completion (user_data %llu, res %d)", what,
		    (unsigned long long)cqe->user_data, cqe->res);
	if (r != -EAGAIN)
		die_neg(r, "io_uring_peek_cqe (%s)", what);
}

/* ------------------------------------------------------------ basic */

static int cmd_basic(void)
{
	static const size_t base[NREQ] = { 1, 4095, 4096, 5000, 7, 12000, 777, 20000 };
	size_t sizes[NREQ], total = 0, depth = fifo_depth(opt.dev), sum = 0;
	uint8_t *wb[NREQ], *rb[NREQ];
	struct iovec wiov[NREQ], riov[NREQ];
	int res[NREQ], seen[NREQ];
	uint32_t seed = 0x0b1a5;
	uint64_t off = 0;
	int fd_w, fd_r;

	for (int i = 0; i < NREQ; i++)
		sum += base[i];
	for (int i = 0; i < NREQ; i++) {
		sizes[i] = base[i];
		if (depth && sum > depth)
			sizes[i] = base[i] * depth / sum ? base[i] * depth / sum : 1;
		total += sizes[i];
	}
	drain(opt.dev);
	fd_w = xopen(opt.dev, O_WRONLY);
	fd_r = xopen(opt.dev, O_RDONLY);
	ring_init();

	for (int phase = 0; phase < 2; phase++) {
		const char *what = phase ? "8 linked reads" : "8 linked writes";

		memset(seen, 0, sizeof(seen));
		off = 0;
		for (int i = 0; i < NREQ; i++) {
			struct io_uring_sqe *sqe = get_sqe();

			if (!phase) {
				wb[i] = map_buf(sizes[i]);
				fill(wb[i], sizes[i], seed, off);
				wiov[i] = (struct iovec){ wb[i], sizes[i] };
				if (i & 1)
					io_uring_prep_writev(sqe, fd_w, &wiov[i], 1, -1);
				else
					io_uring_prep_write(sqe, fd_w, wb[i], sizes[i], -1);
			} else {
				rb[i] = map_buf(sizes[i]);
				riov[i] = (struct iovec){ rb[i], sizes[i] };
				if (i % 3 == 1)
					io_uring_prep_readv(sqe, fd_r, &riov[i], 1, -1);
				else
					io_uring_prep_read(sqe, fd_r, rb[i], sizes[i], -1);
			}
			off += sizes[i];
			io_uring_sqe_set_data64(sqe, ((uint64_t)phase << 32) | i);
			if (i < NREQ - 1)
				sqe->flags |= IOSQE_IO_LINK;
		}
		submit(NREQ, what);
		for (int k = 0; k < NREQ; k++) {
			uint64_t ud;
			int r;

			wait_cqe(&ud, &r, what);
			if ((ud >> 32) != (uint64_t)phase || (ud & 0xffffffff) >= NREQ)
				die("%s: CQE with unknown user_data %#llx", what,
				    (unsigned long long)ud);
			if (seen[ud & 0xffffffff]++)
				die("%s: two CQEs for request %u", what, (unsigned)(ud & 0xffffffff));
			res[ud & 0xffffffff] = r;
		}
		off = 0;
		for (int i = 0; i < NREQ; i++) {
			if (res[i] < 0)
				die("%s: request %d of %zu bytes: res %d (%s)", what, i, sizes[i],
				    res[i], strerror(-res[i]));
			if ((size_t)res[i] != sizes[i])
				die("%s: request %d of %zu bytes (%s): res %d", what, i, sizes[i],
				    phase ? "all in the FIFO" : "fits the FIFO", res[i]);
			if (phase)
				stream_check(rb[i], sizes[i], seed, off, "linked read");
			off += sizes[i];
		}
		expect_no_cqe(what);
	}
	expect_empty(opt.dev, "at the end");
	io_uring_queue_exit(&ring);
	close(fd_w);
	close(fd_r);
	printf("ok basic: %d linked writes + %d linked reads in flight, %zu bytes, "
	       "crc32=%08x\n", NREQ, NREQ, total, stream_crc(seed, total));
	return 0;
}

/* ------------------------------------------------------------ pending */

static volatile sig_atomic_t guard_fired;

static void on_guard(int sig)
{
	(void)sig;
	guard_fired = 1;
}

/* io_uring_submit of a read of an empty FIFO must return at once. */
static void submit_nonblocking(int n, const char *what)
{
	struct sigaction sa = { .sa_handler = on_guard };
	struct itimerval it = { .it_value = { .tv_sec = 5 } }, off = { 0 };
	int r;

	if (sigaction(SIGALRM, &sa, NULL))
		die_errno("sigaction");
	guard_fired = 0;
	setitimer(ITIMER_REAL, &it, NULL);
	r = io_uring_submit(&ring);
	setitimer(ITIMER_REAL, &off, NULL);
	if (guard_fired)
		die("%s: io_uring_submit blocked until a SIGALRM 5 s later (returned %d)", what, r);
	if (r < 0)
		die_neg(r, "io_uring_submit (%s)", what);
	if (r != n)
		die("%s: io_uring_submit returned %d, expected %d", what, r, n);
}

static int cmd_pending(void)
{
	size_t total = opt.external ? opt.external : fit(3000, fifo_depth(opt.dev));
	uint32_t seed = opt.external ? HOST_SEED : 0x0e9d;
	uint8_t *b = map_buf(65536);
	size_t got = 0;
	int fd_r, fd_w = -1, first = 0, reads = 0;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	if (!opt.external)
		fd_w = xopen(opt.dev, O_WRONLY);
	ring_init();
	print_counters(opt.dev, "before");

	{
		struct io_uring_sqe *sqe = get_sqe();

		io_uring_prep_read(sqe, fd_r, b, 4096, -1);
		io_uring_sqe_set_data64(sqe, 0);
	}
	submit_nonblocking(1, "read of an empty FIFO");
	expect_no_cqe("read of an empty FIFO, at once");
	sleep_ms(200);
	expect_no_cqe("read of an empty FIFO, 200 ms later");

	if (opt.external)
		armed();
	else
		write_stream(fd_w, total, seed, 0, "write completing the read");
	while (got < total) {
		uint64_t ud;
		int r;

		if (reads) {
			size_t want = total - got < 65536 ? total - got : 65536;
			struct io_uring_sqe *sqe = get_sqe();

			io_uring_prep_read(sqe, fd_r, b, want, -1);
			io_uring_sqe_set_data64(sqe, reads);
			submit(1, "read of the rest");
		}
		wait_cqe(&ud, &r, reads ? "read of the rest" : "the pending read");
		if (ud != (uint64_t)reads)
			die("CQE user_data %llu, expected %d", (unsigned long long)ud, reads);
		if (r < 0)
			die("read %d: res %d (%s)", reads, r, strerror(-r));
		if (r == 0 || (size_t)r > total - got)
			die("read %d: res %d with %zu of %zu bytes still to come", reads, r,
			    total - got, total);
		stream_check(b, r, seed, got, reads ? "read of the rest" : "the pending read");
		if (!reads)
			first = r;
		got += r;
		reads++;
	}
	if (!opt.external)
		expect_empty(opt.dev, "at the end");
	io_uring_queue_exit(&ring);
	print_counters(opt.dev, "after");
	printf("ok pending: io_uring_submit returned at once, no CQE, then %d + %zu bytes %s "
	       "in %d reads, crc32=%08x\n", first, total - first,
	       opt.external ? "from the host" : "written", reads, stream_crc(seed, total));
	return 0;
}

/* ------------------------------------------------------------ cancel */

static int cmd_cancel(void)
{
	uint8_t *b = map_buf(4096);
	struct io_uring_sqe *sqe;
	int fd_r, fd_w, rres = 1, cres = 1;
	uint32_t seed = 0xca11;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	fd_w = xopen(opt.dev, O_WRONLY);
	ring_init();

	sqe = get_sqe();
	io_uring_prep_read(sqe, fd_r, b, 4096, -1);
	io_uring_sqe_set_data64(sqe, 1);
	submit_nonblocking(1, "read of an empty FIFO");
	expect_no_cqe("pending read");
	sleep_ms(100);
	expect_no_cqe("pending read, 100 ms later");

	sqe = get_sqe();
	io_uring_prep_cancel64(sqe, 1, 0);
	io_uring_sqe_set_data64(sqe, 2);
	submit(1, "ASYNC_CANCEL");
	for (int k = 0; k < 2; k++) {
		uint64_t ud;
		int r;

		wait_cqe(&ud, &r, "cancel");
		if (ud == 1 && rres == 1)
			rres = r;
		else if (ud == 2 && cres == 1)
			cres = r;
		else
			die("cancel: unexpected CQE user_data %llu res %d", (unsigned long long)ud, r);
	}
	if (rres != -ECANCELED)
		die("cancelled read: res %d (%s), expected -ECANCELED", rres,
		    rres < 0 ? strerror(-rres) : "bytes");
	if (cres != 0 && cres != -EALREADY)
		die("ASYNC_CANCEL: res %d (%s), expected 0 or -EALREADY", cres, strerror(-cres));
	expect_no_cqe("after the cancel");

	/* the cancelled read took nothing */
	write_stream(fd_w, 100, seed, 0, "write after the cancel");
	read_stream(fd_r, 100, seed, 0, "bytes after the cancel");
	expect_empty(opt.dev, "at the end");
	io_uring_queue_exit(&ring);
	printf("ok cancel: pending read -ECANCELED, ASYNC_CANCEL %d, nothing consumed\n", cres);
	return 0;
}

/* ------------------------------------------------------------ exit-pending */

static int cmd_exit_pending(void)
{
	uint32_t seed = 0xe417;
	int p[2], status, fd_w, fd_r;
	double end;
	uint8_t b[300];
	size_t got = 0;
	pid_t pid;

	drain(opt.dev);
	if (pipe(p))
		die_errno("pipe");
	pid = xfork("exits with a read pending");
	if (pid == 0) {
		uint8_t *buf = map_buf(4096);
		int fd = xopen(opt.dev, O_RDONLY);

		close(p[0]);
		ring_init();
		io_uring_prep_read(get_sqe(), fd, buf, 4096, -1);
		submit_nonblocking(1, "read of an empty FIFO");
		expect_no_cqe("pending read");
		if (write(p[1], "S", 1) != 1)
			die_errno("pipe");
		exit(0);
	}
	close(p[1]);
	if (!wait_child_for(pid, &status, 3 * EVENT_TIMEOUT_MS)) {
		kill(pid, SIGKILL);
		die("a process with an io_uring read pending did not end within %d s",
		    3 * EVENT_TIMEOUT_MS / 1000);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die("the child failed (status %#x)", status);
	if (read(p[0], b, 1) != 1)
		die("the child ended before it submitted");
	close(p[0]);

	/* no leftover read takes the next bytes */
	fd_w = xopen(opt.dev, O_WRONLY);
	fd_r = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	write_stream(fd_w, sizeof(b), seed, 0, "write after the exit");
	end = now() + 2;
	while (got < sizeof(b)) {
		ssize_t r = read(fd_r, b + got, sizeof(b) - got);

		if (r > 0) {
			got += r;
			continue;
		}
		if (r < 0 && errno != EAGAIN)
			die_errno("read after the exit");
		if (now() > end)
			die("after the exit: %zu of %zu bytes written could be read: the dead "
			    "process's read is still taking data", got, sizeof(b));
		sleep_ms(5);
	}
	stream_check(b, sizeof(b), seed, 0, "bytes after the exit");
	expect_empty(opt.dev, "at the end");
	printf("ok exit-pending: the process ended, nothing lost\n");
	return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	const char *sub;
	int ret;

	prog = "uring_test";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, subs, usage);
	sub = opt.sub ? opt.sub : "all";
	cmd = sub;
	if (opt.external && strcmp(sub, "pending"))
		die("--external is for the pending subcommand");
	watchdog(WATCHDOG_SECONDS);
	if (!strcmp(sub, "all"))
		return run_all(subs);
	if (!strcmp(sub, "pending"))
		return cmd_pending();
	print_counters(opt.dev, "before");
	if (!strcmp(sub, "basic"))
		ret = cmd_basic();
	else if (!strcmp(sub, "cancel"))
		ret = cmd_cancel();
	else
		ret = cmd_exit_pending();
	print_counters(opt.dev, "after");
	return ret;
}

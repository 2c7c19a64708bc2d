// SPDX-License-Identifier: GPL-2.0
/*
 * libaio_test - Linux native AIO (libaio: io_setup, io_submit, io_getevents,
 * io_cancel, io_destroy) against a fifolab FIFO, run inside the guest.
 *
 *   libaio_test DEV basic     8 writes (io_prep_pwrite / io_prep_pwritev) in
 *                             one io_submit, then 8 reads (io_prep_pread /
 *                             io_prep_preadv) in one io_submit; every
 *                             completion goes through its io_set_callback
 *                             callback; res checked, data verified per
 *                             request at its stream offset
 *   libaio_test DEV pending [--external N --ready FILE]
 *                             the truly-async proof: io_submit of a read of
 *                             an EMPTY FIFO returns 1 at once (not after a
 *                             5 s SIGALRM), io_getevents with a zero timeout
 *                             finds nothing (also 200 ms later); then a
 *                             write through a second fd - or, with
 *                             --external, N bytes the harness injects from
 *                             the host once FILE exists (nothing is written
 *                             then) - completes it with exactly those bytes
 *                             (further libaio reads collect the rest)
 *   libaio_test DEV cancel    io_cancel of a pending read of an empty FIFO
 *                             returns -EINPROGRESS and its event (res
 *                             -ECANCELED) comes through io_getevents; a second
 *                             io_cancel of it, and one of a finished request:
 *                             -EINVAL; of two pending reads the later one is
 *                             cancelled and the earlier still gets the data;
 *                             cancelled reads consume nothing
 *   libaio_test DEV destroy   io_destroy with 4 reads pending on an empty
 *                             FIFO returns 0 (a child does it; the parent
 *                             reports a hang instead of hanging), and a
 *                             process that exits with 4 reads pending ends;
 *                             afterwards the FIFO works and no byte is lost
 *                             to a read that should have been cancelled
 *   libaio_test DEV eventfd   completions signalled through io_set_eventfd,
 *                             an epoll loop on the eventfd: 8 writes, then 8
 *                             reads in flight; eventfd counts = events reaped
 *   libaio_test DEV depth-pending
 *                             8 reads of an EMPTY FIFO pending at once (one
 *                             io_submit, returns at once), completed by a
 *                             later write, reaped through eventfd + epoll;
 *                             concatenated in submission order they are the
 *                             stream
 *   libaio_test DEV nowait    RWF_NOWAIT (IOCB_NOWAIT): a read of an empty
 *                             FIFO completes at once with -EAGAIN; a write
 *                             and a read of 100 bytes complete with 100
 *   libaio_test DEV [all]     every subcommand, each in a fresh process
 *   --counters                print the driver's sysfs counters before/after
 *
 * Prints "ok <subcommand> ..." and exits 0, or exits non-zero with a message
 * on stderr at the first deviation; a watchdog ends a hang (exit 3).
 *
 * Kernel behaviour asserted (linux 6.1 fs/aio.c):
 *   - io_cancel looks the iocb up in ctx->active_reqs, which holds only
 *     requests whose driver called kiocb_set_cancel_fn(); if the driver's
 *     cancel function returns 0 the syscall returns -EINPROGRESS (the
 *     "result" argument is no longer written): the event is always delivered
 *     through the ring, with the res the driver completes it with (the
 *     fifolab contract: -ECANCELED).  io_cancel removes the request from
 *     active_reqs, so a second io_cancel, or one of a finished request (or of
 *     a driver without a cancel function), returns -EINVAL.
 *   - io_destroy (and exit_aio at process exit) calls every active request's
 *     cancel function and then waits UNINTERRUPTIBLY until all requests
 *     completed: a driver that cannot cancel a pending read makes it hang
 *     for good (unkillable, D state), which is why a child does it here.
 *   - RWF_NOWAIT needs FMODE_NOWAIT on the file, else io_submit fails with
 *     -EOPNOTSUPP (kiocb_set_rw_flags).
 *   - With a synchronous read_iter (no -EIOCBQUEUED) io_submit itself blocks
 *     in the driver until data comes; pending/cancel/destroy/depth-pending
 *     detect that with a SIGALRM after 5 s and say so.
 *
 * fifolab driver behaviour allowed for: one device request per async kiocb,
 * from the FIRST iovec only, so an io_prep_pwritev/io_prep_preadv request
 * may complete short (>= its first iovec for a write, >= 1 byte for a read;
 * counted and printed as "short vectored writes/reads"); single-buffer
 * requests must be complete when the FIFO has the room or the data.  What
 * the writes really put in is kept as the model the reads are checked
 * against, in submission order (the device serves each queue in order).
 *
 * libaio: io_set_callback() stores the callback in iocb->data (so it cannot
 * carry user data too); the event's obj is the iocb, which identifies the
 * request.  libaio returns -errno instead of setting errno.
 */
#include "common.h"

#include <libaio.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>

#define NREQ		8
#define SUBMIT_GUARD_S	5

static const char *const subs[] = {
	"all", "basic", "pending", "cancel", "destroy", "eventfd", "depth-pending",
	"nowait", NULL
};

static const char usage[] =
	"usage: libaio_test DEV [all|basic|pending|cancel|destroy|eventfd|depth-pending|nowait]"
	" [--counters]\n"
	"       libaio_test DEV pending --external N --ready FILE\n";

struct req {
	struct iocb cb;
	int idx;
	int is_read;
	int niov;
	struct iovec iov[4];
	size_t len;		/* bytes asked for */
	long res;		/* completion result */
	int done;		/* callback invocations */
};

static int callbacks;

static void on_complete(io_context_t ctx, struct iocb *iocb, long res, long res2)
{
	struct req *r = (struct req *)((char *)iocb - offsetof(struct req, cb));

	(void)ctx;
	(void)res2;
	r->res = res;
	r->done++;
	callbacks++;
}

/* The request of an event; dies if the event names no known request. */
static struct req *ev_req(struct io_event *ev, struct req *reqs, int n)
{
	for (int i = 0; i < n; i++)
		if (ev->obj == &reqs[i].cb)
			return &reqs[i];
	die("io_getevents returned an event for iocb %p, not one of ours", (void *)ev->obj);
}

/* Dispatch an event to its callback (io_set_callback put it in data). */
static void dispatch(io_context_t ctx, struct io_event *ev)
{
	io_callback_t fn = (io_callback_t)ev->data;

	if (fn != on_complete)
		die("event data %p is not the callback set with io_set_callback", ev->data);
	fn(ctx, ev->obj, (long)ev->res, (long)ev->res2);
}

/* Reap exactly @n events within EVENT_TIMEOUT_MS, checking each belongs to
 * @reqs, calling callbacks. */
static void reap(io_context_t ctx, struct req *reqs, int nreqs, int n, const char *what)
{
	struct io_event evs[64];
	double end = now() + EVENT_TIMEOUT_MS / 1e3;
	int got = 0;

	while (got < n) {
		struct timespec ts = { 0, 100 * 1000000L };
		int r = io_getevents(ctx, 1, n - got < 64 ? n - got : 64, evs, &ts);

		if (r < 0 && r != -EINTR)
			die_neg(r, "io_getevents (%s)", what);
		for (int i = 0; i < r; i++) {
			ev_req(&evs[i], reqs, nreqs);
			dispatch(ctx, &evs[i]);
		}
		if (r > 0)
			got += r;
		if (got < n && now() > end)
			die("%s: %d of %d completions within %d ms", what, got, n,
			    EVENT_TIMEOUT_MS);
	}
}

/* Nothing completed: io_getevents with a zero timeout returns 0. */
static void expect_no_event(io_context_t ctx, const char *what)
{
	struct io_event ev;
	struct timespec zero = { 0, 0 };
	int r = io_getevents(ctx, 0, 1, &ev, &zero);

	if (r < 0)
		die_neg(r, "io_getevents (%s)", what);
	if (r)
		die("%s: io_getevents with a zero timeout found %d event(s) (res %ld), expected none",
		    what, r, (long)ev.res);
}

static io_context_t setup(int nr)
{
	io_context_t ctx = 0;
	int r = io_setup(nr, &ctx);

	if (r)
		die_neg(r, "io_setup(%d)", nr);
	return ctx;
}

static volatile sig_atomic_t guard_fired;

static void on_guard(int sig)
{
	(void)sig;
	guard_fired = 1;
}

/* io_submit of @n requests that must not block (reads of an empty FIFO):
 * a SIGALRM after SUBMIT_GUARD_S seconds ends a blocked one and we say so. */
static void submit_nonblocking(io_context_t ctx, struct iocb **cbs, int n, const char *what)
{
	struct sigaction sa = { .sa_handler = on_guard };	/* no SA_RESTART */
	struct itimerval it = { .it_value = { .tv_sec = SUBMIT_GUARD_S } }, off = { 0 };
	double t0;
	int r;

	if (sigaction(SIGALRM, &sa, NULL))
		die_errno("sigaction(SIGALRM)");
	guard_fired = 0;
	if (setitimer(ITIMER_REAL, &it, NULL))
		die_errno("setitimer");
	t0 = now();
	r = io_submit(ctx, n, cbs);
	setitimer(ITIMER_REAL, &off, NULL);
	if (guard_fired)
		die("%s: io_submit blocked for %.1f s on an EMPTY FIFO until a signal ended it "
		    "(returned %d): the driver's read_iter completes synchronously instead of "
		    "returning -EIOCBQUEUED", what, now() - t0, r);
	if (r < 0)
		die_neg(r, "io_submit (%s)", what);
	if (r != n)
		die("%s: io_submit returned %d, expected %d", what, r, n);
}

static void submit(io_context_t ctx, struct iocb **cbs, int n, const char *what)
{
	int r = io_submit(ctx, n, cbs);

	if (r < 0)
		die_neg(r, "io_submit (%s)", what);
	if (r != n)
		die("%s: io_submit returned %d, expected %d", what, r, n);
}

/* ------------------------------------------------------------ requests */

/* Request @r of @len bytes: a single buffer, or (niov > 1) that many
 * iovecs splitting it unevenly; @eventfd >= 0: io_set_eventfd. */
static void prep_req(struct req *r, int idx, int fd, int is_read, size_t len, int niov,
		     int efd)
{
	uint8_t *buf = map_buf(len);
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	r->idx = idx;
	r->is_read = is_read;
	r->len = len;
	r->niov = niov;
	r->res = LONG_MIN;
	for (int i = 0; i < niov; i++) {
		size_t part = i == niov - 1 ? len - off : (len - off) / (niov - i) + i;

		if (part > len - off)
			part = len - off;
		r->iov[i].iov_base = buf + off;
		r->iov[i].iov_len = part;
		off += part;
	}
	if (niov == 1 && is_read)
		io_prep_pread(&r->cb, fd, buf, len, 0);
	else if (niov == 1)
		io_prep_pwrite(&r->cb, fd, buf, len, 0);
	else if (is_read)
		io_prep_preadv(&r->cb, fd, r->iov, niov, 0);
	else
		io_prep_pwritev(&r->cb, fd, r->iov, niov, 0);
	io_set_callback(&r->cb, on_complete);	/* after prep: prep clears the iocb */
	if (efd >= 0)
		io_set_eventfd(&r->cb, efd);
}

static void req_fill(struct req *r, uint32_t seed, uint64_t start)
{
	for (int i = 0; i < r->niov; i++) {
		fill(r->iov[i].iov_base, r->iov[i].iov_len, seed, start);
		start += r->iov[i].iov_len;
	}
}

/*
 * What the FIFO must deliver, in order: the model.  Self-written data is
 * added as writes complete (a vectored write may be short: the driver posts
 * one device request per kiocb, from the first iovec, as a char device may);
 * a stream of @seed is added whole.
 */
static uint8_t *model;
static size_t model_len, model_cap;

static void model_add(const void *p, size_t n)
{
	if (model_len + n > model_cap) {
		model_cap = (model_len + n) * 2 + 65536;
		model = realloc(model, model_cap);
		if (!model)
			die("realloc");
	}
	memcpy(model + model_len, p, n);
	model_len += n;
}

static void model_stream(uint32_t seed, size_t n)
{
	uint8_t *b = xmalloc(n);

	fill(b, n, seed, model_len);
	model_add(b, n);
	free(b);
}

/* The first @n bytes of write request @r went into the FIFO. */
static void model_add_write(struct req *r, size_t n)
{
	for (int i = 0; i < r->niov && n; i++) {
		size_t part = r->iov[i].iov_len < n ? r->iov[i].iov_len : n;

		model_add(r->iov[i].iov_base, part);
		n -= part;
	}
}

/* @n bytes read at stream offset @off must match the model. */
static void model_check(const uint8_t *b, size_t n, uint64_t off, const char *what)
{
	if (off + n > model_len)
		die("%s: read %zu bytes at stream offset %llu, only %zu were sent", what, n,
		    (unsigned long long)off, model_len);
	for (size_t i = 0; i < n; i++)
		if (b[i] != model[off + i])
			die("%s: stream byte %llu (byte %zu of this %zu-byte chunk) is %#04x, "
			    "expected %#04x", what, (unsigned long long)(off + i), i, n, b[i],
			    model[off + i]);
}

/* The first @n bytes of read request @r must be the model from @start. */
static void req_check(struct req *r, size_t n, uint64_t start)
{
	char what[64];

	snprintf(what, sizeof(what), "read request %d", r->idx);
	for (int i = 0; i < r->niov && n; i++) {
		size_t part = r->iov[i].iov_len < n ? r->iov[i].iov_len : n;

		model_check(r->iov[i].iov_base, part, start, what);
		start += part;
		n -= part;
	}
}

/* Write results: single-buffer writes complete, vectored ones >= 1 byte
 * (counted in *short_v when short); what they wrote goes to the model. */
static void check_writes(struct req *wr, int n, int *short_v)
{
	for (int i = 0; i < n; i++) {
		struct req *r = &wr[i];

		if (r->done != 1)
			die("write request %d: callback ran %d times", i, r->done);
		if (r->res < 0)
			die("write request %d (%d iovecs) of %zu bytes: res %ld (%s)", i, r->niov,
			    r->len, r->res, strerror((int)-r->res));
		if (r->res == 0 || (size_t)r->res > r->len)
			die("write request %d (%d iovecs) of %zu bytes: res %ld", i, r->niov,
			    r->len, r->res);
		if ((size_t)r->res < r->len) {
			if (r->niov == 1)
				die("write request %d of %zu bytes into a FIFO with room: res %ld",
				    i, r->len, r->res);
			if ((size_t)r->res < r->iov[0].iov_len)
				die("vectored write request %d: res %ld, less than its first iovec "
				    "(%zu)", i, r->res, r->iov[0].iov_len);
			(*short_v)++;
		}
		model_add_write(r, r->res);
	}
}

/* Sizes of NREQ requests whose total fits a FIFO @depth deep. */
static void pick_sizes(size_t *sizes, size_t depth)
{
	static const size_t base[NREQ] = { 1, 4095, 4096, 5000, 7, 12000, 777, 20000 };
	size_t total = 0;

	for (int i = 0; i < NREQ; i++)
		total += base[i];
	for (int i = 0; i < NREQ; i++) {
		sizes[i] = base[i];
		if (depth && total > depth)
			sizes[i] = base[i] * depth / total ? base[i] * depth / total : 1;
	}
}

/* The niov of request @i: a mix of single buffers and 2..4 iovecs. */
static int niov_of(int i)
{
	static const int n[NREQ] = { 1, 2, 1, 3, 1, 4, 2, 1 };

	return n[i];
}

/*
 * Read results in submission order are consecutive pieces of the stream
 * (requests on the device's RX queue are served in the order posted).  A
 * single-buffer read of data all in the FIFO must be complete; a vectored
 * one at least 1 byte (a driver may serve one iovec per request).  Returns
 * the bytes the reads got; *short_v counts short vectored reads.
 */
static uint64_t check_reads(struct req *rd, int n, uint64_t start, int all_there,
			    int *short_v)
{
	uint64_t off = start;

	for (int i = 0; i < n; i++) {
		struct req *r = &rd[i];

		if (r->done != 1)
			die("read request %d: callback ran %d times", i, r->done);
		if (r->res < 0)
			die("read request %d of %zu bytes: res %ld (%s)", i, r->len, r->res,
			    strerror((int)-r->res));
		if (r->res == 0 || (size_t)r->res > r->len)
			die("read request %d of %zu bytes: res %ld", i, r->len, r->res);
		if ((size_t)r->res < r->len) {
			if (r->niov == 1 && all_there)
				die("read request %d of %zu bytes got %ld with all the data in the FIFO",
				    i, r->len, r->res);
			if (r->niov > 1)
				(*short_v)++;
		}
		req_check(r, r->res, off);
		off += r->res;
	}
	return off - start;
}

/* Blocking-read the model's bytes [@got, model_len) through @fd, checking. */
static void read_rest(int fd, uint64_t got)
{
	size_t n = model_len - got;
	uint8_t *b;

	if (got >= model_len)
		return;
	b = xmalloc(n);
	read_all(fd, b, n, "the rest of the stream");
	model_check(b, n, got, "the rest of the stream");
	free(b);
}

/* ------------------------------------------------------------ basic */

static int cmd_basic(void)
{
	struct req wr[NREQ], rd[NREQ];
	struct iocb *cbs[NREQ];
	size_t sizes[NREQ];
	uint64_t total = 0, got;
	uint32_t seed = 0xb451c;
	int fd_w, fd_r, short_v = 0, short_w = 0;
	io_context_t ctx;

	pick_sizes(sizes, fifo_depth(opt.dev));
	drain(opt.dev);
	fd_w = xopen(opt.dev, O_WRONLY);
	fd_r = xopen(opt.dev, O_RDONLY);
	ctx = setup(64);

	for (int i = 0; i < NREQ; i++) {
		prep_req(&wr[i], i, fd_w, 0, sizes[i], niov_of(i), -1);
		req_fill(&wr[i], seed, total);
		total += sizes[i];
		cbs[i] = &wr[i].cb;
	}
	submit(ctx, cbs, NREQ, "8 writes");
	reap(ctx, wr, NREQ, NREQ, "8 writes");
	check_writes(wr, NREQ, &short_w);

	/* reads of what each write put in: together exactly the FIFO's bytes */
	for (int i = 0; i < NREQ; i++) {
		prep_req(&rd[i], i, fd_r, 1, wr[i].res, niov_of(NREQ - 1 - i), -1);
		cbs[i] = &rd[i].cb;
	}
	submit(ctx, cbs, NREQ, "8 reads");
	reap(ctx, rd, NREQ, NREQ, "8 reads");
	got = check_reads(rd, NREQ, 0, 1, &short_v);
	read_rest(fd_r, got);
	expect_empty(opt.dev, "at the end");
	if (callbacks != 2 * NREQ)
		die("%d callbacks ran, expected %d", callbacks, 2 * NREQ);
	if (io_destroy(ctx))
		die("io_destroy failed");
	close(fd_w);
	close(fd_r);
	printf("ok basic: %d writes + %d reads at depth %d, %zu of %llu bytes went through, "
	       "crc32=%08x, %d callbacks, short vectored writes %d, reads %d\n", NREQ, NREQ,
	       NREQ, model_len, (unsigned long long)total, crc32(model, model_len), callbacks,
	       short_w, short_v);
	return 0;
}

/* ------------------------------------------------------------ pending */

static int cmd_pending(void)
{
	size_t total = opt.external ? opt.external : fit(3000, fifo_depth(opt.dev));
	uint32_t seed = opt.external ? HOST_SEED : 0x9e4d;
	struct req r, more;
	struct iocb *cbs[1];
	uint64_t got;
	int fd_r, fd_w = -1, short_v = 0;
	io_context_t ctx;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);	/* blocking: no IOCB_NOWAIT */
	if (!opt.external)
		fd_w = xopen(opt.dev, O_WRONLY);
	ctx = setup(8);
	print_counters(opt.dev, "before");

	prep_req(&r, 0, fd_r, 1, 4096, 1, -1);
	cbs[0] = &r.cb;
	submit_nonblocking(ctx, cbs, 1, "read of an empty FIFO");
	expect_no_event(ctx, "read of an empty FIFO, at once");
	sleep_ms(200);
	expect_no_event(ctx, "read of an empty FIFO, 200 ms later");
	if (r.done)
		die("the callback ran before any completion was reaped");

	if (opt.external)
		armed();
	else
		write_stream(fd_w, total, seed, 0, "write completing the read");
	model_stream(seed, total);
	reap(ctx, &r, 1, 1, "the pending read");
	got = check_reads(&r, 1, 0, 0, &short_v);
	while (got < total) {
		size_t want = total - got < 65536 ? total - got : 65536;

		prep_req(&more, 1, fd_r, 1, want, 1, -1);
		cbs[0] = &more.cb;
		submit(ctx, cbs, 1, "read of the rest");
		reap(ctx, &more, 1, 1, "read of the rest");
		got += check_reads(&more, 1, got, 0, &short_v);
		munmap(more.iov[0].iov_base, want);
	}
	if (!opt.external)
		expect_empty(opt.dev, "at the end");
	io_destroy(ctx);
	print_counters(opt.dev, "after");
	printf("ok pending: io_submit returned at once, no event, then %ld + %llu bytes %s, "
	       "crc32=%08x\n", r.res, (unsigned long long)(total - r.res),
	       opt.external ? "from the host" : "written", stream_crc(seed, total));
	return 0;
}

/* ------------------------------------------------------------ cancel */

static void expect_cancel(io_context_t ctx, struct req *r, int want, const char *what)
{
	struct io_event ev;
	int ret = io_cancel(ctx, &r->cb, &ev);

	if (ret == want)
		return;
	if (want == -EINPROGRESS && ret == -EINVAL)
		die("%s: io_cancel returned -EINVAL, expected -EINPROGRESS: the request is not "
		    "cancelable (the driver did not call kiocb_set_cancel_fn) or already completed",
		    what);
	die("%s: io_cancel returned %d (%s), expected %d (%s)", what, ret,
	    ret < 0 ? strerror(-ret) : "?", want, strerror(-want));
}

static void expect_cancelled(struct req *r, const char *what)
{
	if (r->done != 1)
		die("%s: callback ran %d times", what, r->done);
	if (r->res != -ECANCELED)
		die("%s: completed with res %ld (%s), expected -ECANCELED", what, r->res,
		    r->res < 0 ? strerror((int)-r->res) : "bytes");
}

static int cmd_cancel(void)
{
	struct req a, b, c, w;
	struct iocb *cbs[2];
	uint32_t seed = 0xca9c;
	uint64_t got;
	int fd_r, fd_w, short_v = 0;
	io_context_t ctx;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	fd_w = xopen(opt.dev, O_WRONLY);
	ctx = setup(8);

	/* one pending read, cancelled */
	prep_req(&a, 0, fd_r, 1, 4096, 1, -1);
	cbs[0] = &a.cb;
	submit_nonblocking(ctx, cbs, 1, "read of an empty FIFO");
	expect_no_event(ctx, "pending read");
	expect_cancel(ctx, &a, -EINPROGRESS, "io_cancel of a pending read");
	reap(ctx, &a, 1, 1, "the cancelled read's event");
	expect_cancelled(&a, "the cancelled read");
	expect_cancel(ctx, &a, -EINVAL, "a second io_cancel of the cancelled read");
	expect_no_event(ctx, "after the cancelled read's one event");

	/* two pending reads: cancel the later; the earlier gets the data */
	prep_req(&b, 1, fd_r, 1, 4096, 1, -1);
	prep_req(&c, 2, fd_r, 1, 4096, 1, -1);
	cbs[0] = &b.cb;
	cbs[1] = &c.cb;
	submit_nonblocking(ctx, cbs, 2, "two reads of an empty FIFO");
	expect_no_event(ctx, "two pending reads");
	expect_cancel(ctx, &c, -EINPROGRESS, "io_cancel of the second pending read");
	reap(ctx, &c, 1, 1, "the cancelled second read's event");
	expect_cancelled(&c, "the cancelled second read");
	expect_no_event(ctx, "the first read, still pending");
	if (b.done)
		die("the first read completed when the second was cancelled (res %ld)", b.res);

	write_stream(fd_w, 100, seed, 0, "write completing the first read");
	model_stream(seed, 100);
	reap(ctx, &b, 1, 1, "the first read");
	got = check_reads(&b, 1, 0, 0, &short_v);
	read_rest(fd_r, got);
	expect_cancel(ctx, &b, -EINVAL, "io_cancel of a completed read");

	/* a completed write cannot be cancelled either */
	prep_req(&w, 3, fd_w, 0, 10, 1, -1);
	req_fill(&w, seed + 1, 0);
	cbs[0] = &w.cb;
	submit(ctx, cbs, 1, "10-byte write");
	reap(ctx, &w, 1, 1, "10-byte write");
	if (w.res != 10)
		die("10-byte write: res %ld", w.res);
	expect_cancel(ctx, &w, -EINVAL, "io_cancel of a completed write");
	read_stream(fd_r, 10, seed + 1, 0, "the 10 bytes");

	/* the cancelled reads took nothing */
	expect_empty(opt.dev, "at the end");
	if (io_destroy(ctx))
		die("io_destroy failed");
	close(fd_r);
	close(fd_w);
	printf("ok cancel: io_cancel -EINPROGRESS, event res -ECANCELED, again -EINVAL; "
	       "later of two cancelled, earlier got %ld bytes; completed: -EINVAL\n", b.res);
	return 0;
}

/* ------------------------------------------------------------ destroy */

/* A child: 4 reads pending on the empty FIFO; then io_destroy (@destroy) or
 * plain exit.  It writes 'S' to @p after submitting, 'D' after io_destroy. */
static void destroy_child(int p, int destroy)
{
	struct req rd[4];
	struct iocb *cbs[4];
	io_context_t ctx = setup(8);
	int fd = xopen(opt.dev, O_RDONLY), r;

	for (int i = 0; i < 4; i++) {
		prep_req(&rd[i], i, fd, 1, 1000, 1, -1);
		cbs[i] = &rd[i].cb;
	}
	submit_nonblocking(ctx, cbs, 4, "4 reads of an empty FIFO");
	expect_no_event(ctx, "4 pending reads");
	if (write(p, "S", 1) != 1)
		die_errno("pipe");
	if (!destroy)
		exit(0);	/* exit_aio() cancels and waits */
	r = io_destroy(ctx);
	if (r)
		die_neg(r, "io_destroy with 4 reads pending");
	for (int i = 0; i < 4; i++)
		if (rd[i].done)
			die("callback of read %d ran without io_getevents", i);
	if (write(p, "D", 1) != 1)
		die_errno("pipe");
	exit(0);
}

static void run_destroy_child(int destroy, const char *what)
{
	char state[4] = "";
	int p[2], status, n;
	pid_t pid;

	if (pipe(p))
		die_errno("pipe");
	pid = xfork(what);
	if (pid == 0) {
		close(p[0]);
		destroy_child(p[1], destroy);
	}
	close(p[1]);
	if (fcntl(p[0], F_SETFL, O_NONBLOCK))
		die_errno("fcntl");
	if (!wait_child_for(pid, &status, 3 * EVENT_TIMEOUT_MS)) {
		n = read(p[0], state, sizeof(state) - 1);
		(void)n;
		kill(pid, SIGKILL);
		die("%s: the child did not end within %d s (%s); it may be stuck for good in "
		    "an uninterruptible wait (io_destroy/exit_aio wait for every request)",
		    what, 3 * EVENT_TIMEOUT_MS / 1000,
		    state[0] ? "reads were submitted" : "io_submit did not return");
	}
	n = read(p[0], state, sizeof(state) - 1);
	close(p[0]);
	if (WIFSIGNALED(status))
		die("%s: child killed by signal %d", what, WTERMSIG(status));
	if (WEXITSTATUS(status))
		die("%s: child failed (exit %d)", what, WEXITSTATUS(status));
	if (n != (destroy ? 2 : 1))
		die("%s: child ended after %d steps", what, n);
}

/* @n bytes written must all be readable at once: no leftover (cancelled)
 * read at the device took them. */
static void expect_nothing_lost(size_t n, uint32_t seed)
{
	int fd_w = xopen(opt.dev, O_WRONLY), fd_r = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	uint8_t *b = xmalloc(n);
	double end = now() + 2;
	size_t got = 0;

	write_stream(fd_w, n, seed, 0, "write after io_destroy");
	while (got < n) {
		ssize_t r = read(fd_r, b + got, n - got);

		if (r > 0) {
			got += r;
			continue;
		}
		if (r < 0 && errno != EAGAIN)
			die_errno("read after io_destroy");
		if (now() > end)
			die("after io_destroy: %zu of %zu bytes written could be read: a read that "
			    "io_destroy should have cancelled is still taking data", got, n);
		sleep_ms(5);
	}
	stream_check(b, n, seed, 0, "bytes after io_destroy");
	free(b);
	close(fd_w);
	close(fd_r);
}

static int cmd_destroy(void)
{
	drain(opt.dev);
	run_destroy_child(1, "io_destroy");
	expect_nothing_lost(300, 0xde51);
	run_destroy_child(0, "exit with reads pending");
	expect_nothing_lost(300, 0xde52);
	expect_empty(opt.dev, "at the end");
	printf("ok destroy: io_destroy with 4 reads pending returned 0, exit with 4 pending "
	       "ended, nothing lost\n");
	return 0;
}

/* ------------------------------------------------------------ eventfd */

/* Reap @n events of @reqs through eventfd @efd in epoll @ep; returns the
 * number of epoll wakeups. */
static int efd_loop(io_context_t ctx, int ep, int efd, struct req *reqs, int nreqs, int n,
		    const char *what)
{
	struct io_event evs[64];
	struct epoll_event ee;
	struct timespec zero = { 0, 0 };
	int got = 0, wakeups = 0;

	while (got < n) {
		uint64_t cnt;
		int r = epoll_wait(ep, &ee, 1, EVENT_TIMEOUT_MS);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die_errno("epoll_wait (%s)", what);
		if (r == 0)
			die("%s: %d of %d completions, then no eventfd wakeup for %d ms", what, got,
			    n, EVENT_TIMEOUT_MS);
		if (ee.data.fd != efd || !(ee.events & EPOLLIN))
			die("%s: epoll event %#x for fd %d, expected EPOLLIN on the eventfd",
			    what, ee.events, ee.data.fd);
		wakeups++;
		if (read(efd, &cnt, 8) != 8)
			die_errno("read eventfd");
		if (cnt == 0 || cnt > (uint64_t)(n - got))
			die("%s: eventfd counted %llu completions, %d outstanding", what,
			    (unsigned long long)cnt, n - got);
		/* the events are in the ring before the eventfd is signalled */
		r = io_getevents(ctx, cnt, cnt, evs, &zero);
		if (r < 0)
			die_neg(r, "io_getevents");
		if ((uint64_t)r != cnt)
			die("%s: eventfd said %llu completions, io_getevents found %d", what,
			    (unsigned long long)cnt, r);
		for (int i = 0; i < r; i++) {
			ev_req(&evs[i], reqs, nreqs);
			dispatch(ctx, &evs[i]);
		}
		got += r;
	}
	return wakeups;
}

static int make_efd_epoll(int *efd)
{
	struct epoll_event ee = { .events = EPOLLIN };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0)
		die_errno("epoll_create1");
	*efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (*efd < 0)
		die_errno("eventfd");
	ee.data.fd = *efd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, *efd, &ee))
		die_errno("epoll_ctl(eventfd)");
	return ep;
}

static int cmd_eventfd(void)
{
	struct req wr[NREQ], rd[NREQ];
	struct iocb *cbs[NREQ];
	size_t sizes[NREQ];
	uint64_t total = 0, got;
	uint32_t seed = 0xef0d;
	int fd_w, fd_r, efd, ep, w1, w2, short_v = 0, short_w = 0;
	io_context_t ctx;

	pick_sizes(sizes, fifo_depth(opt.dev));
	drain(opt.dev);
	fd_w = xopen(opt.dev, O_WRONLY);
	fd_r = xopen(opt.dev, O_RDONLY);
	ctx = setup(64);
	ep = make_efd_epoll(&efd);

	for (int i = 0; i < NREQ; i++) {
		prep_req(&wr[i], i, fd_w, 0, sizes[i], niov_of(i), efd);
		req_fill(&wr[i], seed, total);
		total += sizes[i];
		cbs[i] = &wr[i].cb;
	}
	submit(ctx, cbs, NREQ, "8 writes");
	w1 = efd_loop(ctx, ep, efd, wr, NREQ, NREQ, "8 writes");
	check_writes(wr, NREQ, &short_w);
	for (int i = 0; i < NREQ; i++) {
		prep_req(&rd[i], i, fd_r, 1, wr[i].res, 1, efd);
		cbs[i] = &rd[i].cb;
	}
	submit(ctx, cbs, NREQ, "8 reads");
	w2 = efd_loop(ctx, ep, efd, rd, NREQ, NREQ, "8 reads");
	got = check_reads(rd, NREQ, 0, 1, &short_v);
	read_rest(fd_r, got);
	expect_empty(opt.dev, "at the end");
	io_destroy(ctx);
	printf("ok eventfd: %d writes in %d wakeups, %d reads in %d wakeups, %zu of %llu "
	       "bytes, crc32=%08x, short vectored writes %d\n", NREQ, w1, NREQ, w2, model_len,
	       (unsigned long long)total, crc32(model, model_len), short_w);
	return 0;
}

/* ------------------------------------------------------------ depth-pending */

static int cmd_depth_pending(void)
{
	struct req rd[NREQ];
	struct iocb *cbs[NREQ];
	size_t sizes[NREQ];
	uint64_t total = 0, got;
	uint32_t seed = 0xd3e9;
	int fd_w, fd_r, efd, ep, wakeups, short_v = 0;
	io_context_t ctx;

	pick_sizes(sizes, fifo_depth(opt.dev));
	drain(opt.dev);
	fd_w = xopen(opt.dev, O_WRONLY);
	fd_r = xopen(opt.dev, O_RDONLY);
	ctx = setup(64);
	ep = make_efd_epoll(&efd);
	print_counters(opt.dev, "before");

	for (int i = 0; i < NREQ; i++) {
		prep_req(&rd[i], i, fd_r, 1, sizes[i], niov_of(i), efd);
		total += sizes[i];
		cbs[i] = &rd[i].cb;
	}
	submit_nonblocking(ctx, cbs, NREQ, "8 reads of an empty FIFO");
	expect_no_event(ctx, "8 pending reads");
	sleep_ms(100);
	expect_no_event(ctx, "8 pending reads, 100 ms later");
	write_stream(fd_w, total, seed, 0, "write completing the 8 reads");
	model_stream(seed, total);
	wakeups = efd_loop(ctx, ep, efd, rd, NREQ, NREQ, "8 pending reads");
	got = check_reads(rd, NREQ, 0, 0, &short_v);
	read_rest(fd_r, got);
	expect_empty(opt.dev, "at the end");
	io_destroy(ctx);
	print_counters(opt.dev, "after");
	printf("ok depth-pending: %d reads pending at once, completed by one write in %d "
	       "eventfd wakeups, %llu of %llu bytes through them, crc32=%08x\n", NREQ,
	       wakeups, (unsigned long long)got, (unsigned long long)total,
	       stream_crc(seed, total));
	return 0;
}

/* ------------------------------------------------------------ nowait */

static int cmd_nowait(void)
{
	struct req r, w;
	struct iocb *cbs[1];
	uint32_t seed = 0x90a1;
	int fd_r, fd_w, ret, short_v = 0;
	io_context_t ctx;

	drain(opt.dev);
	fd_r = xopen(opt.dev, O_RDONLY);
	fd_w = xopen(opt.dev, O_WRONLY);
	ctx = setup(8);

	prep_req(&r, 0, fd_r, 1, 4096, 1, -1);
	r.cb.aio_rw_flags = RWF_NOWAIT;
	cbs[0] = &r.cb;
	ret = io_submit(ctx, 1, cbs);
	if (ret == -EOPNOTSUPP)
		die("io_submit with RWF_NOWAIT: -EOPNOTSUPP: the driver does not set FMODE_NOWAIT");
	if (ret != 1)
		die("io_submit of a RWF_NOWAIT read: %d", ret);
	reap(ctx, &r, 1, 1, "RWF_NOWAIT read of an empty FIFO");
	if (r.res != -EAGAIN)
		die("RWF_NOWAIT read of an empty FIFO: res %ld, expected -EAGAIN", r.res);

	prep_req(&w, 1, fd_w, 0, 100, 1, -1);
	w.cb.aio_rw_flags = RWF_NOWAIT;
	req_fill(&w, seed, 0);
	cbs[0] = &w.cb;
	submit(ctx, cbs, 1, "RWF_NOWAIT write");
	reap(ctx, &w, 1, 1, "RWF_NOWAIT write");
	if (w.res != 100)
		die("RWF_NOWAIT write of 100 bytes into an empty FIFO: res %ld", w.res);

	prep_req(&r, 2, fd_r, 1, 4096, 1, -1);
	r.cb.aio_rw_flags = RWF_NOWAIT;
	cbs[0] = &r.cb;
	submit(ctx, cbs, 1, "RWF_NOWAIT read");
	reap(ctx, &r, 1, 1, "RWF_NOWAIT read");
	if (r.res != 100)
		die("RWF_NOWAIT read with 100 bytes in the FIFO: res %ld", r.res);
	model_stream(seed, 100);
	check_reads(&r, 1, 0, 0, &short_v);
	expect_empty(opt.dev, "at the end");
	io_destroy(ctx);
	printf("ok nowait: empty read -EAGAIN at once, write 100, read 100\n");
	return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	const char *sub;
	int ret;

	prog = "libaio_test";
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
	if (strcmp(sub, "depth-pending"))
		print_counters(opt.dev, "before");
	if (!strcmp(sub, "basic"))
		ret = cmd_basic();
	else if (!strcmp(sub, "cancel"))
		ret = cmd_cancel();
	else if (!strcmp(sub, "destroy"))
		ret = cmd_destroy();
	else if (!strcmp(sub, "eventfd"))
		ret = cmd_eventfd();
	else if (!strcmp(sub, "depth-pending"))
		ret = cmd_depth_pending();
	else
		ret = cmd_nowait();
	if (strcmp(sub, "depth-pending"))
		print_counters(opt.dev, "after");
	return ret;
}

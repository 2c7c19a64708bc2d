// SPDX-License-Identifier: GPL-2.0
/*
 * fifobench - the guest side of `fifolab bench`: every user-space I/O path
 * of a fifolab device measured the same way, plus the echo end of the
 * notification-latency measurement.
 *
 *   fifobench io PATH QD BS DEV [--seconds S] [--verify]
 *       PATH: sync | nonblock | posix_aio | libaio | io_uring
 *       Streams bytes through the device in loopback: a writer and a reader
 *       run concurrently, each keeping up to QD requests of BS bytes in
 *       flight (sync and nonblock: QD must be 1), until the reader has taken
 *       back every byte the writer put in.  A first, short run warms up and
 *       sizes the measured run to last about S seconds (default 1).
 *       Prints one JSON object:
 *         {"path","qd","bs","seconds","bytes","requests","ops_per_s",
 *          "mb_per_s","p50_us","p99_us","cpu_us_per_op","irqs",
 *          "irqs_per_req","irqs_per_op","doorbells","doorbells_skipped",
 *          "verified"}
 *       op = BS bytes moved end to end (written and read back): ops_per_s =
 *       bytes read / BS / seconds.  Latency is per request, write or read,
 *       from its submission to its completion being seen.  requests = reads
 *       and writes completed (a read may be short: it takes what the FIFO
 *       holds).  cpu = guest CPU time of all vCPUs that was not idle
 *       (/proc/stat; the driver's interrupt and completion work included),
 *       irqs = the driver's sysfs irqs counter; doorbells and
 *       doorbells_skipped = posts that rang the device and posts that did
 *       not need to (the device said NO_NOTIFY: it was busy and would look).
 *       --verify checks every byte read back (see "content" below; BS must
 *       be a multiple of 8): a run that loses, duplicates or changes a byte
 *       dies.  It costs a pass over the data on each side: measure without.
 *
 *   fifobench notify MODE DEV COUNT
 *       MODE: sigio | epoll | read.  Echo COUNT bytes that the host injects
 *       through a wired device back to the host, woken by a SIGIO handler
 *       (the handler reads and writes), by epoll_wait, or by a blocking
 *       read.  The host times each byte's round trip.
 *
 * Why our own program and not fio: the device is a FIFO, not a block
 * device -- a reader must run beside every writer, reads may be short, and
 * a read issued when no byte is left to come would wait forever.  Each path
 * here keeps exactly as many bytes requested as remain to be moved, so
 * every measurement ends.  And it is one static binary in the initramfs.
 *
 * How each path keeps QD requests in flight:
 *   sync       a writer thread and a reader thread, blocking write/read
 *   nonblock   one thread, O_NONBLOCK fds, epoll (EPOLLIN on the read fd,
 *              EPOLLOUT on the write fd) whenever both would block
 *   posix_aio  glibc aio_read/aio_write, aio_suspend on every aiocb
 *   libaio     io_submit of every free slot at once, io_getevents
 *   io_uring   liburing: one io_uring_submit per batch of free slots
 * Writes and reads use two fds of the same device (the FIFO belongs to the
 * device): glibc serializes POSIX AIO requests per fd, and a read waiting
 * for data must not hold up the writes that would give it some.
 */
#include "common.h"

#include <aio.h>
#include <libaio.h>
#include <liburing.h>
#include <pthread.h>
#include <sys/epoll.h>

#define MAX_QD	64

static const char usage[] =
	"usage: fifobench io sync|nonblock|posix_aio|libaio|io_uring QD BS DEV [--seconds S]"
	" [--verify]\n"
	"       fifobench notify sigio|epoll|read DEV COUNT\n";

static uint64_t ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ------------------------------------------------------------- accounting */

/* One direction of the stream: @total bytes to move.  @asked counts the
 * bytes of requests issued (in flight or done), so no request ever asks for
 * bytes that will not come -- a read beyond them would wait forever. */
struct flow {
	size_t total, asked, moved;
};

static size_t flow_next(struct flow *f, size_t bs)
{
	size_t n = f->total - f->asked;

	if (n > bs)
		n = bs;
	f->asked += n;
	return n;
}

static void flow_done(struct flow *f, size_t asked, ssize_t got, const char *what)
{
	if (got < 0)
		die("%s failed: %s (errno %d)", what, strerror((int)-got), (int)-got);
	if ((size_t)got > asked)
		die("%s moved %zd bytes of %zu asked", what, got, asked);
	f->moved += got;
	f->asked -= asked - got;	/* a short request gives the rest back */
}

/* Request latencies, in ns; one array per thread, merged at the end. */
struct lat {
	uint64_t *v;
	size_t n, cap;
};

static void lat_add(struct lat *l, uint64_t d)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 4096;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			die("out of memory for %zu latencies", l->cap);
	}
	l->v[l->n++] = d;
}

static void lat_merge(struct lat *into, struct lat *from)
{
	for (size_t i = 0; i < from->n; i++)
		lat_add(into, from->v[i]);
	free(from->v);
	from->v = NULL;
	from->n = from->cap = 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double lat_pct(struct lat *l, double p)
{
	size_t i;

	if (!l->n)
		return 0;
	i = (size_t)(p / 100.0 * (l->n - 1) + 0.5);
	return l->v[i] / 1000.0;
}

/* ------------------------------------------------------------ one run */

struct run {
	const char *path;
	const char *dev;
	int qd;
	size_t bs;
	struct flow w, r;	/* writer, reader */
	int wfd, rfd;
	uint8_t *wbuf[MAX_QD], *rbuf[MAX_QD];
	struct lat lat;
	size_t requests;
	int verify;
	uint64_t wsum, rsum;	/* --verify: multiset hashes of the words moved */
};

/* ---------------------------------------------------------------- content */

/*
 * --verify.  Every 8-byte word of the stream holds its own stream offset
 * (xored with STAMP_KEY), stamped by the writer before each write.  Requests
 * complete in any order (io_uring, POSIX AIO), so a reader cannot tell where
 * a read lies in the stream; instead every word read must name a word of
 * the stream (8-aligned, below the total), and the sum of a hash of every
 * word read must equal the same sum over every offset the writes stamped
 * and moved: a word lost, duplicated or changed makes them differ (but for
 * a 2^-64 chance).  The writer's sum comes from the offsets, not from its
 * buffers, so a device that wrote into a TX buffer is caught too.  Writes
 * and reads move whole words: BS is a multiple of 8, so the FIFO holds
 * whole words.  A short write (O_NONBLOCK) gives back its tail, which the
 * next write stamps again; with more than one write in flight the tail's
 * offsets are gone, and a short write dies (they complete whole).
 */
#define STAMP_KEY	0x9e3779b97f4a7c15ull

static uint64_t mix64(uint64_t z)	/* splitmix64's finalizer */
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Stamp @n bytes of @buf as stream bytes @off..; the sum of their hashes. */
static uint64_t stamp(uint8_t *buf, size_t off, size_t n)
{
	uint64_t *w = (uint64_t *)buf, sum = 0;

	for (size_t i = 0; i < n / 8; i++) {
		w[i] = (off + 8 * i) ^ STAMP_KEY;
		sum += mix64(off + 8 * i);
	}
	return sum;
}

static void tally_read(struct run *x, const uint8_t *buf, size_t got)
{
	const uint64_t *w = (const uint64_t *)buf;

	if (got % 8)
		die("--verify: a read moved %zu bytes, not whole words", got);
	for (size_t i = 0; i < got / 8; i++) {
		uint64_t off = w[i] ^ STAMP_KEY;

		if (off % 8 || off >= x->r.total)
			die("--verify: word %zu of a %zu-byte read is %#llx, no word of the "
			    "%zu-byte stream (%zu bytes read before it)", i, got,
			    (unsigned long long)w[i], x->r.total, x->r.moved - got);
		x->rsum += mix64(off);
	}
}

/* A write moved @got of its @asked bytes; the flow has taken the rest back. */
static void tally_write(struct run *x, size_t asked, size_t got)
{
	if (got == asked)
		return;
	if (got % 8 || x->qd > 1)
		die("--verify: a write moved %zu of %zu bytes (queue depth %d)", got, asked,
		    x->qd);
	for (size_t off = x->w.asked; off < x->w.asked + (asked - got); off += 8)
		x->wsum -= mix64(off);		/* the next write stamps them again */
}

/* The next request of one direction (0: nothing left to ask for); a
 * write's buffer gets its stamps. */
static size_t req_next(struct run *x, int is_w, uint8_t *buf)
{
	struct flow *f = is_w ? &x->w : &x->r;
	size_t off = f->asked, n = flow_next(f, x->bs);

	if (n && is_w && x->verify)
		x->wsum += stamp(buf, off, n);
	return n;
}

/* A request of @asked bytes from @buf completed with @got (or -errno). */
static void req_done(struct run *x, int is_w, const uint8_t *buf, size_t asked, ssize_t got,
		     const char *what)
{
	flow_done(is_w ? &x->w : &x->r, asked, got, what);
	if (!x->verify)
		return;
	if (is_w)
		tally_write(x, asked, (size_t)got);
	else
		tally_read(x, buf, (size_t)got);
}

static void *sync_writer(void *arg)
{
	struct run *x = arg;
	struct lat *l = calloc(1, sizeof(*l));
	size_t n;

	while ((n = req_next(x, 1, x->wbuf[0]))) {
		uint64_t t0 = ns();
		ssize_t got = write(x->wfd, x->wbuf[0], n);

		lat_add(l, ns() - t0);
		req_done(x, 1, x->wbuf[0], n, got < 0 ? -errno : got, "write");
	}
	return l;
}

static void run_sync(struct run *x)
{
	pthread_t t;
	struct lat *wl;
	size_t n;

	if (pthread_create(&t, NULL, sync_writer, x))
		die("pthread_create failed");
	while ((n = req_next(x, 0, x->rbuf[0]))) {
		uint64_t t0 = ns();
		ssize_t got = read(x->rfd, x->rbuf[0], n);

		lat_add(&x->lat, ns() - t0);
		req_done(x, 0, x->rbuf[0], n, got < 0 ? -errno : got, "read");
		x->requests++;
	}
	if (pthread_join(t, (void **)&wl))
		die("pthread_join failed");
	x->requests += wl->n;
	lat_merge(&x->lat, wl);
	free(wl);
}

/* One non-blocking attempt: 1 if it moved bytes, 0 on EAGAIN. */
static int nb_try(struct run *x, int fd, uint8_t *buf, int is_write)
{
	size_t n = req_next(x, is_write, buf);
	uint64_t t0;
	ssize_t got;

	if (!n)
		return 0;
	t0 = ns();
	got = is_write ? write(fd, buf, n) : read(fd, buf, n);
	if (got < 0 && errno == EAGAIN)
		got = 0;
	else if (got >= 0)
		lat_add(&x->lat, ns() - t0);
	req_done(x, is_write, buf, n, got < 0 ? -errno : got, is_write ? "write" : "read");
	if (got > 0)
		x->requests++;
	return got > 0;
}

static void run_nonblock(struct run *x)
{
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = x->rfd };
	int writing = 1;

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, x->rfd, &ev))
		die_errno("epoll");
	ev = (struct epoll_event){ .events = EPOLLOUT, .data.fd = x->wfd };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, x->wfd, &ev))
		die_errno("epoll_ctl(EPOLLOUT)");
	while (x->r.moved < x->r.total || x->w.moved < x->w.total) {
		int moved = nb_try(x, x->wfd, x->wbuf[0], 1);

		moved |= nb_try(x, x->rfd, x->rbuf[0], 0);
		if (writing && x->w.moved == x->w.total) {
			epoll_ctl(ep, EPOLL_CTL_DEL, x->wfd, NULL);
			writing = 0;
		}
		if (!moved) {
			struct epoll_event got[2];

			if (epoll_wait(ep, got, 2, EVENT_TIMEOUT_MS) <= 0)
				die("epoll_wait: no readiness within %d ms (read %zu of %zu bytes)",
				    EVENT_TIMEOUT_MS, x->r.moved, x->r.total);
		}
	}
	close(ep);
}

/* Slots 0..qd-1 write, qd..2qd-1 read. */
struct slot {
	size_t asked;
	uint64_t t0;
	int busy;
};

static void run_posix_aio(struct run *x)
{
	struct aiocb cb[2 * MAX_QD];
	const struct aiocb *list[2 * MAX_QD];
	struct slot s[2 * MAX_QD];
	int n = 2 * x->qd;

	memset(cb, 0, sizeof(cb));
	memset(s, 0, sizeof(s));
	while (x->r.moved < x->r.total || x->w.moved < x->w.total) {
		int k = 0;

		for (int i = 0; i < n; i++) {
			int is_w = i < x->qd;
			uint8_t *buf = is_w ? x->wbuf[i] : x->rbuf[i - x->qd];

			if (!s[i].busy && (s[i].asked = req_next(x, is_w, buf))) {
				cb[i] = (struct aiocb){
					.aio_fildes = is_w ? x->wfd : x->rfd,
					.aio_buf = buf,
					.aio_nbytes = s[i].asked,
				};
				s[i].t0 = ns();
				if ((is_w ? aio_write : aio_read)(&cb[i]))
					die_errno("aio_%s", is_w ? "write" : "read");
				s[i].busy = 1;
			}
			list[i] = s[i].busy ? &cb[i] : NULL;
			k += s[i].busy;
		}
		if (!k)
			die("posix_aio: nothing in flight with %zu of %zu bytes read",
			    x->r.moved, x->r.total);
		if (aio_suspend(list, n, &(struct timespec){ .tv_sec = EVENT_TIMEOUT_MS / 1000 }))
			die_errno("aio_suspend");
		for (int i = 0; i < n; i++) {
			int e;

			if (!s[i].busy || (e = aio_error(&cb[i])) == EINPROGRESS)
				continue;
			lat_add(&x->lat, ns() - s[i].t0);
			req_done(x, i < x->qd, (const uint8_t *)cb[i].aio_buf, s[i].asked,
				 e ? -e : aio_return(&cb[i]), i < x->qd ? "aio_write" : "aio_read");
			s[i].busy = 0;
			x->requests++;
		}
	}
}

static void run_libaio(struct run *x)
{
	io_context_t ctx = 0;
	struct iocb cb[2 * MAX_QD], *batch[2 * MAX_QD];
	struct io_event ev[2 * MAX_QD];
	struct slot s[2 * MAX_QD];
	int n = 2 * x->qd, r;

	memset(s, 0, sizeof(s));
	if ((r = io_setup(n, &ctx)))
		die_neg(r, "io_setup(%d)", n);
	while (x->r.moved < x->r.total || x->w.moved < x->w.total) {
		int k = 0, busy = 0;

		for (int i = 0; i < n; i++) {
			int is_w = i < x->qd;

			if (!s[i].busy &&
			    (s[i].asked = req_next(x, is_w, is_w ? x->wbuf[i] : x->rbuf[i - x->qd]))) {
				if (is_w)
					io_prep_pwrite(&cb[i], x->wfd, x->wbuf[i], s[i].asked, 0);
				else
					io_prep_pread(&cb[i], x->rfd, x->rbuf[i - x->qd], s[i].asked, 0);
				cb[i].data = &s[i];
				s[i].t0 = ns();
				s[i].busy = 1;
				batch[k++] = &cb[i];
			}
			busy += s[i].busy;
		}
		for (int done = 0; done < k; done += r)
			if ((r = io_submit(ctx, k - done, batch + done)) <= 0)
				die_neg(r ? r : -EAGAIN, "io_submit of %d iocbs", k - done);
		if (!busy)
			die("libaio: nothing in flight with %zu of %zu bytes read",
			    x->r.moved, x->r.total);
		r = io_getevents(ctx, 1, n, ev,
				 &(struct timespec){ .tv_sec = EVENT_TIMEOUT_MS / 1000 });
		if (r <= 0)
			die_neg(r ? r : -ETIMEDOUT, "io_getevents");
		for (int j = 0; j < r; j++) {
			struct slot *sl = ev[j].data;
			int i = sl - s;

			lat_add(&x->lat, ns() - sl->t0);
			req_done(x, i < x->qd, i < x->qd ? x->wbuf[i] : x->rbuf[i - x->qd],
				 sl->asked, (long)ev[j].res,
				 i < x->qd ? "libaio write" : "libaio read");
			sl->busy = 0;
			x->requests++;
		}
	}
	io_destroy(ctx);
}

static void run_uring(struct run *x)
{
	struct io_uring ring;
	struct slot s[2 * MAX_QD];
	int n = 2 * x->qd, r;

	memset(s, 0, sizeof(s));
	if ((r = io_uring_queue_init(n, &ring, 0)))
		die_neg(r, "io_uring_queue_init(%d)", n);
	while (x->r.moved < x->r.total || x->w.moved < x->w.total) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int busy = 0;

		for (int i = 0; i < n; i++) {
			int is_w = i < x->qd;

			if (!s[i].busy &&
			    (s[i].asked = req_next(x, is_w, is_w ? x->wbuf[i] : x->rbuf[i - x->qd]))) {
				struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

				if (!sqe)
					die("io_uring: no free SQE");
				if (is_w)
					io_uring_prep_write(sqe, x->wfd, x->wbuf[i], s[i].asked, 0);
				else
					io_uring_prep_read(sqe, x->rfd, x->rbuf[i - x->qd],
							   s[i].asked, 0);
				io_uring_sqe_set_data(sqe, &s[i]);
				s[i].t0 = ns();
				s[i].busy = 1;
			}
			busy += s[i].busy;
		}
		if (!busy)
			die("io_uring: nothing in flight with %zu of %zu bytes read",
			    x->r.moved, x->r.total);
		r = io_uring_submit_and_wait_timeout(&ring, &cqe, 1,
			&(struct __kernel_timespec){ .tv_sec = EVENT_TIMEOUT_MS / 1000 }, NULL);
		if (r < 0)
			die_neg(r, "io_uring_submit_and_wait_timeout");
		io_uring_for_each_cqe(&ring, head, cqe) {
			struct slot *sl = io_uring_cqe_get_data(cqe);
			int i = sl - s;

			lat_add(&x->lat, ns() - sl->t0);
			req_done(x, i < x->qd, i < x->qd ? x->wbuf[i] : x->rbuf[i - x->qd],
				 sl->asked, cqe->res, i < x->qd ? "io_uring write" : "io_uring read");
			sl->busy = 0;
			x->requests++;
			seen++;
		}
		io_uring_cq_advance(&ring, seen);
	}
	io_uring_queue_exit(&ring);
}

static const struct {
	const char *name;
	void (*run)(struct run *);
	int has_qd;
} paths[] = {
	{ "sync", run_sync, 0 },
	{ "nonblock", run_nonblock, 0 },
	{ "posix_aio", run_posix_aio, 1 },
	{ "libaio", run_libaio, 1 },
	{ "io_uring", run_uring, 1 },
};

/* Busy (not idle, not iowait) jiffies of all CPUs. */
static long long cpu_busy_ticks(void)
{
	unsigned long long v[10] = { 0 }, sum = 0;
	FILE *f = fopen("/proc/stat", "r");

	if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
			 &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
		die("cannot read the cpu line of /proc/stat");
	fclose(f);
	for (int i = 0; i < 8; i++)
		sum += v[i];
	return (long long)(sum - v[3] - v[4]);
}

static void one_run(struct run *x, void (*fn)(struct run *), size_t total)
{
	x->w = (struct flow){ .total = total };
	x->r = (struct flow){ .total = total };
	x->requests = 0;
	x->lat.n = 0;
	x->wsum = x->rsum = 0;
	fn(x);
	if (x->w.moved != total || x->r.moved != total)
		die("moved %zu bytes in and %zu out of %zu", x->w.moved, x->r.moved, total);
	if (x->verify && x->wsum != x->rsum)
		die("--verify: the %zu bytes read back are not the bytes written (a word lost, "
		    "duplicated or changed)", total);
}

static int cmd_io(int argc, char **argv)
{
	struct run x = { 0 };
	void (*fn)(struct run *) = NULL;
	double seconds = 1.0, t;
	long long irq0, cpu0, irqs, cpu, db0, dbs0, db, dbs;
	size_t total, ops;
	int has_qd = 0, flags;

	if (argc < 6)
		die("%s", usage);
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (!strcmp(argv[2], paths[i].name)) {
			fn = paths[i].run;
			has_qd = paths[i].has_qd;
			x.path = paths[i].name;
		}
	if (!fn)
		die("unknown path '%s'\n%s", argv[2], usage);
	x.qd = (int)parse_size(argv[3], "QD");
	x.bs = parse_size(argv[4], "BS");
	x.dev = argv[5];
	for (int i = 6; i < argc; i++)
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--verify"))
			x.verify = 1;
		else
			die("unknown option '%s'\n%s", argv[i], usage);
	if (x.qd < 1 || x.qd > MAX_QD || (!has_qd && x.qd != 1))
		die("queue depth %d: %s takes %s", x.qd, x.path,
		    has_qd ? "1.." "64" : "only 1");
	if (!x.bs || x.bs > (64u << 20))
		die("block size %zu out of 1..64 MiB", x.bs);
	if (x.verify && x.bs % 8)
		die("--verify needs a block size that is a multiple of 8, not %zu", x.bs);
	if (!(seconds > 0 && seconds < 600))
		die("--seconds %g out of range", seconds);
	flags = !strcmp(x.path, "nonblock") ? O_NONBLOCK : 0;
	x.wfd = xopen(x.dev, O_WRONLY | flags);
	x.rfd = xopen(x.dev, O_RDONLY | flags);
	/*
	 * Every buffer in one region aligned to 2 MiB and madvised for huge
	 * pages: where the guest allows transparent huge pages, pinning a
	 * buffer then takes one reference per huge page instead of one per
	 * 4 KiB page, and its pages are contiguous (few descriptors).  The
	 * pages are faulted in here, not while measuring.
	 */
	{
		size_t each = (x.bs + 4095) & ~(size_t)4095, huge = 2u << 20;
		size_t len = (2 * x.qd * each + huge - 1) / huge * huge;
		uint8_t *region = map_buf(len + huge);
		uint8_t *base = (uint8_t *)(((uintptr_t)region + huge - 1) & ~(uintptr_t)(huge - 1));

		madvise(base, len, MADV_HUGEPAGE);	/* a hint: may fail */
		memset(base, 0x5A, len);
		for (int i = 0; i < x.qd; i++) {
			x.wbuf[i] = base + (2 * i) * each;
			x.rbuf[i] = base + (2 * i + 1) * each;
		}
	}
	watchdog((unsigned)(seconds * 20) + 60);

	/*
	 * Warm-up: at least 2*QD blocks and 256 KiB.  It sizes the measured
	 * run; a measured run that ends in less than half the time asked for
	 * (the warm-up paid one-time costs) is sized again and repeated.
	 */
	total = x.bs * 2 * x.qd;
	if (total < (256u << 10))
		total = ((256u << 10) + x.bs - 1) / x.bs * x.bs;
	t = now();
	one_run(&x, fn, total);
	t = now() - t;
	for (int tries = 0;; tries++) {
		ops = (size_t)(seconds * total / x.bs / (t > 1e-6 ? t : 1e-6));
		if (ops < 16 * (size_t)x.qd)
			ops = 16 * x.qd;
		if (ops > (4ull << 30) / x.bs)
			ops = (4ull << 30) / x.bs;
		total = ops * x.bs;

		irq0 = sysfs_read(x.dev, "irqs");
		db0 = sysfs_read(x.dev, "doorbells");
		dbs0 = sysfs_read(x.dev, "doorbells_skipped");
		cpu0 = cpu_busy_ticks();
		t = now();
		one_run(&x, fn, total);
		t = now() - t;
		cpu = cpu_busy_ticks() - cpu0;
		irqs = sysfs_read(x.dev, "irqs") - irq0;
		db = sysfs_read(x.dev, "doorbells") - db0;
		dbs = sysfs_read(x.dev, "doorbells_skipped") - dbs0;
		if (t >= seconds / 2 || tries == 3 || ops == (4ull << 30) / x.bs)
			break;
	}
	qsort(x.lat.v, x.lat.n, sizeof(*x.lat.v), cmp_u64);

	printf("{\"path\": \"%s\", \"qd\": %d, \"bs\": %zu, \"seconds\": %.6f, "
	       "\"bytes\": %zu, \"requests\": %zu, \"ops_per_s\": %.1f, \"mb_per_s\": %.3f, "
	       "\"p50_us\": %.2f, \"p99_us\": %.2f, \"cpu_us_per_op\": %.3f, "
	       "\"irqs\": %lld, \"irqs_per_req\": %.4f, \"irqs_per_op\": %.4f, "
	       "\"doorbells\": %lld, \"doorbells_skipped\": %lld, \"verified\": %s}\n",
	       x.path, x.qd, x.bs, t, total, x.requests, ops / t, total / t / 1e6,
	       lat_pct(&x.lat, 50), lat_pct(&x.lat, 99),
	       cpu * (1e6 / sysconf(_SC_CLK_TCK)) / ops, irqs,
	       (double)irqs / x.requests, (double)irqs / ops, db, dbs,
	       x.verify ? "true" : "false");
	return 0;
}

/* ----------------------------------------------------------- notification */

static int nfd;
static volatile sig_atomic_t echoed;

/* Echo what is there now; the number of bytes echoed. */
static int echo_now(void)
{
	char buf[64];
	ssize_t n;
	int total = 0;

	while ((n = read(nfd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(nfd, buf + off, n - off);

			if (w > 0)
				off += w;
			else if (w < 0 && errno != EAGAIN)
				_exit(5);
		}
		total += n;
	}
	if (n < 0 && errno != EAGAIN)
		_exit(6);
	return total;
}

static void on_sigio(int sig)
{
	int saved = errno;

	(void)sig;
	echoed += echo_now();
	errno = saved;
}

static int cmd_notify(int argc, char **argv)
{
	const char *mode;
	long count;

	if (argc < 5)
		die("%s", usage);
	mode = argv[2];
	count = (long)parse_size(argv[4], "COUNT");
	watchdog(300);
	if (!strcmp(mode, "read")) {
		nfd = xopen(argv[3], O_RDWR);
		while (echoed < count) {
			char c;
			ssize_t n = read(nfd, &c, 1);

			if (n != 1)
				die_errno("read");
			if (write(nfd, &c, 1) != 1)
				die_errno("write");
			echoed++;
		}
	} else if (!strcmp(mode, "epoll")) {
		int ep = epoll_create1(0);
		struct epoll_event ev = { .events = EPOLLIN };

		nfd = xopen(argv[3], O_RDWR | O_NONBLOCK);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, nfd, &ev))
			die_errno("epoll");
		while (echoed < count) {
			if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR)
				die_errno("epoll_wait");
			echoed += echo_now();
		}
	} else if (!strcmp(mode, "sigio")) {
		struct sigaction sa = { .sa_handler = on_sigio };
		sigset_t block, old;

		nfd = xopen(argv[3], O_RDWR | O_NONBLOCK);
		sigemptyset(&block);
		sigaddset(&block, SIGIO);
		sigprocmask(SIG_BLOCK, &block, &old);
		if (sigaction(SIGIO, &sa, NULL) || fcntl(nfd, F_SETOWN, getpid()) ||
		    fcntl(nfd, F_SETFL, fcntl(nfd, F_GETFL) | O_ASYNC))
			die_errno("setting up SIGIO");
		echoed += echo_now();		/* bytes that came before O_ASYNC */
		while (echoed < count)
			sigsuspend(&old);
	} else {
		die("unknown notification mode '%s'\n%s", mode, usage);
	}
	printf("{\"mode\": \"%s\", \"echoed\": %ld}\n", mode, (long)echoed);
	return 0;
}

int main(int argc, char **argv)
{
	prog = "fifobench";
	if (argc > 1 && !strcmp(argv[1], "io")) {
		cmd = "io";
		return cmd_io(argc, argv);
	}
	if (argc > 1 && !strcmp(argv[1], "notify")) {
		cmd = "notify";
		return cmd_notify(argc, argv);
	}
	fputs(usage, argc > 1 && !strcmp(argv[1], "--help") ? stdout : stderr);
	return argc > 1 && !strcmp(argv[1], "--help") ? 0 : 2;
}

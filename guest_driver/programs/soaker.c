// SPDX-License-Identifier: GPL-2.0
/*
 * soaker - the guest half of `fifolab soak` (harness/soak.py): streams
 * sequence-numbered, checksummed records through /dev/fifolabN (loopback)
 * for SECONDS while the host arms random faults, and accounts for every
 * record.
 *
 *   soaker DEV SECONDS [SEED]
 *
 * A writer thread and a reader thread each pick a random I/O path for every
 * op (writer: sync, nonblock, poll, posix-aio, libaio, io_uring; reader: the
 * same and sigio) and a random length (1..16 KiB, not aligned to records).
 * The stream is a sequence of RECORD-byte records:
 *
 *   u32 magic, u32 seq, u32 crc32(seq + payload), payload (derived from seq)
 *
 * A write that fails (any -errno) is abandoned whole: the next write starts
 * with the record after its end.  A failed write's outcome is unknown: the
 * device may have taken any prefix of it, and a reader may have got that
 * before the error (a reset, or a hostile completion, fails a TX request
 * the device moved in part or in full: the driver cannot tell how much,
 * and does not re-post it), so resending any of it could deliver a record
 * twice.  The reader parses the byte stream; a record whose header or
 * checksum is wrong starts a garbage run, skipped up to the next valid
 * record.  Then it judges the sequence numbers:
 *
 *   - the next number: fine;
 *   - a step back (a duplicated record) is never explained: nothing may
 *     deliver a byte twice;
 *   - a gap (lost records) is explained only by an error on those stream
 *     positions: every op that reports an error notes the span of the
 *     stream it may have cost -- from the reader's position (the next
 *     record it expects) to the end of the write in progress, which is all
 *     a device reset can drop -- and the missing records must lie inside
 *     one such span (spans that touch are merged, so a burst of errors
 *     costs one entry; more spans than fit fail the soak, they never
 *     explain everything);
 *   - otherwise a garbage run that is exactly the missing records, each
 *     differing from the record that belongs there in one bit (a flipped
 *     bit: the record failed its checksum, the stream kept its length), is
 *     that many *detected corruptions*: the host checks that no more were
 *     detected than corrupt faults fired (one bit each), and that a soak in
 *     which no fault fired has no gap at all.  Stale or shifted bytes are
 *     never a corruption: they differ in many bits, or change the length;
 *   - anything else is unexplained: the soak fails.
 *
 * At the end the writer stops, the reader drains (up to 10 s without
 * progress) and the last written record must have arrived (or its absence
 * be explained as above).  Output, one line:
 *
 *   soak written=B read=B records=N gaps=N explained=N corrupt_detected=N
 *        unexplained=N w_errors=N r_errors=N errors=EIO:N,... ops_w=sync:N,...
 *        ops_r=...
 *
 * Exit status 0 if nothing is unexplained, 1 otherwise, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <aio.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RECORD		256
#define MAGIC		0x4B414F53u	/* "SOAK" */
#define MAX_OP		16384
#define MAX_SPANS	65536

enum { P_SYNC, P_NONBLOCK, P_POLL, P_SIGIO, P_POSIX_AIO, P_LIBAIO,
       P_IO_URING, NPATHS };
static const char *const path_names[NPATHS] = {
	"sync", "nonblock", "poll", "sigio", "posix-aio", "libaio", "io_uring",
};

static const char *dev;
static double seconds;
static atomic_int writer_done;
static atomic_ulong w_errors, r_errors;
static atomic_ulong errno_count[200];
static unsigned long ops_w[NPATHS], ops_r[NPATHS];
static atomic_ullong written, bytes_read;
static atomic_uint last_written_seq;	/* +1: 0 = none */

/*
 * The stream positions (bytes) an error may have cost: [lo, hi).  lo: the
 * reader's next record when the error was reported; hi: the end of the
 * write in progress.  Touching spans merge (under span_lock).
 */
struct span {
	uint64_t lo, hi;
};
static struct span spans[MAX_SPANS];
static int n_spans, spans_overflow;
static pthread_mutex_t span_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_ullong reader_at;		/* bytes: the reader's next record */
static atomic_ullong writer_hi;		/* bytes: the end of the write in progress */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
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

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void make_record(uint32_t seq, uint8_t *r)
{
	uint32_t crc;

	memcpy(r, &(uint32_t){ MAGIC }, 4);
	memcpy(r + 4, &seq, 4);
	for (int i = 12; i < RECORD; i++)
		r[i] = (uint8_t)(seq * 31 + i * 7);
	crc = crc32_update(0, r + 4, 4);
	crc = crc32_update(crc, r + 12, RECORD - 12);
	memcpy(r + 8, &crc, 4);
}

/* The byte at offset i (0 <= i < RECORD) of record seq. */
static uint8_t record_byte(uint32_t seq, int i)
{
	static uint8_t r[RECORD];
	static uint32_t made = UINT32_MAX;

	if (made != seq) {
		make_record(seq, r);
		made = seq;
	}
	return r[i];
}

static int record_ok(const uint8_t *r, uint32_t *seq)
{
	uint32_t magic, crc, want;

	memcpy(&magic, r, 4);
	if (magic != MAGIC)
		return 0;
	memcpy(&crc, r + 8, 4);
	want = crc32_update(0, r + 4, 4);
	want = crc32_update(want, r + 12, RECORD - 12);
	if (crc != want)
		return 0;
	memcpy(seq, r + 4, 4);
	return 1;
}

static void note_error(long res, int writer)
{
	uint64_t lo = atomic_load(&reader_at), hi = atomic_load(&writer_hi);
	struct span *last;

	atomic_fetch_add(writer ? &w_errors : &r_errors, 1);
	if (-res > 0 && -res < 200)
		atomic_fetch_add(&errno_count[-res], 1);
	if (hi < lo)
		hi = lo;
	pthread_mutex_lock(&span_lock);
	last = n_spans ? &spans[n_spans - 1] : NULL;
	if (last && lo <= last->hi && hi >= last->lo) {
		if (lo < last->lo)
			last->lo = lo;
		if (hi > last->hi)
			last->hi = hi;
	} else if (n_spans < MAX_SPANS) {
		spans[n_spans++] = (struct span){ lo, hi };
	} else {
		spans_overflow = 1;
	}
	pthread_mutex_unlock(&span_lock);
}

/* Do records [first, first + n) lie inside one error's span? */
static int error_covers(uint32_t first, uint32_t n)
{
	uint64_t a = (uint64_t)first * RECORD, b = ((uint64_t)first + n) * RECORD;

	for (int i = 0; i < n_spans; i++)
		/* a record the error cut into counts: one record of slack each side */
		if (spans[i].lo <= a + RECORD && b <= spans[i].hi + RECORD)
			return 1;
	return 0;
}

/* ------------------------------------------------------------ one op */

struct io {
	int fd, nbfd;		/* blocking and O_NONBLOCK descriptors */
	int sigfd;		/* O_ASYNC, signals to this thread */
	sigset_t sigs;
	io_context_t actx;
	struct io_uring ring;
};

static long wait_fd(int fd, int events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };

	return poll(&p, 1, ms) > 0 ? p.revents : 0;
}

/* One op through @path; returns bytes or -errno; -EAGAIN: nothing now. */
static long do_op(struct io *io, int path, int wr, uint8_t *buf, size_t len)
{
	ssize_t n;

	switch (path) {
	case P_SYNC:
		n = wr ? write(io->fd, buf, len) : read(io->fd, buf, len);
		return n < 0 ? -errno : n;
	case P_NONBLOCK:
		n = wr ? write(io->nbfd, buf, len) : read(io->nbfd, buf, len);
		if (n < 0 && errno == EAGAIN)
			wait_fd(io->nbfd, wr ? POLLOUT : POLLIN, 100);
		return n < 0 ? -errno : n;
	case P_POLL: {
		int rev = wait_fd(io->fd, wr ? POLLOUT : POLLIN, 200);

		if (!(rev & (wr ? POLLOUT : POLLIN)))
			return -EAGAIN;
		n = wr ? write(io->fd, buf, len) : read(io->fd, buf, len);
		return n < 0 ? -errno : n;
	}
	case P_SIGIO: {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		siginfo_t si;

		if (!(wait_fd(io->sigfd, POLLIN, 0) & POLLIN))
			sigtimedwait(&io->sigs, &si, &ts);
		n = read(io->sigfd, buf, len);	/* O_NONBLOCK */
		return n < 0 ? -errno : n;
	}
	case P_POSIX_AIO: {
		struct aiocb cb = { .aio_fildes = io->fd, .aio_buf = buf,
				    .aio_nbytes = len };
		const struct aiocb *l[1] = { &cb };
		int r = wr ? aio_write(&cb) : aio_read(&cb);

		if (r)
			return -errno;
		while (aio_error(&cb) == EINPROGRESS)
			aio_suspend(l, 1, NULL);
		r = aio_error(&cb);
		n = aio_return(&cb);
		return r ? -r : n;
	}
	case P_LIBAIO: {
		struct iocb cb, *cbs[1] = { &cb };
		struct io_event ev;
		int r;

		if (wr)
			io_prep_pwrite(&cb, io->fd, buf, len, 0);
		else
			io_prep_pread(&cb, io->fd, buf, len, 0);
		r = io_submit(io->actx, 1, cbs);
		if (r != 1)
			return r < 0 ? r : -EIO;
		do
			r = io_getevents(io->actx, 1, 1, &ev, NULL);
		while (r == -EINTR);
		return r == 1 ? (long)ev.res : r;
	}
	case P_IO_URING: {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
		struct io_uring_cqe *cqe;
		int r;

		if (wr)
			io_uring_prep_write(sqe, io->fd, buf, len, 0);
		else
			io_uring_prep_read(sqe, io->fd, buf, len, 0);
		r = io_uring_submit(&io->ring);
		if (r != 1)
			return r < 0 ? r : -EIO;
		do
			r = io_uring_wait_cqe(&io->ring, &cqe);
		while (r == -EINTR);
		if (r)
			return r;
		n = cqe->res;
		io_uring_cqe_seen(&io->ring, cqe);
		return n;
	}
	}
	return -EINVAL;
}

static void io_open(struct io *io, int sigio)
{
	io->fd = open(dev, O_RDWR);
	io->nbfd = open(dev, O_RDWR | O_NONBLOCK);
	if (io->fd < 0 || io->nbfd < 0) {
		perror(dev);
		exit(2);
	}
	io->actx = 0;
	if (io_setup(4, &io->actx) || io_uring_queue_init(4, &io->ring, 0)) {
		fprintf(stderr, "soaker: io_setup/io_uring_queue_init failed\n");
		exit(2);
	}
	io->sigfd = -1;
	if (sigio) {
		struct f_owner_ex own = { F_OWNER_TID, (pid_t)syscall(SYS_gettid) };

		io->sigfd = open(dev, O_RDWR | O_NONBLOCK);
		sigemptyset(&io->sigs);
		sigaddset(&io->sigs, SIGRTMIN + 2);
		if (io->sigfd < 0 || fcntl(io->sigfd, F_SETOWN_EX, &own) ||
		    fcntl(io->sigfd, F_SETSIG, SIGRTMIN + 2) ||
		    fcntl(io->sigfd, F_SETFL,
			  fcntl(io->sigfd, F_GETFL) | O_ASYNC)) {
			perror("soaker: sigio");
			exit(2);
		}
	}
}

/* ------------------------------------------------------------ writer */

static uint64_t seed;

static void *writer(void *arg)
{
	uint64_t s = seed * 2 + 1, pos = 0;	/* stream offset */
	static uint8_t buf[MAX_OP + RECORD];
	double end = now() + seconds;
	struct io io;

	(void)arg;
	io_open(&io, 0);
	while (now() < end) {
		static const int wpaths[] = { P_SYNC, P_NONBLOCK, P_POLL,
					      P_POSIX_AIO, P_LIBAIO, P_IO_URING };
		int path = wpaths[rnd(&s) % 6];
		size_t len = 1 + rnd(&s) % MAX_OP;
		uint64_t first = pos / RECORD;
		long n;

		/* the records that cover [pos, pos + len) */
		for (uint64_t r = first; r * RECORD < pos + len; r++)
			make_record((uint32_t)r, buf + (r - first) * RECORD);
		atomic_store(&writer_hi, pos + len);
		n = do_op(&io, path, 1, buf + pos % RECORD, len);
		ops_w[path]++;
		if (n == -EAGAIN)
			continue;
		if (n < 0) {
			note_error(n, 1);
			/*
			 * Abandon the whole write, not just the record in
			 * progress: any prefix of it may have been delivered
			 * (see the top), and a byte resent is a byte delivered
			 * twice.  Its span (to the end of this write) explains
			 * what it cost.
			 */
			pos = (pos + len + RECORD - 1) / RECORD * RECORD;
			continue;
		}
		pos += n;
		atomic_fetch_add(&written, n);
		if (pos / RECORD)
			atomic_store(&last_written_seq, (uint32_t)(pos / RECORD));
	}
	atomic_store(&writer_done, 1);
	return NULL;
}

/* ------------------------------------------------------------ reader */

static unsigned long records, gaps, explained, corrupt_detected, unexplained;

struct gap {
	double last_good, seen;
	int garbage;		/* bytes skipped before it */
	int flipped;		/* bits in which they differ from the records due there */
	uint32_t missing;
	uint32_t first;		/* the first record number missing */
	int duplicate;		/* a step back: records delivered twice */
};

static struct gap pending[4096];
static int n_pending;

static void judge(struct gap g)
{
	gaps++;
	if (g.duplicate) {
		unexplained++;
		fprintf(stderr, "soaker: %u record(s) from #%u delivered again\n",
			g.missing, g.first);
	} else if (error_covers(g.first, g.missing ? g.missing : 1)) {
		explained++;	/* records lost, or cut (garbage), where an error was */
	} else if (g.missing && g.garbage == (int)g.missing * RECORD &&
		   g.flipped == (int)g.missing) {
		corrupt_detected += g.missing;	/* one flipped bit per record */
	} else {
		unexplained++;
		fprintf(stderr, "soaker: unexplained gap: %u record(s) from #%u missing, %d "
			"garbage bytes (%d bits off the records due there), %.3f s after "
			"the last good record\n",
			g.missing, g.first, g.garbage, g.flipped,
			g.seen - g.last_good);
	}
}

static void add_gap(struct gap g)
{
	if (n_pending == (int)(sizeof(pending) / sizeof(pending[0])))
		judge(g);
	else
		pending[n_pending++] = g;
}

/*
 * The reader's view of the stream: the record it expects next, and the
 * garbage run it is in (bytes, and their bits off the records due there).
 */
struct reader {
	uint32_t expect, last_dup;
	int garbage, flipped;
	double last_good;
};

/*
 * Parse the whole records in stream[0, have), noting gaps; keeps the
 * incomplete tail at the start of stream and returns its length.
 */
static size_t parse(struct reader *rd, uint8_t *stream, size_t have)
{
	size_t off = 0;

	while (have - off >= RECORD) {
		uint32_t seq;

		if (!record_ok(stream + off, &seq)) {
			/* how far is it from the byte due here? */
			rd->flipped += __builtin_popcount(stream[off] ^
				record_byte(rd->expect + rd->garbage / RECORD,
					    rd->garbage % RECORD));
			off++;
			rd->garbage++;
			continue;
		}
		if (seq != rd->expect || rd->garbage) {
			struct gap g = { .last_good = rd->last_good, .seen = now(),
					 .garbage = rd->garbage, .flipped = rd->flipped,
					 .first = rd->expect };

			if (seq > rd->expect) {
				g.missing = seq - rd->expect;
			} else if (seq < rd->expect) {
				g.missing = rd->expect - seq;
				g.first = seq;
				g.duplicate = 1;
			}
			/* a run of duplicates is one gap */
			if (!(g.duplicate && seq == rd->last_dup + 1))
				add_gap(g);
			if (g.duplicate)
				rd->last_dup = seq;
		}
		records++;
		if (seq >= rd->expect)
			rd->expect = seq + 1;
		atomic_store(&reader_at, (uint64_t)rd->expect * RECORD);
		rd->garbage = 0;
		rd->flipped = 0;
		rd->last_good = now();
		off += RECORD;
	}
	memmove(stream, stream + off, have - off);
	return have - off;
}

/*
 * The end of the stream: the records after the last one read are missing
 * (judged as any gap), then every gap is judged and the summary printed.
 */
static int report(struct reader *rd)
{
	if (last_written_seq && rd->expect < last_written_seq) {
		struct gap g = { .last_good = rd->last_good, .seen = now(),
				 .garbage = rd->garbage, .flipped = rd->flipped,
				 .missing = last_written_seq - rd->expect,
				 .first = rd->expect };
		add_gap(g);
	}
	if (spans_overflow) {
		unexplained++;
		fprintf(stderr, "soaker: more than %d separate error spans: cannot judge\n",
			MAX_SPANS);
	}
	for (int i = 0; i < n_pending; i++)
		judge(pending[i]);

	printf("soak written=%llu read=%llu records=%lu gaps=%lu explained=%lu "
	       "corrupt_detected=%lu unexplained=%lu w_errors=%lu r_errors=%lu errors=",
	       (unsigned long long)written, (unsigned long long)bytes_read,
	       records, gaps, explained, corrupt_detected, unexplained,
	       (unsigned long)w_errors, (unsigned long)r_errors);
	int first = 1;

	for (int e = 1; e < 200; e++)
		if (errno_count[e]) {
			printf("%s%s:%lu", first ? "" : ",", strerrorname_np(e),
			       (unsigned long)errno_count[e]);
			first = 0;
		}
	printf("%s ops_w=", first ? "none" : "");
	for (int p = 0; p < NPATHS; p++)
		printf("%s%s:%lu", p ? "," : "", path_names[p], ops_w[p]);
	printf(" ops_r=");
	for (int p = 0; p < NPATHS; p++)
		printf("%s%s:%lu", p ? "," : "", path_names[p], ops_r[p]);
	printf("\n");
	return unexplained ? 1 : 0;
}

/*
 * soaker --judge FILE: the reader's judgement of a recorded stream (no
 * device, no error spans), so that the host can check the oracle itself.
 */
static int judge_file(const char *path)
{
	static uint8_t stream[4 * MAX_OP];
	struct reader rd = { .last_dup = UINT32_MAX - 1, .last_good = now() };
	size_t have = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		perror(path);
		return 2;
	}
	while ((n = read(fd, stream + have, MAX_OP)) > 0) {
		atomic_fetch_add(&bytes_read, n);
		have = parse(&rd, stream, have + n);
	}
	close(fd);
	return report(&rd);
}

int main(int argc, char **argv)
{
	static uint8_t stream[4 * MAX_OP];
	size_t have = 0;
	struct reader rd = { .last_dup = UINT32_MAX - 1 };
	double idle_since = 0;
	uint64_t s;
	pthread_t wt;
	struct io io;
	sigset_t all;

	if (argc == 3 && !strcmp(argv[1], "--judge"))
		return judge_file(argv[2]);
	if (argc < 3) {
		fprintf(stderr, "usage: soaker DEV SECONDS [SEED]\n"
			"       soaker --judge FILE   (judge a recorded stream)\n");
		return 2;
	}
	dev = argv[1];
	seconds = atof(argv[2]);
	seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 1;
	s = seed * 2 + 3;
	alarm((unsigned int)seconds + 120);
	/* a full RT signal queue falls back to plain SIGIO: ignore that one */
	signal(SIGIO, SIG_IGN);
	sigemptyset(&all);
	sigaddset(&all, SIGRTMIN + 2);
	pthread_sigmask(SIG_BLOCK, &all, NULL);		/* inherited by the writer */
	io_open(&io, 1);
	rd.last_good = now();
	pthread_create(&wt, NULL, writer, NULL);

	for (;;) {
		int done = atomic_load(&writer_done);
		int path = rnd(&s) % NPATHS;
		size_t len = 1 + rnd(&s) % MAX_OP;
		long n;

		if (done && last_written_seq && rd.expect >= last_written_seq)
			break;
		if (path != P_SIGIO) {
			/* keep the signal queue short: the sigio path waits for new ones */
			struct timespec zero = { 0, 0 };

			while (sigtimedwait(&io.sigs, NULL, &zero) > 0)
				;
		}
		/* never block on an empty FIFO: the writer may be finished */
		if (!(wait_fd(io.fd, POLLIN, 200) & POLLIN)) {
			if (done) {
				if (!idle_since)
					idle_since = now();
				if (now() - idle_since > 10)
					break;
			}
			continue;
		}
		idle_since = 0;
		if (len > sizeof(stream) - have)
			len = sizeof(stream) - have;
		n = do_op(&io, path, 0, stream + have, len);
		ops_r[path]++;
		if (n == -EAGAIN)
			continue;
		if (n < 0) {
			note_error(n, 0);
			continue;
		}
		atomic_fetch_add(&bytes_read, n);
		have += n;
		have = parse(&rd, stream, have);
	}
	pthread_join(wt, NULL);
	return report(&rd);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * fuzzfifo - throw random and hostile system calls at /dev/fifolabN: read,
 * write, readv/writev, pread/preadv2, poll, fcntl, ioctl, mmap, lseek,
 * libaio io_submit/io_cancel/io_getevents/io_destroy, open and close, with
 * bad pointers (NULL, 1, kernel addresses, unmapped and read-only pages),
 * huge and zero sizes, misaligned buffers, odd flags, random ioctl numbers,
 * closed descriptors and descriptors closed under pending requests.
 *
 *   fuzzfifo DEV ITERATIONS [SEED]
 *
 * Blocking calls are bounded by a one-shot 5 ms interval timer (SIGALRM,
 * no SA_RESTART): they end with EINTR, which exercises the driver's cancel
 * path.  Signals that F_SETSIG may choose are ignored.  The judge is the
 * kernel log (the harness fails the run on any report) and a working device
 * afterwards; this program only counts what happened:
 *
 *   fuzz iterations=N seed=S calls=N ok=N errnos=EFAULT:N,...
 *
 * Exit status 0 when every iteration ran, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#define NFDS		6
#define NAIO		16
#define BUFSZ		(256 * 1024)

static uint64_t s;
static const char *dev;
static int fds[NFDS] = { -1, -1, -1, -1, -1, -1 };
static uint8_t *buf, *ro_page, *gone_page;
static long page;
static unsigned long calls, oks, errs[200];
static io_context_t actx;
static struct iocb iocbs[NAIO];
static int iocb_busy[NAIO];

static uint64_t rnd(void)
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

static int chance(int percent)
{
	return (int)(rnd() % 100) < percent;
}

static void on_alarm(int sig)
{
	(void)sig;
}

static void bound(void)
{
	struct itimerval it = { { 0, 0 }, { 0, 5000 } };

	setitimer(ITIMER_REAL, &it, NULL);
}

static void unbound(void)
{
	struct itimerval it = { { 0, 0 }, { 0, 0 } };

	setitimer(ITIMER_REAL, &it, NULL);
}

static void count(long r)
{
	calls++;
	if (r >= 0)
		oks++;
	else if (errno > 0 && errno < 200)
		errs[errno]++;
}

/* A pointer worth trying: mostly good, often hostile. */
static void *pointer(size_t len, int for_write_into)
{
	switch (rnd() % 12) {
	case 0: return NULL;
	case 1: return (void *)1;
	case 2: return (void *)0xffff888000000000ull;	/* kernel memory */
	case 3: return gone_page;			/* unmapped */
	case 4: return for_write_into ? ro_page : ro_page + rnd() % page;
	case 5: return buf + BUFSZ - (len < BUFSZ ? len : BUFSZ) / 2; /* runs off */
	case 6: return (void *)-1L;
	default: {
		size_t max = len < BUFSZ ? BUFSZ - len : 0;

		return buf + (max ? rnd() % (max + 1) : 0);	/* misaligned too */
	}
	}
}

static size_t size(void)
{
	switch (rnd() % 10) {
	case 0: return 0;
	case 1: return SIZE_MAX;
	case 2: return (size_t)1 << (20 + rnd() % 24);
	case 3: return 1 + rnd() % 8;
	default: return 1 + rnd() % 65536;
	}
}

static int any_fd(void)
{
	switch (rnd() % 10) {
	case 0: return -1;
	case 1: return 1000;			/* never open */
	default: return fds[rnd() % NFDS];	/* maybe closed (-1) */
	}
}

static void fuzz_open(void)
{
	static const int modes[] = { O_RDONLY, O_WRONLY, O_RDWR };
	int i = rnd() % NFDS;
	int flags = modes[rnd() % 3];

	if (fds[i] >= 0 && chance(50)) {
		count(close(fds[i]));	/* maybe with aio pending on it */
		fds[i] = -1;
		return;
	}
	if (fds[i] >= 0)
		return;
	if (chance(80))
		flags |= O_NONBLOCK;
	if (chance(20))
		flags |= O_ASYNC;
	if (chance(10))
		flags |= O_APPEND;
	if (chance(10))
		flags |= O_DIRECT;
	if (chance(10))
		flags |= O_TRUNC;
	fds[i] = open(dev, flags);
	count(fds[i]);
}

static void fuzz_rw(void)
{
	int fd = any_fd(), wr = chance(50);
	size_t len = size();
	void *p = pointer(len, !wr);
	long r;

	bound();
	switch (rnd() % 5) {
	case 0:
	case 1:
		r = wr ? write(fd, p, len) : read(fd, p, len);
		break;
	case 2: {
		struct iovec iov[4];
		int n = 1 + rnd() % 4;

		for (int i = 0; i < n; i++) {
			iov[i].iov_len = chance(80) ? rnd() % 8192 : size();
			iov[i].iov_base = pointer(iov[i].iov_len, !wr);
		}
		r = wr ? writev(fd, chance(90) ? iov : pointer(64, 0), n)
		       : readv(fd, chance(90) ? iov : pointer(64, 0), n);
		break;
	}
	case 3:
		r = wr ? pwrite(fd, p, len, rnd() % 4096)
		       : pread(fd, p, len, rnd() % 4096);
		break;
	default: {
		struct iovec iov = { p, len };
		int flags = chance(50) ? RWF_NOWAIT : (int)(rnd() & 0x3f);

		r = wr ? pwritev2(fd, &iov, 1, -1, flags)
		       : preadv2(fd, &iov, 1, -1, flags);
	}
	}
	unbound();
	count(r);
}

static void fuzz_poll(void)
{
	struct pollfd p[2] = { { any_fd(), (short)rnd(), 0 },
			       { any_fd(), POLLIN | POLLOUT, 0 } };

	count(poll(p, 1 + rnd() % 2, rnd() % 3));
}

static void fuzz_fcntl(void)
{
	int fd = any_fd();
	long r;

	switch (rnd() % 6) {
	case 0:
		r = fcntl(fd, F_SETFL, (int)(rnd() & (O_NONBLOCK | O_ASYNC |
						     O_APPEND | O_DIRECT |
						     O_NOATIME)));
		break;
	case 1:
		r = fcntl(fd, F_SETOWN, chance(80) ? getpid() : 0);
		break;
	case 2: {
		static const int sigs[] = { 0, SIGIO, SIGURG, SIGUSR1 };

		r = fcntl(fd, F_SETSIG, chance(50) ? sigs[rnd() % 4] :
			  SIGRTMIN + (int)(rnd() % (SIGRTMAX - SIGRTMIN + 1)));
		break;
	}
	case 3: {
		struct f_owner_ex own = { F_OWNER_TID, getpid() };

		r = fcntl(fd, F_SETOWN_EX, chance(80) ? (void *)&own :
			  pointer(8, 0));
		break;
	}
	case 4:
		r = fcntl(fd, F_GETFL);
		break;
	default: {
		int cmd = (int)(rnd() % 1100);

		r = fcntl(fd, cmd, rnd());
		if (r > 2 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
			close((int)r);		/* a new descriptor: drop it */
	}
	}
	count(r);
}

static void fuzz_ioctl(void)
{
	static const unsigned long known[] = {
		FIONREAD, FIONBIO, FIOASYNC, FIOCLEX, FIONCLEX, FIOQSIZE,
		TCGETS, 0x40040000ul, 0xc0086601ul,
	};
	unsigned long cmd;
	int v = (int)(rnd() & 1);
	void *arg;

	if (chance(40))
		cmd = known[rnd() % (sizeof(known) / sizeof(known[0]))];
	else
		cmd = (unsigned long)rnd();
	arg = chance(50) ? (void *)&v : pointer(8, 1);
	count(ioctl(any_fd(), cmd, arg));
}

static void fuzz_mmap(void)
{
	static const int prots[] = { PROT_READ, PROT_WRITE,
				     PROT_READ | PROT_WRITE, PROT_NONE,
				     PROT_EXEC };
	size_t len = chance(70) ? (size_t)page << (rnd() % 6) : size();
	void *p = mmap(NULL, len, prots[rnd() % 5],
		       chance(70) ? MAP_SHARED : MAP_PRIVATE, any_fd(),
		       (off_t)(rnd() % 4) * page);

	calls++;
	if (p == MAP_FAILED) {
		if (errno > 0 && errno < 200)
			errs[errno]++;
	} else {
		oks++;
		munmap(p, len);
	}
}

static void fuzz_aio(void)
{
	static const int ops[] = { IO_CMD_PREAD, IO_CMD_PWRITE, IO_CMD_PREADV,
				   IO_CMD_PWRITEV, IO_CMD_FSYNC, IO_CMD_POLL,
				   IO_CMD_NOOP, 42 };
	static struct iovec iov[NAIO][2];
	struct io_event ev[NAIO];
	struct timespec ts = { 0, 1000000 };
	int r;

	if (!actx) {
		r = io_setup(NAIO, &actx);
		if (r) {
			errno = -r;
			count(-1);
			return;
		}
	}
	switch (rnd() % 5) {
	case 0:
	case 1: {
		int i = rnd() % NAIO;
		struct iocb *cb = &iocbs[i], *cbs[1] = { cb };
		size_t len = chance(70) ? 1 + rnd() % 16384 : size();

		if (iocb_busy[i])
			return;
		memset(cb, 0, sizeof(*cb));
		cb->aio_fildes = any_fd();
		cb->aio_lio_opcode = ops[rnd() % 8];
		cb->u.c.buf = pointer(len, cb->aio_lio_opcode == IO_CMD_PREAD);
		cb->u.c.nbytes = len;
		cb->u.c.offset = chance(80) ? 0 : (long long)rnd();
		if (cb->aio_lio_opcode == IO_CMD_PREADV ||
		    cb->aio_lio_opcode == IO_CMD_PWRITEV) {
			iov[i][0] = (struct iovec){ pointer(4096, 1), 1 + rnd() % 4096 };
			iov[i][1] = (struct iovec){ pointer(4096, 1), rnd() % 4096 };
			cb->u.c.buf = chance(90) ? (void *)iov[i] : pointer(32, 0);
			cb->u.c.nbytes = 1 + rnd() % 2;
		}
		if (cb->aio_lio_opcode == IO_CMD_POLL)
			cb->u.c.buf = (void *)(uintptr_t)(POLLIN | POLLOUT);
		if (chance(20))
			cb->aio_rw_flags = chance(50) ? RWF_NOWAIT : (int)(rnd() & 0x7f);
		cb->aio_reqprio = chance(95) ? 0 : (short)rnd();
		r = io_submit(actx, 1, chance(97) ? cbs : pointer(8, 0));
		if (r == 1)
			iocb_busy[i] = 1;
		errno = r < 0 ? -r : 0;
		count(r < 0 ? -1 : r);
		break;
	}
	case 2: {
		int i = rnd() % NAIO;

		r = io_cancel(actx, &iocbs[i], ev);
		errno = r < 0 ? -r : 0;
		count(r < 0 ? -1 : r);
		break;
	}
	case 3:
		r = io_getevents(actx, 0, NAIO, ev, &ts);
		for (int k = 0; k < r; k++)
			for (int i = 0; i < NAIO; i++)
				if (ev[k].obj == &iocbs[i])
					iocb_busy[i] = 0;
		errno = r < 0 ? -r : 0;
		count(r < 0 ? -1 : r);
		break;
	default:
		if (!chance(10))
			return;
		/* cancels and waits for everything pending */
		r = io_destroy(actx);
		actx = 0;
		memset(iocb_busy, 0, sizeof(iocb_busy));
		errno = r < 0 ? -r : 0;
		count(r < 0 ? -1 : r);
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_alarm };	/* no SA_RESTART */
	unsigned long n;

	if (argc < 3) {
		fprintf(stderr, "usage: fuzzfifo DEV ITERATIONS [SEED]\n");
		return 2;
	}
	dev = argv[1];
	n = strtoul(argv[2], NULL, 0);
	s = argc > 3 ? strtoull(argv[3], NULL, 0) * 2654435761u + 1 : 1;
	sigaction(SIGALRM, &sa, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGALRM && sig != SIGKILL && sig != SIGSTOP &&
		    sig != SIGSEGV && sig != SIGBUS && sig != SIGCHLD)
			signal(sig, SIG_IGN);
	page = sysconf(_SC_PAGESIZE);
	buf = mmap(NULL, BUFSZ, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro_page = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gone_page = mmap(NULL, page, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || ro_page == MAP_FAILED || gone_page == MAP_FAILED)
		return 2;
	munmap(gone_page, page);
	for (size_t i = 0; i < BUFSZ; i++)
		buf[i] = (uint8_t)i;

	for (unsigned long it = 0; it < n; it++) {
		switch (rnd() % 8) {
		case 0: fuzz_open(); break;
		case 1: case 2: fuzz_rw(); break;
		case 3: fuzz_poll(); break;
		case 4: fuzz_fcntl(); break;
		case 5: fuzz_ioctl(); break;
		case 6: fuzz_mmap(); break;
		default: fuzz_aio(); break;
		}
		if (fds[0] < 0 && chance(50))
			fds[0] = open(dev, O_RDWR | O_NONBLOCK);
	}
	if (actx)
		io_destroy(actx);
	for (int i = 0; i < NFDS; i++)
		if (fds[i] >= 0)
			close(fds[i]);

	printf("fuzz iterations=%lu seed=%s calls=%lu ok=%lu errnos=", n,
	       argc > 3 ? argv[3] : "0", calls, oks);
	for (int e = 1, first = 1; e < 200; e++)
		if (errs[e]) {
			printf("%s%s:%lu", first ? "" : ",", strerrorname_np(e), errs[e]);
			first = 0;
		}
	printf("\n");
	return 0;
}

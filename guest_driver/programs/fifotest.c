// SPDX-License-Identifier: GPL-2.0
/*
 * fifotest - end-to-end checks of the fifolab driver, run inside the guest.
 *
 *   fifotest loop DEV SIZE [OFFSET]   SIZE bytes of a pattern written from a
 *                                     buffer OFFSET bytes into a page-aligned
 *                                     allocation and read back (concurrently
 *                                     when SIZE exceeds the FIFO); prints
 *                                     "ok SIZE crc32=XXXXXXXX"
 *   fifotest nonblock-empty DEV       O_NONBLOCK: read of an empty FIFO and
 *                                     write into a full one fail with EAGAIN
 *   fifotest wake DEV                 a blocked reader (child) gets exactly
 *                                     the bytes written 200 ms later
 *   fifotest signal DEV               SIGALRM (no SA_RESTART) ends blocked
 *                                     reads and writes: EINTR, or a short
 *                                     write; nothing lost or duplicated
 *   fifotest efault DEV               bad buffers: EFAULT, FIFO untouched
 *   fifotest two DEV0 DEV1            two devices are independent FIFOs
 *
 * Every subcommand exits 0 and prints a line starting with "ok" on success,
 * and exits non-zero with a message on stderr at the first deviation (data,
 * byte count or errno).  Each one first drains bytes a failed earlier run may
 * have left (saying so on stderr) and finally checks that the FIFO is empty,
 * so a driver that duplicates data fails.  A watchdog ends any subcommand
 * that hangs (exit status 3).
 *
 * The data is a position-dependent pattern (pat()): a lost, duplicated or
 * reordered byte shows up at its offset.  The FIFO depth is read from
 * /sys/class/fifolab/<dev>/fifo_depth when the driver provides it.
 *
 * Built statically (see Makefile): it runs in a busybox initramfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WATCHDOG_SECONDS	60
#define WAKE_BYTES		777

static const char *cmd = "fifotest";
static long page_size;

/* ------------------------------------------------------------- reporting */

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fifotest %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define die_errno(fmt, ...) \
	die(fmt ": %s (errno %d)", ##__VA_ARGS__, strerror(errno), errno)

static void on_watchdog(int sig)
{
	static const char msg[] = "fifotest: watchdog: timed out\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(4);
	_exit(3);
}

/* SIGUSR2 after @seconds ends this process; SIGALRM stays free for tests. */
static void watchdog(unsigned int seconds)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL,
				.sigev_signo = SIGUSR2 };
	struct itimerspec its = { .it_value = { .tv_sec = seconds } };
	struct sigaction sa = { .sa_handler = on_watchdog };
	timer_t t;

	if (sigaction(SIGUSR2, &sa, NULL))
		die_errno("sigaction(SIGUSR2)");
	if (timer_create(CLOCK_MONOTONIC, &sev, &t))
		die_errno("timer_create");
	if (timer_settime(t, 0, &its, NULL))
		die_errno("timer_settime");
}

/* ------------------------------------------------------------ data */

/* Byte @i of the stream with @seed. */
static uint8_t pat(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + ((uint64_t)seed << 32)) * 0x9E3779B97F4A7C15ull;

	x ^= x >> 29;
	return (uint8_t)(x >> 32);
}

static void fill(uint8_t *buf, size_t n, uint32_t seed, uint64_t start)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = pat(seed, start + i);
}

/* Die at the first byte of @buf that is not stream @seed from @start. */
static void check(const uint8_t *buf, size_t n, uint32_t seed, uint64_t start,
		  const char *what)
{
	for (size_t i = 0; i < n; i++) {
		if (buf[i] != pat(seed, start + i))
			die("%s: byte %llu of %zu is %#04x, expected %#04x",
			    what, (unsigned long long)(start + i), n, buf[i],
			    pat(seed, start + i));
	}
}

static uint32_t crc32(const uint8_t *p, size_t n)
{
	static uint32_t table[256];
	uint32_t crc = 0xFFFFFFFFu;

	if (!table[1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;

			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
	}
	while (n--)
		crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	return crc ^ 0xFFFFFFFFu;
}

/* @len bytes starting @offset bytes into a fresh page-aligned mapping. */
static uint8_t *map_buf(size_t len, size_t offset)
{
	void *p = mmap(NULL, len + offset + 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die_errno("mmap %zu bytes", len + offset);
	return (uint8_t *)p + offset;
}

static size_t parse_size(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || v > SIZE_MAX / 2)
		die("bad %s '%s'", what, s);
	return (size_t)v;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ device I/O */

static int xopen(const char *dev, int flags)
{
	int fd = open(dev, flags);

	if (fd < 0)
		die_errno("open %s", dev);
	return fd;
}

/* The FIFO depth from sysfs; a driver without the attribute fails the check. */
static size_t fifo_depth(const char *dev)
{
	const char *base = strrchr(dev, '/');
	char path[PATH_MAX];
	unsigned long v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/fifolab/%s/fifo_depth",
		 base ? base + 1 : dev);
	f = fopen(path, "r");
	if (!f)
		die_errno("%s", path);
	if (fscanf(f, "%lu", &v) != 1 || !v)
		die("%s: no depth", path);
	fclose(f);
	return v;
}

/* @n, or less if a FIFO @depth deep (0: unknown) cannot hold it. */
static size_t fit(size_t n, size_t depth)
{
	return depth && depth < n ? depth : n;
}

/* Read and discard what is in the FIFO; say so if anything was. */
static void drain(const char *dev)
{
	static uint8_t buf[65536];
	int fd = xopen(dev, O_RDONLY | O_NONBLOCK);
	size_t total = 0;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0)
		total += n;
	if (n < 0 && errno != EAGAIN)
		die_errno("draining %s", dev);
	if (n == 0)
		die("draining %s: read returned 0", dev);
	if (total)
		fprintf(stderr, "fifotest %s: warning: drained %zu stale bytes from %s\n",
			cmd, total, dev);
	close(fd);
}

/* The FIFO must hold nothing: an O_NONBLOCK read fails with EAGAIN. */
static void expect_empty(const char *dev, const char *when)
{
	uint8_t buf[4096];
	int fd = xopen(dev, O_RDONLY | O_NONBLOCK);
	ssize_t n = read(fd, buf, sizeof(buf));

	if (n >= 0)
		die("%s: %s should be empty, read returned %zd", when, dev, n);
	if (errno != EAGAIN)
		die_errno("%s: read of empty %s: expected EAGAIN", when, dev);
	close(fd);
}

/* A blocking write sends all bytes in one call. */
static void write_all(int fd, const void *buf, size_t n, const char *what)
{
	ssize_t r = write(fd, buf, n);

	if (r < 0)
		die_errno("%s: write of %zu bytes", what, n);
	if ((size_t)r != n)
		die("%s: blocking write of %zu bytes returned %zd", what, n, r);
}

/* Blocking reads until @n bytes; each read returns at least one byte. */
static size_t read_all(int fd, uint8_t *buf, size_t n, const char *what)
{
	size_t got = 0, calls = 0;

	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);

		if (r < 0)
			die_errno("%s: read after %zu of %zu bytes", what, got, n);
		if (r == 0)
			die("%s: read returned 0 after %zu of %zu bytes", what, got, n);
		got += r;
		calls++;
	}
	return calls;
}

/* Expect a failed call with @err. */
static void expect_errno(ssize_t r, int err, const char *what)
{
	if (r >= 0)
		die("%s: returned %zd, expected -1/%s", what, r, strerror(err));
	if (errno != err)
		die_errno("%s: expected %s", what, strerror(err));
}

static void wait_child(pid_t pid, const char *what)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		die_errno("waitpid (%s)", what);
	if (WIFSIGNALED(status))
		die("%s: child killed by signal %d", what, WTERMSIG(status));
	if (WEXITSTATUS(status))
		die("%s: child failed (exit %d)", what, WEXITSTATUS(status));
}

/* A forked child dies with its own message and non-zero status. */
static pid_t xfork(const char *role)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die_errno("fork");
	if (pid == 0) {
		static char name[64];

		snprintf(name, sizeof(name), "%s (%s)", cmd, role);
		cmd = name;
		watchdog(WATCHDOG_SECONDS);
	}
	return pid;
}

/* ------------------------------------------------------------ loop */

static int cmd_loop(int argc, char **argv)
{
	const char *dev;
	size_t size, offset = 0, depth, calls;
	uint32_t seed, crc;
	uint8_t *wbuf, *rbuf;

	if (argc < 2 || argc > 3)
		die("usage: fifotest loop DEV SIZE [OFFSET]");
	dev = argv[0];
	size = parse_size(argv[1], "SIZE");
	if (argc == 3)
		offset = parse_size(argv[2], "OFFSET");
	if (!size)
		die("SIZE must be > 0");
	seed = (uint32_t)size ^ 0x5eed0000u;
	depth = fifo_depth(dev);

	wbuf = map_buf(size, offset);
	rbuf = map_buf(size, offset);
	fill(wbuf, size, seed, 0);
	drain(dev);

	if (depth && size <= depth) {
		/* it fits: the write completes with nobody reading */
		int fd = xopen(dev, O_RDWR);

		write_all(fd, wbuf, size, "write");
		calls = read_all(fd, rbuf, size, "read");
		close(fd);
	} else {
		int fd;
		pid_t pid = xfork("writer");

		if (pid == 0) {
			fd = xopen(dev, O_WRONLY);
			write_all(fd, wbuf, size, "write");
			close(fd);
			exit(0);
		}
		fd = xopen(dev, O_RDONLY);
		calls = read_all(fd, rbuf, size, "read");
		close(fd);
		wait_child(pid, "writer");
	}

	check(rbuf, size, seed, 0, "data read back");
	expect_empty(dev, "after the loop");
	crc = crc32(rbuf, size);
	if (crc != crc32(wbuf, size))
		die("crc32 of the data read differs from the data written");
	printf("ok %zu crc32=%08x reads=%zu%s\n", size, crc, calls,
	       depth && size <= depth ? " sequential" : " concurrent");
	return 0;
}

/* ------------------------------------------------------------ nonblock */

static int cmd_nonblock_empty(int argc, char **argv)
{
	const char *dev;
	size_t depth, total = 0, got = 0;
	const size_t chunk = 16384;
	uint8_t buf[16384];
	uint32_t seed = 0xAB;
	ssize_t r;
	int fd;

	if (argc != 1)
		die("usage: fifotest nonblock-empty DEV");
	dev = argv[0];
	depth = fifo_depth(dev);
	drain(dev);
	fd = xopen(dev, O_RDWR | O_NONBLOCK);

	expect_errno(read(fd, buf, 100), EAGAIN, "O_NONBLOCK read of empty FIFO");
	expect_errno(read(fd, buf, 1), EAGAIN, "O_NONBLOCK 1-byte read of empty FIFO");

	/* fill it: short writes, then EAGAIN */
	for (;;) {
		fill(buf, chunk, seed, total);
		r = write(fd, buf, chunk);
		if (r < 0) {
			if (errno != EAGAIN)
				die_errno("O_NONBLOCK write after %zu bytes", total);
			break;
		}
		if (r == 0 || (size_t)r > chunk)
			die("O_NONBLOCK write of %zu returned %zd", chunk, r);
		total += r;
		if (total > (256u << 20))
			die("wrote %zu bytes without EAGAIN", total);
	}
	if (!total)
		die("O_NONBLOCK write into an empty FIFO moved nothing");
	if (depth && total != depth)
		die("filled %zu bytes, FIFO depth is %zu", total, depth);
	fill(buf, 1, seed, total);
	expect_errno(write(fd, buf, 1), EAGAIN, "O_NONBLOCK write into full FIFO");

	/* drain it: the same stream, then EAGAIN */
	for (;;) {
		r = read(fd, buf, 5000);
		if (r < 0) {
			if (errno != EAGAIN)
				die_errno("O_NONBLOCK read after %zu bytes", got);
			break;
		}
		if (r == 0)
			die("O_NONBLOCK read returned 0 after %zu bytes", got);
		check(buf, r, seed, got, "data drained");
		got += r;
		if (got > total)
			die("read %zu bytes, only %zu were written", got, total);
	}
	if (got != total)
		die("drained %zu bytes of %zu", got, total);
	expect_errno(read(fd, buf, 100), EAGAIN, "O_NONBLOCK read after draining");
	close(fd);
	printf("ok nonblock-empty filled=%zu\n", total);
	return 0;
}

/* ------------------------------------------------------------ wake */

static int cmd_wake(int argc, char **argv)
{
	const char *dev;
	uint8_t buf[WAKE_BYTES], got_buf[2 * WAKE_BYTES];
	size_t got = 0;
	int p[2], fd, status;
	double t0, t1;
	ssize_t r;
	pid_t pid;

	if (argc != 1)
		die("usage: fifotest wake DEV");
	dev = argv[0];
	drain(dev);
	if (pipe(p))
		die_errno("pipe");

	pid = xfork("reader");
	if (pid == 0) {
		uint8_t rbuf[4096];
		size_t n = 0;

		close(p[0]);
		fd = xopen(dev, O_RDONLY);
		while (n < WAKE_BYTES) {
			r = read(fd, rbuf + n, sizeof(rbuf) - n);
			if (r <= 0)
				die_errno("blocking read returned %zd after %zu bytes", r, n);
			n += r;
		}
		if (n != WAKE_BYTES)
			die("reader got %zu bytes, %d were written", n, WAKE_BYTES);
		if (write(p[1], rbuf, n) != (ssize_t)n)
			die_errno("write to pipe");
		exit(0);
	}
	close(p[1]);

	usleep(200000);
	if (waitpid(pid, &status, WNOHANG) != 0)
		die("the reader did not block on an empty FIFO (it ended)");

	fill(buf, sizeof(buf), 0x3a4e, 0);
	fd = xopen(dev, O_WRONLY);
	t0 = now();
	write_all(fd, buf, sizeof(buf), "write");
	close(fd);

	while ((r = read(p[0], got_buf + got, sizeof(got_buf) - got)) > 0)
		got += r;
	if (r < 0)
		die_errno("read from pipe");
	t1 = now();
	wait_child(pid, "reader");
	if (got != sizeof(buf))
		die("reader passed on %zu bytes, %zu were written", got, sizeof(buf));
	check(got_buf, got, 0x3a4e, 0, "bytes the woken reader got");
	expect_empty(dev, "after the wake");
	printf("ok wake %zu bytes, reader done %.1f ms after the write\n", got,
	       (t1 - t0) * 1e3);
	return 0;
}

/* ------------------------------------------------------------ signal */

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

/* SIGALRM in @ms milliseconds (one shot). */
static void arm(unsigned int ms)
{
	struct itimerval it = {
		.it_value = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 },
	};

	if (setitimer(ITIMER_REAL, &it, NULL))
		die_errno("setitimer");
}

static int cmd_signal(int argc, char **argv)
{
	static const size_t sizes[] = { 1, 4096, 65539, 1 << 20 };
	struct sigaction sa = { .sa_handler = on_alarm };	/* no SA_RESTART */
	const char *dev;
	size_t depth, big, n, filled = 0;
	uint8_t *buf, small[1000];
	uint32_t seed = 0x516;
	double t0, dt;
	ssize_t r;
	int fd;

	if (argc != 1)
		die("usage: fifotest signal DEV");
	dev = argv[0];
	depth = fifo_depth(dev);
	drain(dev);
	if (sigaction(SIGALRM, &sa, NULL))
		die_errno("sigaction(SIGALRM)");
	fd = xopen(dev, O_RDWR);
	big = depth ? depth + 100000 : (1 << 20) + 100000;
	buf = map_buf(big > sizes[3] ? big : sizes[3], 1);

	/* blocked reads of an empty FIFO: EINTR, nothing consumed */
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int before = alarms;

		arm(150);
		t0 = now();
		r = read(fd, buf, sizes[i]);
		dt = now() - t0;
		expect_errno(r, EINTR, "blocked read interrupted by SIGALRM");
		if (alarms != before + 1)
			die("read returned EINTR but the handler ran %d times",
			    alarms - before);
		if (dt < 0.1)
			die("read of an empty FIFO returned after %.1f ms, not blocked",
			    dt * 1e3);
	}
	expect_empty(dev, "after interrupted reads");

	/* the device still works and nothing was lost or duplicated */
	n = fit(sizeof(small), depth);
	fill(small, n, seed, 0);
	write_all(fd, small, n, "write after interrupted reads");
	memset(small, 0, n);
	read_all(fd, small, n, "read after interrupted reads");
	check(small, n, seed, 0, "data after interrupted reads");
	expect_empty(dev, "after the round trip");

	/* a blocked write larger than the FIFO: a short count */
	seed = 0x517;
	fill(buf, big, seed, 0);
	arm(300);
	r = write(fd, buf, big);
	if (r < 0)
		die_errno("blocked write of %zu bytes interrupted: expected a short count",
			  big);
	if ((size_t)r >= big || r == 0)
		die("blocked write of %zu bytes interrupted returned %zd", big, r);
	if (depth && (size_t)r != depth)
		die("interrupted write returned %zd, the FIFO holds %zu", r, depth);
	filled = r;

	/* a blocked write into the full FIFO: EINTR, nothing added */
	if (depth) {
		arm(150);
		r = write(fd, buf + filled, 10);
		expect_errno(r, EINTR, "blocked write into a full FIFO interrupted");
	}

	/* exactly what the short write reported, in order */
	memset(buf, 0, filled);
	read_all(fd, buf, filled, "reading back the short write");
	check(buf, filled, seed, 0, "data of the short write");
	expect_empty(dev, "after reading back the short write");
	close(fd);
	printf("ok signal: reads EINTR, short write %zu of %zu\n", filled, big);
	return 0;
}

/* ------------------------------------------------------------ efault */

static int cmd_efault(int argc, char **argv)
{
	void *volatile bad = (void *)1;
	void *volatile kernel = (void *)0xffff888000000000ull;
	const char *dev;
	uint8_t *two, *edge, *ro, *good, zeros[100];
	uint32_t seed = 0xefa;
	size_t n, nz;
	int fd;

	if (argc != 1)
		die("usage: fifotest efault DEV");
	dev = argv[0];
	n = fit(5000, fifo_depth(dev));
	nz = fit(sizeof(zeros), fifo_depth(dev));
	drain(dev);
	fd = xopen(dev, O_RDWR);	/* blocking: EFAULT must come first */

	expect_errno(read(fd, bad, 100), EFAULT, "read into (void *)1");
	expect_errno(write(fd, bad, 100), EFAULT, "write from (void *)1");
	expect_errno(read(fd, kernel, 100), EFAULT, "read into a kernel address");
	expect_errno(write(fd, kernel, 100), EFAULT, "write from a kernel address");

	/* a buffer running from a mapped page into an unmapped one */
	two = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (two == MAP_FAILED)
		die_errno("mmap");
	memset(two, 0x55, 2 * page_size);
	if (munmap(two + page_size, page_size))
		die_errno("munmap");
	edge = two + page_size - 100;
	expect_errno(read(fd, edge, 200), EFAULT, "read into a buffer running into an unmapped page");
	expect_errno(write(fd, edge, 200), EFAULT, "write from a buffer running into an unmapped page");

	/* the device must not write into read-only memory */
	ro = mmap(NULL, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ro == MAP_FAILED)
		die_errno("mmap");
	expect_errno(read(fd, ro, 100), EFAULT, "read into read-only memory");
	expect_empty(dev, "after the EFAULT writes");

	/* but may read from it (the zero page) */
	write_all(fd, ro, nz, "write from read-only memory");
	memset(zeros, 0xff, sizeof(zeros));
	read_all(fd, zeros, nz, "read of the read-only page's bytes");
	for (size_t i = 0; i < nz; i++)
		if (zeros[i])
			die("byte %zu from a read-only zero page is %#x", i, zeros[i]);

	/* and the device still works */
	good = map_buf(n, 3000);
	fill(good, n, seed, 0);
	write_all(fd, good, n, "write after EFAULT");
	memset(good, 0, n);
	read_all(fd, good, n, "read after EFAULT");
	check(good, n, seed, 0, "data after EFAULT");
	expect_empty(dev, "after EFAULT");
	close(fd);
	printf("ok efault\n");
	return 0;
}

/* ------------------------------------------------------------ two */

/* Nonblocking reads of @dev until EAGAIN: exactly @n bytes of @seed. */
static void expect_stream(const char *dev, size_t n, uint32_t seed)
{
	static uint8_t buf[65536];
	int fd = xopen(dev, O_RDONLY | O_NONBLOCK);
	size_t got = 0;
	ssize_t r;

	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		check(buf, r, seed, got, dev);
		got += r;
		if (got > n)
			break;
	}
	if (r < 0 && errno != EAGAIN)
		die_errno("read %s", dev);
	if (got != n)
		die("%s: read back %zu bytes, %zu were written to it", dev, got, n);
	close(fd);
}

static int cmd_two(int argc, char **argv)
{
	const char *dev0, *dev1;
	uint8_t a[3000], b[5000], c[10], rbuf[64];
	struct stat st0, st1;
	int fd0, fd1, p[2], status;
	size_t got = 0, na, nb, nc;
	ssize_t r;
	pid_t pid;

	if (argc != 2)
		die("usage: fifotest two DEV0 DEV1");
	dev0 = argv[0];
	dev1 = argv[1];
	if (stat(dev0, &st0) || stat(dev1, &st1))
		die_errno("stat");
	if (!S_ISCHR(st0.st_mode) || !S_ISCHR(st1.st_mode))
		die("%s and %s must be character devices", dev0, dev1);
	if (st0.st_rdev == st1.st_rdev)
		die("%s and %s are the same device", dev0, dev1);
	na = fit(sizeof(a), fifo_depth(dev0));
	nb = fit(sizeof(b), fifo_depth(dev1));
	nc = fit(sizeof(c), fifo_depth(dev1));
	drain(dev0);
	drain(dev1);

	fd0 = xopen(dev0, O_RDWR);
	fd1 = xopen(dev1, O_RDWR);
	fill(a, na, 0xA, 0);
	fill(b, nb, 0xB, 0);
	write_all(fd0, a, na, dev0);
	write_all(fd1, b, nb, dev1);
	expect_stream(dev1, nb, 0xB);
	expect_stream(dev0, na, 0xA);

	/* a reader blocked on DEV1 sleeps through a write to DEV0 */
	if (pipe(p))
		die_errno("pipe");
	pid = xfork("reader of DEV1");
	if (pid == 0) {
		size_t n = 0;

		close(p[0]);
		while (n < nc) {
			r = read(fd1, rbuf + n, sizeof(rbuf) - n);
			if (r <= 0)
				die_errno("read %s returned %zd", dev1, r);
			n += r;
		}
		if (n != nc || write(p[1], rbuf, n) != (ssize_t)n)
			die("reader of %s got %zu bytes", dev1, n);
		exit(0);
	}
	close(p[1]);
	write_all(fd0, a, na, dev0);
	usleep(200000);
	if (waitpid(pid, &status, WNOHANG) != 0)
		die("a write to %s ended a read blocked on %s", dev0, dev1);
	fill(c, nc, 0xC, 0);
	write_all(fd1, c, nc, dev1);
	while ((r = read(p[0], rbuf + got, sizeof(rbuf) - got)) > 0)
		got += r;
	wait_child(pid, "reader of DEV1");
	if (got != nc)
		die("reader of %s passed on %zu bytes", dev1, got);
	check(rbuf, got, 0xC, 0, "bytes the DEV1 reader got");
	expect_stream(dev0, na, 0xA);

	expect_empty(dev0, "at the end");
	expect_empty(dev1, "at the end");
	close(fd0);
	close(fd1);
	printf("ok two\n");
	return 0;
}

/* ------------------------------------------------------------ main */

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} cmds[] = {
	{ "loop", cmd_loop },
	{ "nonblock-empty", cmd_nonblock_empty },
	{ "wake", cmd_wake },
	{ "signal", cmd_signal },
	{ "efault", cmd_efault },
	{ "two", cmd_two },
};

int main(int argc, char **argv)
{
	page_size = sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2) {
		for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
			if (!strcmp(argv[1], cmds[i].name)) {
				cmd = cmds[i].name;
				watchdog(WATCHDOG_SECONDS);
				return cmds[i].fn(argc - 2, argv + 2);
			}
		}
	}
	fprintf(stderr, "usage: fifotest loop DEV SIZE [OFFSET] | nonblock-empty DEV | wake DEV |\n"
			"                signal DEV | efault DEV | two DEV0 DEV1\n");
	return 2;
}

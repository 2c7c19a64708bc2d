/* SPDX-License-Identifier: GPL-2.0 */
/*
 * common.h - helpers shared by the fifolab notification / async I/O test
 * programs (fasync_demo, sigio_epoll, posix_aio, libaio_test, uring_test,
 * poll_test).  Header-only: every program is one .c file built statically.
 *
 * What is here:
 *   - reporting: die()/die_errno() (message on stderr, exit 1), a watchdog
 *     (a POSIX timer sending SIGUSR2: "watchdog: timed out", exit 3)
 *   - data: two deterministic streams.  pat(seed, i) for data the program
 *     writes itself; host_pat(i) = (i * 7 + 3) % 251 for bytes the harness
 *     injects from the host side of a wired device (harness/checks.py
 *     pattern()).  stream_check() dies at the first wrong byte, naming its
 *     offset, so lost, duplicated or reordered bytes show up.
 *   - device helpers: open, FIFO depth from sysfs, drain stale bytes, check
 *     the FIFO is empty, blocking write/read of a whole buffer
 *   - command line: PROG [SUBCOMMAND] DEV [SUBCOMMAND] [--external N]
 *     [--ready FILE] [--counters]; the subcommand and DEV may come in either
 *     order ("libaio_test /dev/fifolab0 basic" == "libaio_test basic
 *     /dev/fifolab0")
 *   - armed(): prints "waiting" (flushed) and creates the --ready file, the
 *     signal for the harness to inject host bytes
 *   - --counters: the driver's sysfs counters printed before and after
 *     (never an assertion; a missing file is skipped)
 */
#ifndef FIFOLAB_PROGRAMS_COMMON_H
#define FIFOLAB_PROGRAMS_COMMON_H

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
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UNUSED __attribute__((unused))

#ifndef WATCHDOG_SECONDS
#define WATCHDOG_SECONDS	60
#endif
/* how long a program waits for something that must happen (a completion,
 * a signal, a readiness change) before it calls it a failure */
#define EVENT_TIMEOUT_MS	10000

static const char *prog = "fifolab";	/* set by main */
static const char *cmd = "";		/* the running subcommand */

/* ------------------------------------------------------------- reporting */

static UNUSED void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s%s%s: ", prog, *cmd ? " " : "", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define die_errno(fmt, ...) \
	die(fmt ": %s (errno %d)", ##__VA_ARGS__, strerror(errno), errno)

/* die() with an error code given as a negative errno (libaio, liburing) */
#define die_neg(err, fmt, ...) \
	die(fmt ": %s (%d)", ##__VA_ARGS__, strerror(-(int)(err)), (int)(err))

static UNUSED void warn(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s%s%s: warning: ", prog, *cmd ? " " : "", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void on_watchdog(int sig)
{
	static const char msg[] = ": watchdog: timed out\n";

	(void)sig;
	if (write(2, prog, strlen(prog)) < 0 || write(2, msg, sizeof(msg) - 1) < 0)
		_exit(4);
	_exit(3);
}

/* SIGUSR2 after @seconds ends this process (exit 3); SIGALRM and SIGIO stay
 * free for the tests. */
static UNUSED void watchdog(unsigned int seconds)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL,
				.sigev_signo = SIGUSR2 };
	struct itimerspec its = { .it_value = { .tv_sec = seconds } };
	struct sigaction sa = { .sa_handler = on_watchdog };
	static timer_t t;
	static pid_t owner;	/* timers are not inherited by fork() */

	if (owner != getpid()) {
		if (sigaction(SIGUSR2, &sa, NULL))
			die_errno("sigaction(SIGUSR2)");
		if (timer_create(CLOCK_MONOTONIC, &sev, &t))
			die_errno("timer_create");
		owner = getpid();
	}
	if (timer_settime(t, 0, &its, NULL))
		die_errno("timer_settime");
}

static UNUSED double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static UNUSED void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static UNUSED pid_t xgettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* ------------------------------------------------------------ data */

#define HOST_SEED	0xFFFFFFFFu	/* "the harness's host pattern" */

/* Byte @i of what the harness injects (harness/checks.py pattern()). */
static inline uint8_t host_pat(uint64_t i)
{
	return (uint8_t)((i * 7 + 3) % 251);
}

/* Byte @i of the stream with @seed (HOST_SEED: the host pattern). */
static inline uint8_t pat(uint32_t seed, uint64_t i)
{
	uint64_t x;

	if (seed == HOST_SEED)
		return host_pat(i);
	x = (i + ((uint64_t)seed << 32)) * 0x9E3779B97F4A7C15ull;
	x ^= x >> 29;
	return (uint8_t)(x >> 32);
}

static UNUSED void fill(uint8_t *buf, size_t n, uint32_t seed, uint64_t start)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = pat(seed, start + i);
}

/* Die at the first byte of @buf that is not stream @seed from @start. */
static UNUSED void stream_check(const uint8_t *buf, size_t n, uint32_t seed,
				uint64_t start, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		if (buf[i] != pat(seed, start + i))
			die("%s: stream byte %llu (byte %zu of this %zu-byte chunk) is %#04x, expected %#04x",
			    what, (unsigned long long)(start + i), i, n, buf[i],
			    pat(seed, start + i));
	}
}

static UNUSED uint32_t crc32(const uint8_t *p, size_t n)
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

/* The crc32 of @n bytes of stream @seed from 0 (what a complete, intact
 * transfer must have). */
static UNUSED uint32_t stream_crc(uint32_t seed, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);
	uint32_t c;

	if (!b)
		die("malloc");
	fill(b, n, seed, 0);
	c = crc32(b, n);
	free(b);
	return c;
}

static UNUSED void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("malloc %zu bytes", n);
	return p;
}

/* @len bytes, page aligned, zeroed */
static UNUSED uint8_t *map_buf(size_t len)
{
	void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die_errno("mmap %zu bytes", len);
	return p;
}

static UNUSED size_t parse_size(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || v > SIZE_MAX / 2)
		die("bad %s '%s'", what, s);
	return (size_t)v;
}

/* ------------------------------------------------------------ device I/O */

static UNUSED int xopen(const char *dev, int flags)
{
	int fd = open(dev, flags);

	if (fd < 0)
		die_errno("open %s", dev);
	return fd;
}

static const char *node_name(const char *dev)
{
	const char *base = strrchr(dev, '/');

	return base ? base + 1 : dev;
}

/* /sys/class/fifolab/<node>/<name> as a number; -1 if missing. */
static long long sysfs_read(const char *dev, const char *name)
{
	char path[PATH_MAX];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/fifolab/%s/%s", node_name(dev), name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* The FIFO depth from sysfs; a driver without the attribute fails the program. */
static UNUSED size_t fifo_depth(const char *dev)
{
	long long v = sysfs_read(dev, "fifo_depth");

	if (v <= 0)
		die("%s: no sysfs fifo_depth (%lld): is this the fifolab driver?", dev, v);
	return (size_t)v;
}

static const char *const counter_names[] = {
	"async_submitted", "async_completed", "async_cancelled", "async_failed",
	"sigio_sent", "irqs", "tx_bytes", "rx_bytes",
};
static int show_counters;

/* "counters <when>: name=value ..." on stdout (only with --counters). */
static UNUSED void print_counters(const char *dev, const char *when)
{
	if (!show_counters || !dev)
		return;
	printf("counters %s %s:", node_name(dev), when);
	for (size_t i = 0; i < sizeof(counter_names) / sizeof(counter_names[0]); i++) {
		long long v = sysfs_read(dev, counter_names[i]);

		if (v >= 0)
			printf(" %s=%lld", counter_names[i], v);
	}
	printf("\n");
	fflush(stdout);
}

/* @n, or less if a FIFO @depth deep (0: unknown) cannot hold it. */
static UNUSED size_t fit(size_t n, size_t depth)
{
	return depth && depth < n ? depth : n;
}

/* Scale @k sizes down (each >= 1) so that together they fit @depth. */
static UNUSED void fit_sizes(size_t *sizes, int k, size_t depth)
{
	size_t sum = 0;

	for (int i = 0; i < k; i++)
		sum += sizes[i];
	if (!depth || sum <= depth)
		return;
	for (int i = 0; i < k; i++) {
		sizes[i] = sizes[i] * (depth - k) / sum;
		if (!sizes[i])
			sizes[i] = 1;
	}
}

/* Read and discard what is in the FIFO; say so if anything was. */
static UNUSED void drain(const char *dev)
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
		warn("drained %zu stale bytes from %s", total, dev);
	close(fd);
}

/* The FIFO must hold nothing: an O_NONBLOCK read fails with EAGAIN. */
static UNUSED void expect_empty(const char *dev, const char *when)
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
static UNUSED void write_all(int fd, const void *buf, size_t n, const char *what)
{
	ssize_t r = write(fd, buf, n);

	if (r < 0)
		die_errno("%s: write of %zu bytes", what, n);
	if ((size_t)r != n)
		die("%s: blocking write of %zu bytes returned %zd", what, n, r);
}

/* Blocking reads until @n bytes; each read returns at least one byte. */
static UNUSED void read_all(int fd, uint8_t *buf, size_t n, const char *what)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);

		if (r < 0)
			die_errno("%s: read after %zu of %zu bytes", what, got, n);
		if (r == 0)
			die("%s: read returned 0 after %zu of %zu bytes", what, got, n);
		got += r;
	}
}

/* Write @n bytes of stream @seed (from @start) through @fd, blocking. */
static UNUSED void write_stream(int fd, size_t n, uint32_t seed, uint64_t start,
				const char *what)
{
	uint8_t *b = xmalloc(n);

	fill(b, n, seed, start);
	write_all(fd, b, n, what);
	free(b);
}

/* Blocking reads of exactly @n bytes of stream @seed from @start. */
static UNUSED void read_stream(int fd, size_t n, uint32_t seed, uint64_t start,
			       const char *what)
{
	uint8_t *b = xmalloc(n);

	read_all(fd, b, n, what);
	stream_check(b, n, seed, start, what);
	free(b);
}

/* Expect a failed call with @err. */
static UNUSED void expect_errno(ssize_t r, int err, const char *what)
{
	if (r >= 0)
		die("%s: returned %zd, expected -1/%s", what, r, strerror(err));
	if (errno != err)
		die_errno("%s: expected %s", what, strerror(err));
}

static UNUSED void wait_child(pid_t pid, const char *what)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		die_errno("waitpid (%s)", what);
	if (WIFSIGNALED(status))
		die("%s: child killed by signal %d", what, WTERMSIG(status));
	if (WEXITSTATUS(status))
		die("%s: child failed (exit %d)", what, WEXITSTATUS(status));
}

/* Wait up to @ms for child @pid; 1 if it ended (status in *status), 0 if
 * it is still running. */
static UNUSED int wait_child_for(pid_t pid, int *status, unsigned int ms)
{
	double end = now() + ms / 1e3;

	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 1;
		if (r < 0 && errno != EINTR)
			die_errno("waitpid");
		if (now() > end)
			return 0;
		sleep_ms(5);
	}
}

/* A forked child dies with its own message and non-zero status. */
static UNUSED pid_t xfork(const char *role)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die_errno("fork");
	if (pid == 0) {
		static char name[96];

		snprintf(name, sizeof(name), "%s (%s)", cmd, role);
		cmd = name;
		watchdog(WATCHDOG_SECONDS);
	}
	return pid;
}

/* ------------------------------------------------------------ command line */

struct opts {
	const char *dev;
	const char *sub;	/* subcommand, NULL: none given */
	size_t external;	/* --external N: N bytes come from the host */
	const char *ready;	/* --ready FILE */
	int poll_dev;		/* --poll-dev (sigio_epoll) */
	int nargs;		/* further positional arguments */
	char *args[8];
};

static struct opts opt;

/* Parse argv; @subs: the subcommand names (NULL-terminated). */
static UNUSED void parse_args(int argc, char **argv, const char *const *subs,
			      const char *usage)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int is_sub = 0;

		if (!strcmp(a, "--external") && i + 1 < argc) {
			opt.external = parse_size(argv[++i], "--external N");
			if (!opt.external)
				die("--external N needs N > 0");
			continue;
		}
		if (!strcmp(a, "--ready") && i + 1 < argc) {
			opt.ready = argv[++i];
			continue;
		}
		if (!strcmp(a, "--poll-dev")) {
			opt.poll_dev = 1;
			continue;
		}
		if (!strcmp(a, "--counters")) {
			show_counters = 1;
			continue;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(usage, stdout);
			exit(0);
		}
		if (a[0] == '-' && a[1] == '-') {
			fputs(usage, stderr);
			fprintf(stderr, "%s: unknown option %s\n", prog, a);
			exit(2);
		}
		for (const char *const *s = subs; s && *s; s++)
			if (!strcmp(a, *s))
				is_sub = 1;
		if (is_sub && !opt.sub) {
			opt.sub = a;
		} else if (!opt.dev) {
			opt.dev = a;
		} else if (opt.nargs < 8) {
			opt.args[opt.nargs++] = argv[i];
		} else {
			fputs(usage, stderr);
			exit(2);
		}
	}
	if (!opt.dev) {
		fputs(usage, stderr);
		exit(2);
	}
}

/* Armed: say "waiting" and create the --ready file; the harness injects
 * host bytes once it sees the file. */
static UNUSED void armed(void)
{
	printf("waiting\n");
	fflush(stdout);
	if (opt.ready) {
		int fd = open(opt.ready, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd < 0)
			die_errno("creating the ready file %s", opt.ready);
		close(fd);
	}
}

/* Run this program again (fresh process: fresh glibc AIO state, no threads,
 * no signal state) with @sub and wait for it; 0 if it passed. */
static UNUSED int run_self(const char *sub)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die_errno("fork");
	if (pid == 0) {
		char *av[] = { (char *)prog, (char *)sub, (char *)opt.dev,
			       show_counters ? "--counters" : NULL, NULL };

		execv("/proc/self/exe", av);
		die_errno("exec /proc/self/exe");
	}
	if (waitpid(pid, &status, 0) != pid)
		die_errno("waitpid");
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "%s %s: killed by signal %d\n", prog, sub, WTERMSIG(status));
		return 1;
	}
	return WEXITSTATUS(status);
}

/* "all": each subcommand of @subs in its own process; 0 if all passed. */
static UNUSED int run_all(const char *const *subs)
{
	int failed = 0, n = 0;

	watchdog(WATCHDOG_SECONDS * 8);
	for (const char *const *s = subs; *s; s++) {
		if (!strcmp(*s, "all"))
			continue;
		n++;
		if (run_self(*s))
			failed++;
	}
	if (failed) {
		fprintf(stderr, "%s all: %d of %d subcommands failed\n", prog, failed, n);
		return 1;
	}
	printf("ok all (%d subcommands)\n", n);
	return 0;
}

#endif

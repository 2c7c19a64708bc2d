// SPDX-License-Identifier: GPL-2.0
/*
 * faulttest - one system call at a time against /dev/fifolabN, for the
 * fault-injection tests (tests/test_faults_vm.py).  Each subcommand prints
 * what the call returned, and exits 0 unless it could not run at all: the
 * test on the host decides what is right.
 *
 *   faulttest write DEV LEN [SEED]     one write(2) of LEN pattern bytes:
 *                                      "ok N" or "err ERRNO NAME"
 *   faulttest read DEV LEN [SEED]      one read(2) of up to LEN bytes:
 *                                      "ok N" (+ " pattern" if the bytes
 *                                      are stream SEED from 0) or "err ..."
 *   faulttest aread DEV LEN            one libaio read (raw io_submit):
 *                                      "ok N" or "err ERRNO NAME" from the
 *                                      event's res
 *   faulttest awrite DEV LEN [SEED]    the same for a write
 *   faulttest poll DEV                 poll(2), no wait: "revents IN OUT
 *                                      ERR HUP ..." (the bits set)
 *   faulttest counter DEV N            read exactly N bytes; byte i must be
 *                                      i % 256 (a host flood): "ok N"
 *   faulttest hold DEV MARKER          open, create MARKER, then a blocking
 *                                      read: "first ..."; then another read
 *                                      ("second ..."), poll ("revents ...")
 *                                      and close ("closed 0")
 *   faulttest sigio DEV MS MARKER      O_ASYNC with F_SETSIG: print
 *                                      "sigio CODE" for each signal in MS
 *                                      ms (CODE: POLL_IN, POLL_ERR, ...);
 *                                      MARKER is created once armed
 *
 * A watchdog ends any subcommand after 60 s (exit status 3).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WATCHDOG_SECONDS	60

static void die(const char *what)
{
	fprintf(stderr, "faulttest: %s: %s\n", what, strerror(errno));
	exit(2);
}

static uint8_t pat(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + ((uint64_t)seed << 32)) * 0x9E3779B97F4A7C15ull;

	x ^= x >> 29;
	return (uint8_t)(x >> 32);
}

static void result(const char *tag, long ret, int err)
{
	if (ret >= 0)
		printf("%s%s%ld", tag, *tag ? " ok " : "ok ", ret);
	else
		printf("%s%serr %d %s", tag, *tag ? " " : "", err,
		       strerrorname_np(err) ? strerrorname_np(err) : "?");
}

static int open_dev(const char *dev, int flags)
{
	int fd = open(dev, flags);

	if (fd < 0)
		die(dev);
	return fd;
}

static uint8_t *buffer(size_t len, uint32_t seed)
{
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf)
		die("malloc");
	for (size_t i = 0; i < len; i++)
		buf[i] = pat(seed, i);
	return buf;
}

static int is_pattern(const uint8_t *buf, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		if (buf[i] != pat(seed, i))
			return 0;
	return 1;
}

static int do_rw(const char *dev, size_t len, uint32_t seed, int write_)
{
	int fd = open_dev(dev, write_ ? O_WRONLY : O_RDONLY);
	uint8_t *buf = buffer(len, seed);
	ssize_t n;

	if (!write_)
		memset(buf, 0, len);
	n = write_ ? write(fd, buf, len) : read(fd, buf, len);
	result("", n, errno);
	if (!write_ && n > 0 && is_pattern(buf, n, seed))
		printf(" pattern");
	putchar('\n');
	return 0;
}

static int do_aio(const char *dev, size_t len, uint32_t seed, int write_)
{
	int fd = open_dev(dev, O_RDWR);
	uint8_t *buf = buffer(len, seed);
	aio_context_t ctx = 0;
	struct iocb cb = { 0 }, *cbs[1] = { &cb };
	struct io_event ev;

	if (syscall(SYS_io_setup, 1, &ctx))
		die("io_setup");
	cb.aio_fildes = fd;
	cb.aio_lio_opcode = write_ ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
	cb.aio_buf = (uintptr_t)buf;
	cb.aio_nbytes = len;
	if (syscall(SYS_io_submit, ctx, 1, cbs) != 1) {
		result("", -1, errno);
		putchar('\n');
		return 0;
	}
	if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1)
		die("io_getevents");
	result("", ev.res, (int)-ev.res);
	putchar('\n');
	return 0;
}

static void print_revents(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
	int n = poll(&p, 1, 0);

	if (n < 0)
		die("poll");
	printf("revents");
	if (p.revents & POLLIN)
		printf(" IN");
	if (p.revents & POLLOUT)
		printf(" OUT");
	if (p.revents & POLLERR)
		printf(" ERR");
	if (p.revents & POLLHUP)
		printf(" HUP");
	if (p.revents & POLLNVAL)
		printf(" NVAL");
	putchar('\n');
}

static int do_counter(const char *dev, size_t total)
{
	int fd = open_dev(dev, O_RDONLY);
	uint8_t buf[65536];
	size_t got = 0;

	while (got < total) {
		size_t want = total - got < sizeof(buf) ? total - got : sizeof(buf);
		ssize_t n = read(fd, buf, want);

		if (n <= 0) {
			result("", n, errno);
			printf(" after %zu\n", got);
			return 1;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != (uint8_t)((got + i) % 256)) {
				printf("bad byte %zu: %#x\n", got + i, buf[i]);
				return 1;
			}
		}
		got += n;
	}
	printf("ok %zu\n", got);
	return 0;
}

static void touch(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY, 0644);

	if (fd < 0)
		die(path);
	close(fd);
}

static int do_hold(const char *dev, const char *marker)
{
	int fd = open_dev(dev, O_RDWR);
	char buf[64];
	ssize_t n;

	touch(marker);
	n = read(fd, buf, sizeof(buf));
	result("first", n, errno);
	putchar('\n');
	n = read(fd, buf, sizeof(buf));
	result("second", n, errno);
	putchar('\n');
	print_revents(fd);
	printf("closed %d\n", close(fd));
	return 0;
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
	default: return "?";
	}
}

static int do_sigio(const char *dev, long ms, const char *marker)
{
	int fd = open_dev(dev, O_RDWR | O_NONBLOCK);
	int sig = SIGRTMIN + 1;
	struct timespec end, now, left;
	siginfo_t si;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, sig);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		die("sigprocmask");
	if (fcntl(fd, F_SETOWN, getpid()) || fcntl(fd, F_SETSIG, sig) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC))
		die("fcntl");
	touch(marker);
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += ms / 1000;
	end.tv_nsec += (ms % 1000) * 1000000L;
	if (end.tv_nsec >= 1000000000L) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000L;
	}
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		left.tv_sec = end.tv_sec - now.tv_sec;
		left.tv_nsec = end.tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += 1000000000L;
		}
		if (left.tv_sec < 0)
			break;
		if (sigtimedwait(&set, &si, &left) < 0) {
			if (errno == EAGAIN)
				break;
			if (errno == EINTR)
				continue;
			die("sigtimedwait");
		}
		printf("sigio %s\n", code_name(si.si_code));
		fflush(stdout);
	}
	printf("done\n");
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: faulttest write|read|aread|awrite|poll|counter|hold|sigio DEV ...\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *sub, *dev;

	if (argc < 3)
		usage();
	alarm(WATCHDOG_SECONDS);	/* SIGALRM: exit status 142 via the shell */
	setvbuf(stdout, NULL, _IOLBF, 0);
	sub = argv[1];
	dev = argv[2];
	if (!strcmp(sub, "write") && argc >= 4)
		return do_rw(dev, strtoul(argv[3], NULL, 0),
			     argc > 4 ? strtoul(argv[4], NULL, 0) : 1, 1);
	if (!strcmp(sub, "read") && argc >= 4)
		return do_rw(dev, strtoul(argv[3], NULL, 0),
			     argc > 4 ? strtoul(argv[4], NULL, 0) : 1, 0);
	if (!strcmp(sub, "aread") && argc >= 4)
		return do_aio(dev, strtoul(argv[3], NULL, 0), 1, 0);
	if (!strcmp(sub, "awrite") && argc >= 4)
		return do_aio(dev, strtoul(argv[3], NULL, 0),
			      argc > 4 ? strtoul(argv[4], NULL, 0) : 1, 1);
	if (!strcmp(sub, "poll")) {
		print_revents(open_dev(dev, O_RDWR | O_NONBLOCK));
		return 0;
	}
	if (!strcmp(sub, "counter") && argc >= 4)
		return do_counter(dev, strtoul(argv[3], NULL, 0));
	if (!strcmp(sub, "hold") && argc >= 4)
		return do_hold(dev, argv[3]);
	if (!strcmp(sub, "sigio") && argc >= 5)
		return do_sigio(dev, strtol(argv[3], NULL, 0), argv[4]);
	usage();
	return 2;
}

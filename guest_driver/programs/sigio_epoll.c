// SPDX-License-Identifier: GPL-2.0
/*
 * sigio_epoll - a SIGIO-driven event loop on a fifolab FIFO, run inside the
 * guest: the SIGIO handler only writes to an eventfd; the main loop
 * epoll_waits on the eventfd and on each wakeup drains the device with
 * O_NONBLOCK reads until EAGAIN.
 *
 *   sigio_epoll DEV [--external N --ready FILE] [--poll-dev] [--counters]
 *
 *   Self mode: a writer child sends 6 bursts (1 B .. 80 KB, 115103 bytes in
 *   all: more than a 64 KiB FIFO holds, so the writer blocks until the loop
 *   drains) with 50 ms pauses.  --external N: nothing is written; once armed
 *   it prints "waiting" and creates FILE, and the harness injects N bytes
 *   from the host (the pattern (i * 7 + 3) % 251).  --poll-dev: the device
 *   fd is in the epoll set too (EPOLLIN), as a second wakeup source.
 *
 * All bytes must arrive intact and in order (each checked at its stream
 * offset), at least one wakeup must come from the eventfd (SIGIO), and the
 * loop must never wait 10 s for a wakeup while bytes are still due.  Prints
 * "ok sigio_epoll ..." and exits 0, or exits non-zero with a message on
 * stderr; a watchdog ends a hang (exit 3).
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static const char usage[] =
	"usage: sigio_epoll DEV [--external N --ready FILE] [--poll-dev] [--counters]\n";

static int efd = -1;
static volatile sig_atomic_t sigios;

static void on_sigio(int sig)
{
	uint64_t one = 1;
	int saved = errno;

	(void)sig;
	sigios++;
	if (write(efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already huge; the wakeup is there */
	}
	errno = saved;
}

static void writer(const char *dev, uint32_t seed)
{
	static const size_t bursts[] = { 1, 999, 4096, 30000, 80000, 7 };
	int fd = xopen(dev, O_WRONLY);
	uint64_t off = 0;

	for (size_t b = 0; b < sizeof(bursts) / sizeof(bursts[0]); b++) {
		sleep_ms(50);
		write_stream(fd, bursts[b], seed, off, "burst");
		off += bursts[b];
	}
	close(fd);
	exit(0);
}

#define SELF_TOTAL	(1 + 999 + 4096 + 30000 + 80000 + 7)

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_sigio, .sa_flags = SA_RESTART };
	struct epoll_event ee, evs[4];
	uint32_t seed;
	size_t total, got = 0;
	static uint8_t buf[65536];
	int fd, ep, wake_efd = 0, wake_dev = 0, drains = 0;
	pid_t child = -1;

	prog = "sigio_epoll";
	cmd = "";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, NULL, usage);
	watchdog(WATCHDOG_SECONDS);
	seed = opt.external ? HOST_SEED : 0x5e90;
	total = opt.external ? opt.external : SELF_TOTAL;

	drain(opt.dev);
	print_counters(opt.dev, "before");
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0)
		die_errno("eventfd");
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGIO, &sa, NULL))
		die_errno("sigaction(SIGIO)");
	fd = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	if (fcntl(fd, F_SETOWN, getpid()))
		die_errno("F_SETOWN");
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC))
		die_errno("F_SETFL O_ASYNC");
	if (!(fcntl(fd, F_GETFL) & O_ASYNC))
		die("O_ASYNC did not stick: the driver has no fasync");

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die_errno("epoll_create1");
	ee.events = EPOLLIN;
	ee.data.fd = efd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ee))
		die_errno("epoll_ctl(eventfd)");
	if (opt.poll_dev) {
		ee.events = EPOLLIN;
		ee.data.fd = fd;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee))
			die_errno("epoll_ctl(device): the driver has no poll");
	}

	if (opt.external) {
		armed();
	} else {
		child = xfork("writer");
		if (child == 0) {
			close(fd);
			writer(opt.dev, seed);
		}
	}

	while (got < total) {
		int n = epoll_wait(ep, evs, 4, EVENT_TIMEOUT_MS);
		ssize_t r;

		if (n < 0 && errno == EINTR)
			continue;	/* SIGIO itself may interrupt epoll_wait */
		if (n < 0)
			die_errno("epoll_wait");
		if (n == 0)
			die("no wakeup for %d ms with %zu of %zu bytes received (%d SIGIOs)",
			    EVENT_TIMEOUT_MS, got, total, (int)sigios);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == efd) {
				uint64_t cnt;

				if (read(efd, &cnt, sizeof(cnt)) == sizeof(cnt))
					wake_efd++;
				else if (errno != EAGAIN)
					die_errno("read eventfd");
			} else if (evs[i].data.fd == fd) {
				wake_dev++;
			} else {
				die("epoll event for unknown fd %d", evs[i].data.fd);
			}
		}
		drains++;
		while ((r = read(fd, buf, sizeof(buf))) > 0) {
			if (got + r > total)
				die("%zu bytes arrived, only %zu were sent", got + r, total);
			stream_check(buf, r, seed, got, "bytes drained");
			got += r;
		}
		if (r == 0)
			die("read returned 0 after %zu bytes", got);
		if (errno != EAGAIN)
			die_errno("O_NONBLOCK read after %zu bytes", got);
	}
	if (child > 0)
		wait_child(child, "writer");
	/*
	 * With --poll-dev the device fd may have woken us for every byte; the
	 * SIGIO those bytes caused must still come through the eventfd.
	 */
	while (!wake_efd) {
		int n = epoll_wait(ep, evs, 4, EVENT_TIMEOUT_MS);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die_errno("epoll_wait");
		if (n == 0)
			die("all bytes came, but no SIGIO -> eventfd wakeup within %d ms",
			    EVENT_TIMEOUT_MS);
		for (int i = 0; i < n; i++) {
			uint64_t cnt;

			if (evs[i].data.fd == efd && read(efd, &cnt, sizeof(cnt)) == sizeof(cnt))
				wake_efd++;
		}
	}
	if (!opt.external)
		expect_empty(opt.dev, "at the end");
	close(fd);
	print_counters(opt.dev, "after");
	printf("ok sigio_epoll: %zu bytes %s, %d SIGIOs, %d eventfd + %d device wakeups, "
	       "%d drains, crc32=%08x\n", total, opt.external ? "from the host" : "in 6 bursts",
	       (int)sigios, wake_efd, wake_dev, drains, stream_crc(seed, total));
	return 0;
}

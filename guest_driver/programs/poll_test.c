// SPDX-License-Identifier: GPL-2.0
/*
 * poll_test - poll/select/epoll readiness of a fifolab FIFO, run inside the
 * guest.
 *
 *   poll_test DEV states    poll() through the FIFO's states: empty ->
 *                           POLLOUT|POLLWRNORM, no POLLIN (and a 100 ms
 *                           poll for POLLIN times out; select() agrees);
 *                           after a write -> POLLIN|POLLRDNORM (and still
 *                           POLLOUT); filled (O_NONBLOCK writes until
 *                           EAGAIN) -> POLLIN, no POLLOUT (a 100 ms poll for
 *                           POLLOUT times out); 100 bytes read -> still no
 *                           POLLOUT (POLLOUT means room for PIPE_BUF bytes,
 *                           as on a pipe); PIPE_BUF bytes read ->
 *                           POLLOUT|POLLWRNORM; drained -> no POLLIN.  Never
 *                           POLLERR/POLLHUP/POLLNVAL.  All data verified.
 *   poll_test DEV wake [--external N --ready FILE]
 *                           a poll() blocked on an empty FIFO is woken with
 *                           POLLIN by another process's write (or by N host
 *                           bytes: the harness injects them once FILE exists;
 *                           then only the POLLIN part runs); a poll() for
 *                           POLLOUT blocked on a full FIFO is woken by
 *                           another process's read
 *   poll_test DEV epoll     edge-triggered epoll (EPOLLIN|EPOLLET) with data
 *                           written by another process: one event per burst;
 *                           no new event while unread data merely stays
 *                           (200 ms), a new one when more arrives; a
 *                           level-triggered epoll on the same fd reports
 *                           EPOLLIN every time until drained, then nothing
 *   poll_test DEV keys      (a wired device) a thread in epoll_wait() for
 *                           EPOLLIN is not woken by 14 writes: wake-ups carry
 *                           their events (the thread's voluntary context
 *                           switches, as the kernel counts them); skipped on
 *                           a loopback device
 *   poll_test DEV [all]     states, wake, epoll and keys, each in a fresh
 *                           process
 *   --counters              print the driver's sysfs counters before/after
 *
 * Readiness that must appear is waited for (bounded, 10 s); readiness that
 * must not be there is checked with a zero timeout and then a 100-200 ms
 * one.  Prints "ok <subcommand> ..." and exits 0, or exits non-zero with a
 * message on stderr; a watchdog ends a hang (exit 3).
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/select.h>

static const char *const subs[] = { "all", "states", "wake", "epoll", "keys", NULL };

static const char usage[] =
	"usage: poll_test DEV [all|states|wake|epoll|keys] [--counters]\n"
	"       poll_test DEV wake --external N --ready FILE\n";

#define BAD_EVENTS	(POLLERR | POLLHUP | POLLNVAL)

/* poll(@fd, @events, @ms): the revents (0 on timeout). */
static short poll1(int fd, short events, int ms, const char *what)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r;

	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		die_errno("poll (%s)", what);
	if (p.revents & BAD_EVENTS)
		die("%s: poll revents %#x has POLLERR/POLLHUP/POLLNVAL", what, p.revents);
	return r ? p.revents : 0;
}

/* poll must report all of @want within 10 s. */
static short expect_ready(int fd, short events, short want, const char *what)
{
	short rev = poll1(fd, events, EVENT_TIMEOUT_MS, what);

	if (!rev)
		die("%s: poll for %#x timed out after %d ms", what, events, EVENT_TIMEOUT_MS);
	if ((rev & want) != want)
		die("%s: poll revents %#x, expected %#x set", what, rev, want);
	return rev;
}

/* None of @bad may be reported: at once, nor within @ms. */
static void expect_not(int fd, short bad, int ms, const char *what)
{
	short rev = poll1(fd, bad, 0, what);

	if (rev & bad)
		die("%s: poll revents %#x, %#x must not be set", what, rev, bad);
	rev = poll1(fd, bad, ms, what);
	if (rev & bad)
		die("%s: poll for %#x returned revents %#x within %d ms", what, bad, rev, ms);
}

/*
 * Fill the FIFO through O_NONBLOCK @fd with stream @seed; the bytes.  The
 * writes are larger than PIPE_BUF, so the last one may be partial and the
 * FIFO fills to the byte (a write of at most PIPE_BUF bytes is atomic: it
 * would get EAGAIN with less room, as on a pipe).
 */
static size_t fill_fifo(int fd, uint32_t seed)
{
	uint8_t chunk[PIPE_BUF + 904];
	size_t filled = 0;

	for (;;) {
		ssize_t r;

		fill(chunk, sizeof(chunk), seed, filled);
		r = write(fd, chunk, sizeof(chunk));
		if (r < 0 && errno == EAGAIN)
			break;
		if (r <= 0)
			die_errno("O_NONBLOCK write after %zu bytes", filled);
		filled += r;
		if (filled > (64u << 20))
			die("wrote %zu bytes without EAGAIN", filled);
	}
	return filled;
}

/* O_NONBLOCK reads until EAGAIN: exactly @n bytes of @seed from @start. */
static void drain_expect(int fd, size_t n, uint32_t seed, uint64_t start, const char *what)
{
	static uint8_t buf[65536];
	size_t got = 0;
	ssize_t r;

	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		if (got + r > n)
			die("%s: read %zu bytes, expected %zu", what, got + r, n);
		stream_check(buf, r, seed, start + got, what);
		got += r;
	}
	if (r == 0 || errno != EAGAIN)
		die_errno("%s: read returned %zd after %zu bytes", what, r, got);
	if (got != n)
		die("%s: read %zu bytes, expected %zu", what, got, n);
}

/* ------------------------------------------------------------ states */

static int cmd_states(void)
{
	size_t depth = fifo_depth(opt.dev), filled;
	uint32_t seed = 0x5747;
	uint8_t buf[PIPE_BUF];
	struct timeval tv = { 0, 100000 };
	fd_set rfds, wfds;
	short rev;
	int fd, r;

	drain(opt.dev);
	fd = xopen(opt.dev, O_RDWR | O_NONBLOCK);

	/* empty */
	rev = poll1(fd, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM, 0, "empty FIFO");
	if ((rev & (POLLOUT | POLLWRNORM)) != (POLLOUT | POLLWRNORM))
		die("empty FIFO: revents %#x, expected POLLOUT|POLLWRNORM", rev);
	if (rev & (POLLIN | POLLRDNORM))
		die("empty FIFO: revents %#x has POLLIN/POLLRDNORM", rev);
	expect_not(fd, POLLIN | POLLRDNORM, 100, "empty FIFO");
	FD_ZERO(&rfds);
	FD_ZERO(&wfds);
	FD_SET(fd, &rfds);
	FD_SET(fd, &wfds);
	r = select(fd + 1, &rfds, &wfds, NULL, &tv);
	if (r != 1 || FD_ISSET(fd, &rfds) || !FD_ISSET(fd, &wfds))
		die("select on an empty FIFO: %d, readable %d, writable %d (expected writable only)",
		    r, FD_ISSET(fd, &rfds), FD_ISSET(fd, &wfds));

	/* after a write */
	fill(buf, 100, seed, 0);
	if (write(fd, buf, 100) != 100)
		die_errno("write of 100 bytes");
	rev = expect_ready(fd, POLLIN | POLLRDNORM, POLLIN | POLLRDNORM, "after a write");
	rev = poll1(fd, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM, 0, "after a write");
	if ((rev & (POLLIN | POLLOUT)) != (POLLIN | POLLOUT))
		die("100 bytes in the FIFO: revents %#x, expected POLLIN and POLLOUT", rev);

	/* full */
	filled = 100 + fill_fifo(fd, HOST_SEED);	/* a second stream after the 100 */
	if (depth && filled != depth)
		die("filled %zu bytes, the FIFO is %zu deep", filled, depth);
	expect_not(fd, POLLOUT | POLLWRNORM, 100, "full FIFO");
	rev = poll1(fd, POLLIN | POLLOUT, 0, "full FIFO");
	if (!(rev & POLLIN))
		die("full FIFO: revents %#x, no POLLIN", rev);
	FD_ZERO(&wfds);
	FD_SET(fd, &wfds);
	tv = (struct timeval){ 0, 100000 };
	if (select(fd + 1, NULL, &wfds, NULL, &tv) != 0)
		die("select: a full FIFO is writable");

	/* 100 bytes read: no room for an atomic write (PIPE_BUF) yet */
	if (read(fd, buf, 100) != 100)
		die_errno("read of 100 bytes");
	stream_check(buf, 100, seed, 0, "the first 100 bytes");
	expect_not(fd, POLLOUT | POLLWRNORM, 100, "100 bytes free");

	/* a read frees PIPE_BUF bytes: writable */
	if (read(fd, buf, PIPE_BUF - 100) != PIPE_BUF - 100)
		die_errno("read of %d bytes", PIPE_BUF - 100);
	stream_check(buf, PIPE_BUF - 100, HOST_SEED, 0, "the next bytes");
	expect_ready(fd, POLLOUT | POLLWRNORM, POLLOUT | POLLWRNORM,
		     "after PIPE_BUF bytes were read from a full FIFO");

	/* drained */
	drain_expect(fd, filled - PIPE_BUF, HOST_SEED, PIPE_BUF - 100, "the fill");
	expect_not(fd, POLLIN | POLLRDNORM, 100, "drained FIFO");
	rev = poll1(fd, POLLOUT, 0, "drained FIFO");
	if (!(rev & POLLOUT))
		die("drained FIFO: revents %#x, no POLLOUT", rev);
	close(fd);
	expect_empty(opt.dev, "at the end");
	printf("ok states: empty OUT, data IN|OUT, full IN only (%zu bytes), freed OUT, "
	       "drained OUT; select agrees\n", filled);
	return 0;
}

/* ------------------------------------------------------------ wake */

static int cmd_wake(void)
{
	uint32_t seed = opt.external ? HOST_SEED : 0x3a4e;
	size_t n = opt.external ? opt.external : 777, got = 0, filled;
	uint8_t *buf = xmalloc(n);
	double t0, dt;
	short rev;
	int fd;
	pid_t pid = -1;

	drain(opt.dev);
	fd = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	print_counters(opt.dev, "before");
	if (opt.external) {
		armed();
	} else {
		pid = xfork("writer");
		if (pid == 0) {
			int w = xopen(opt.dev, O_WRONLY);

			sleep_ms(200);
			write_stream(w, n, seed, 0, "write");
			exit(0);
		}
	}
	t0 = now();
	rev = expect_ready(fd, POLLIN | POLLRDNORM, POLLIN | POLLRDNORM,
			   "poll blocked on an empty FIFO");
	dt = now() - t0;
	if (!opt.external && dt < 0.1)
		die("poll returned POLLIN after %.0f ms, before the write (200 ms)", dt * 1e3);
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);

		if (r > 0) {
			stream_check(buf + got, r, seed, got, "bytes after the wakeup");
			got += r;
			continue;
		}
		if (r == 0 || errno != EAGAIN)
			die_errno("read after the wakeup");
		if (!got)
			die("poll said POLLIN (%#x) but a read found nothing", rev);
		expect_ready(fd, POLLIN, POLLIN, "more bytes");
	}
	if (pid > 0)
		wait_child(pid, "writer");
	if (opt.external) {
		print_counters(opt.dev, "after");
		printf("ok wake: poll woken by %zu host bytes, crc32=%08x\n", n, crc32(buf, n));
		return 0;
	}

	/* POLLOUT: a full FIFO, another process reads */
	close(fd);
	fd = xopen(opt.dev, O_WRONLY | O_NONBLOCK);
	filled = fill_fifo(fd, seed + 1);
	expect_not(fd, POLLOUT, 50, "full FIFO");
	pid = xfork("reader");
	if (pid == 0) {
		int r = xopen(opt.dev, O_RDONLY);

		sleep_ms(200);
		/* room for an atomic write: POLLOUT */
		read_stream(r, PIPE_BUF, seed + 1, 0, "read from the full FIFO");
		exit(0);
	}
	t0 = now();
	expect_ready(fd, POLLOUT | POLLWRNORM, POLLOUT | POLLWRNORM, "poll blocked on a full FIFO");
	dt = now() - t0;
	wait_child(pid, "reader");
	if (dt < 0.1)
		die("poll returned POLLOUT after %.0f ms, before the read (200 ms)", dt * 1e3);
	close(fd);
	fd = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	drain_expect(fd, filled - PIPE_BUF, seed + 1, PIPE_BUF, "the rest of the fill");
	close(fd);
	expect_empty(opt.dev, "at the end");
	print_counters(opt.dev, "after");
	printf("ok wake: POLLIN by another process's write, POLLOUT by another process's read\n");
	return 0;
}

/* ------------------------------------------------------------ epoll */

static int ep_wait(int ep, int ms, uint32_t *events, const char *what)
{
	struct epoll_event ev[4];
	int n;

	do
		n = epoll_wait(ep, ev, 4, ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		die_errno("epoll_wait (%s)", what);
	if (n > 1)
		die("%s: %d events for one fd", what, n);
	*events = n ? ev[0].events : 0;
	if (n && (ev[0].events & (EPOLLERR | EPOLLHUP)))
		die("%s: events %#x have EPOLLERR/EPOLLHUP", what, ev[0].events);
	return n;
}

static int cmd_epoll(void)
{
	uint32_t seed = 0xe9e7, events;
	struct epoll_event ee = { .events = EPOLLIN | EPOLLET };
	int fd, et, lt, cmdp[2], donep[2], extra = 0;
	size_t total = 0;
	char c;
	pid_t pid;

	drain(opt.dev);
	if (pipe(cmdp) || pipe(donep))
		die_errno("pipe");
	pid = xfork("writer");
	if (pid == 0) {
		int w = xopen(opt.dev, O_WRONLY);
		uint64_t off = 0;
		size_t sz;

		close(cmdp[1]);
		close(donep[0]);
		while (read(cmdp[0], &c, 1) == 1) {
			sz = c == '1' ? 1000 : 2000;
			write_stream(w, sz, seed, off, "burst");
			off += sz;
			if (write(donep[1], "d", 1) != 1)
				die_errno("pipe");
		}
		exit(0);
	}
	close(cmdp[0]);
	close(donep[1]);

	fd = xopen(opt.dev, O_RDONLY | O_NONBLOCK);
	et = epoll_create1(0);
	lt = epoll_create1(0);
	if (et < 0 || lt < 0)
		die_errno("epoll_create1");
	ee.data.fd = fd;
	if (epoll_ctl(et, EPOLL_CTL_ADD, fd, &ee))
		die_errno("epoll_ctl(EPOLLET): the driver has no poll?");
	ee.events = EPOLLIN;
	if (epoll_ctl(lt, EPOLL_CTL_ADD, fd, &ee))
		die_errno("epoll_ctl");
	if (ep_wait(et, 0, &events, "empty, ET") || ep_wait(lt, 100, &events, "empty, LT"))
		die("epoll reports events %#x on an empty FIFO", events);

	for (int burst = 1; burst <= 2; burst++) {
		char what[64];

		snprintf(what, sizeof(what), "ET, burst %d", burst);
		if (write(cmdp[1], burst == 1 ? "1" : "2", 1) != 1)
			die_errno("pipe");
		if (!ep_wait(et, EVENT_TIMEOUT_MS, &events, what))
			die("%s: no EPOLLIN event within %d ms", what, EVENT_TIMEOUT_MS);
		if (!(events & EPOLLIN))
			die("%s: events %#x, no EPOLLIN", what, events);
		if (read(donep[0], &c, 1) != 1)
			die("the writer died");
		total += burst == 1 ? 1000 : 2000;
		/* wakeups still in flight for this burst may add an event */
		sleep_ms(100);
		extra += ep_wait(et, 0, &events, what);
		/* the data stays unread: no new edge, no event */
		if (ep_wait(et, 200, &events, what))
			die("%s: edge-triggered epoll reported %#x again with no new data", what,
			    events);
		/* level-triggered: reported every time */
		for (int k = 0; k < 2; k++)
			if (!ep_wait(lt, 0, &events, "LT") || !(events & EPOLLIN))
				die("level-triggered epoll: no EPOLLIN with %zu bytes unread", total);
	}
	close(cmdp[1]);
	wait_child(pid, "writer");
	drain_expect(fd, total, seed, 0, "both bursts");
	if (ep_wait(lt, 100, &events, "LT drained"))
		die("level-triggered epoll reports %#x on a drained FIFO", events);
	if (ep_wait(et, 0, &events, "ET drained") && (events & EPOLLIN))
		warn("edge-triggered epoll reported %#x after the drain", events);
	close(fd);
	expect_empty(opt.dev, "at the end");
	printf("ok epoll: ET one event per burst (%d extra), none while data merely stays; "
	       "LT every time until drained; %zu bytes\n", extra, total);
	return 0;
}

/* ------------------------------------------------------------ keys */

struct keys_waiter {
	int ep;
	pid_t tid;
	volatile int ready;
	int got;
};

static void *keys_wait(void *arg)
{
	struct keys_waiter *w = arg;
	struct epoll_event e;

	w->tid = gettid();
	w->ready = 1;
	w->got = epoll_wait(w->ep, &e, 1, EVENT_TIMEOUT_MS);
	return NULL;
}

/* The kernel's count of the times thread @tid went to sleep and was woken. */
static long voluntary_switches(pid_t tid)
{
	char path[64], line[256];
	long n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		die_errno("%s", path);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
			break;
	fclose(f);
	if (n < 0)
		die("%s: no voluntary_ctxt_switches", path);
	return n;
}

/*
 * keys: a thread blocked in epoll_wait() for EPOLLIN on the empty read
 * FIFO of a WIRED device is not woken by what happens on the write side:
 * the driver's wake-ups carry their events and epoll drops the others.
 * The oracle is the kernel's own voluntary_ctxt_switches of that thread.
 * On a loopback device a write makes the FIFO readable: skipped.
 */
static int cmd_keys(void)
{
	struct epoll_event ee = { .events = EPOLLIN };
	struct keys_waiter w = { 0 };
	uint8_t chunk[PIPE_BUF];
	long before, after;
	pthread_t t;
	int fd;

	fd = xopen(opt.dev, O_RDWR);
	fill(chunk, 1, 0x4b, 0);
	if (write(fd, chunk, 1) != 1)
		die_errno("write of 1 byte");
	if (poll1(fd, POLLIN, 100, "after a 1-byte write") & POLLIN) {
		drain(opt.dev);
		printf("skip keys: a loopback device (a write makes it readable)\n");
		return 0;
	}
	w.ep = epoll_create1(0);
	if (w.ep < 0 || epoll_ctl(w.ep, EPOLL_CTL_ADD, fd, &ee))
		die_errno("epoll");
	if (pthread_create(&t, NULL, keys_wait, &w))
		die("pthread_create");
	while (!w.ready)
		sleep_ms(1);
	sleep_ms(200);			/* asleep in epoll_wait() now */
	before = voluntary_switches(w.tid);
	for (int i = 0; i < 14; i++) {	/* 14 TX_DONE, none of them EPOLLIN */
		fill(chunk, sizeof(chunk), 0x4b, 1 + (uint64_t)i * sizeof(chunk));
		if (write(fd, chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
			die_errno("write %d", i);
	}
	sleep_ms(200);
	after = voluntary_switches(w.tid);
	if (w.got)
		die("epoll_wait() for EPOLLIN returned %d after writes", w.got);
	if (after - before > 2)
		die("the EPOLLIN waiter was woken %ld times by 14 writes", after - before);
	pthread_cancel(t);
	pthread_join(t, NULL);
	close(w.ep);
	close(fd);
	printf("ok keys: an EPOLLIN waiter woken %ld times by 14 writes (%zu bytes to the host)\n",
	       after - before, 1 + 14 * sizeof(chunk));
	return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	const char *sub;
	int ret;

	prog = "poll_test";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, subs, usage);
	sub = opt.sub ? opt.sub : "all";
	cmd = sub;
	if (opt.external && strcmp(sub, "wake"))
		die("--external is for the wake subcommand");
	watchdog(WATCHDOG_SECONDS);
	if (!strcmp(sub, "all"))
		return run_all(subs);
	if (!strcmp(sub, "wake"))
		return cmd_wake();
	print_counters(opt.dev, "before");
	if (!strcmp(sub, "states"))
		ret = cmd_states();
	else if (!strcmp(sub, "keys"))
		ret = cmd_keys();
	else
		ret = cmd_epoll();
	print_counters(opt.dev, "after");
	return ret;
}

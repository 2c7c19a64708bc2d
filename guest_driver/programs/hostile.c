// SPDX-License-Identifier: GPL-2.0
/*
 * hostile - a hostile guest: drive the fifolab device's registers and queues
 * straight from user space, with random and adversarial values, for N
 * seconds (GitHub issue 13, item 4b; the host half is harness/hostile.py,
 * `fifolab fuzz --device`).
 *
 *   hostile SECONDS SEED [--ram MIB] [--bdf DDDD:BB:DD.F]
 *
 * As root it finds the fifolab device (ivshmem-doorbell 1af4:1110 whose BAR2
 * starts with MAGIC; the first one, or --bdf), unbinds its driver, enables
 * the function, maps BAR2 (/sys/bus/pci/devices/BDF/resource2: registers
 * and queues) and BAR0 (resource0: ivshmem's Doorbell at offset 12), resets
 * the device and then, op after op drawn from SEED, does what a broken or
 * malicious driver could do (the table `ops` below):
 *
 *   loopback      valid traffic: a pattern through TX, read back through RX,
 *                 bytes that match counted -- "clean" right after a reset,
 *                 "dirty" in whatever state the other ops left (a mismatch
 *                 there is legitimate: garbage interleaves; only reported)
 *   random-desc   random descriptors (address, length, flags, next) posted
 *   max-chain     MAX_SEGS-descriptor chains whose segments name the same RAM
 *                 and add up to more than 1 GiB, more than 4 GiB, 65 GiB
 *   ring-walk     every head of the TX ring posted, each a 261-descriptor
 *                 walk (the heaviest fetch a guest can ask for)
 *   bad-chain     chains of MAX_SEGS + 1, loops, next out of range, len 0
 *   avail-jump    AVAIL_IDX moved by +2000, QUEUE_SIZE + 1, 2^31, -1
 *   repost        heads the device still holds posted again
 *   control-storm CONTROL written with reset/enable/garbage, rung each time
 *   int-garbage   INT_ACKED and INT_ENABLE garbage
 *   cancel        CANCEL set on posted and random heads
 *   doorbell-storm hundreds of doorbells, odd vectors and peers among them
 *   ro-garbage    garbage in the device's own registers and used rings
 *
 * The device writes into guest memory only through RX descriptors, so every
 * RX descriptor this program writes names either its own mlocked buffer
 * (physical addresses from /proc/self/pagemap) or no RAM at all (past the
 * end of RAM, with no wrap-around into it); set_desc() refuses anything
 * else.  TX descriptors may name any RAM: the device only reads it.  At
 * start every RX descriptor is overwritten, so that no stale one of the
 * driver's points at freed memory.
 *
 * At the end (and on SIGTERM, SIGINT or the watchdog: SECONDS + 60) it
 * leaves the device reset (AVAIL_IDX = 0, CONTROL = RESET, rung), restores
 * the identification registers it may have overwritten, disables the
 * function and binds the driver again if one was bound.  Then it prints one
 * line of JSON:
 *
 *   {"seed":S,"seconds":T,"bdf":..,"driver":..,"ops":N,"doorbells":N,
 *    "kinds":{"loopback":N,...},"loop":{...},"err_codes":{"1":N,...},
 *    "ready_lost":{kind:N},"err_count":N,"reset_count":N,"rebound":true,...}
 *
 * Exit status: 0 when the run completed (whatever the device did), 1 when it
 * could not start or could not put the device back, 2 on a usage error, 3
 * on the watchdog.
 */
#include "common.h"

#include <dirent.h>
#include <linux/types.h>

#define BIT(n)	(1u << (n))
#include "../fifolab_hw.h"	/* the device's register map: one spec */

#define QSIZE		FIFOLAB_QUEUE_SIZE
#define TXQ		FIFOLAB_QUEUE_TX
#define RXQ		FIFOLAB_QUEUE_RX
#define PAGE		4096ull
#define RXBUF_SIZE	(8u << 20)	/* the RX buffers (the device writes here) */
#define TXBUF_SIZE	(1u << 20)	/* the TX buffers (loopback patterns) */
#define LOOP_AREA	(64u << 10)	/* RX buffer bytes reserved for loopback */
#define LOOP_MAX	16384		/* most bytes one loopback moves */
#define WAIT_MS		300		/* a loopback waits this long for data */
#define RESET_WAIT_MS	1000		/* a reset or enable waits this long */
#define GRACE_SECONDS	60		/* watchdog: SECONDS + this */
#define TERABYTE	(1ull << 40)

/* ------------------------------------------------------------ state */

static volatile uint8_t *bar2;
static volatile uint32_t *bar0;		/* ivshmem registers */
static uint32_t peer;			/* DEVICE_PEER, read once */
static uint32_t max_segs;
static uint32_t identity[8];		/* MAGIC .. MAX_SEGS as found */
static uint64_t ram_limit;		/* no RAM at or above this address */
static uint64_t ram_low;		/* RAM [0, ram_low) exists for certain */
static char bdf[64], drv[64];
static int was_bound, enabled_by_us;

static uint32_t avail[2], used_seen[2];
static uint64_t s;			/* xorshift state */

struct buf {
	uint8_t *p;
	size_t size;
	size_t npages;
	uint64_t *phys;			/* per page */
	size_t *run;			/* contiguous bytes from each page's start */
};
static struct buf rxb, txb;
static size_t big_page;			/* the RX page (outside the loop area) that
					 * starts the longest physical run */

struct range { uint64_t start, len; };
static struct range *rx_ranges;		/* the RX buffer's physical runs, sorted */
static size_t n_rx_ranges;

struct seg { uint64_t addr; uint32_t len; };

static unsigned long ops, doorbells, reset_timeouts, enable_timeouts;
static unsigned long err_codes[16], err_other;
static uint32_t last_err_count;
static uint64_t loop_runs, loop_bytes, loop_got, loop_matched, loop_timeouts;
static uint64_t clean_runs, clean_bytes, clean_got, clean_matched, clean_timeouts;
static uint64_t loop_seq;

/* ------------------------------------------------------------ helpers */

static uint64_t rnd(void)
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s * 0x2545F4914F6CDD1Dull;
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static int chance(int percent)
{
	return (int)below(100) < percent;
}

static uint32_t r32(uint32_t off)
{
	return *(volatile uint32_t *)(bar2 + off);
}

static void w32(uint32_t off, uint32_t v)
{
	*(volatile uint32_t *)(bar2 + off) = v;
}

static void w64(uint32_t off, uint64_t v)
{
	*(volatile uint64_t *)(bar2 + off) = v;
}

static void w16(uint32_t off, uint16_t v)
{
	*(volatile uint16_t *)(bar2 + off) = v;
}

static uint32_t qbase(int q)
{
	return FIFOLAB_QUEUE_BASE + q * FIFOLAB_QUEUE_STRIDE;
}

static uint32_t desc_off(int q, uint32_t i)
{
	return qbase(q) + FIFOLAB_Q_DESC_OFF + (i % QSIZE) * FIFOLAB_DESC_SIZE;
}

static void ring_raw(uint32_t value)
{
	__sync_synchronize();
	bar0[IVSHMEM_REG_DOORBELL / 4] = value;
	doorbells++;
}

static void ring(void)
{
	ring_raw(peer << 16 | FIFOLAB_DOORBELL_VECTOR);
}

static long ms_since(double t0)
{
	return (long)((now() - t0) * 1000);
}

static void pause_us(unsigned int us)
{
	struct timespec ts = { 0, us * 1000L };

	nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------ sysfs */

static int sysfs_write(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, value, strlen(value));
	close(fd);
	return n == (ssize_t)strlen(value) ? 0 : -1;
}

static unsigned long sysfs_hex(const char *dir, const char *name)
{
	char path[PATH_MAX], text[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(text, sizeof(text), f))
		text[0] = 0;
	fclose(f);
	return strtoul(text, NULL, 16);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first ivshmem-doorbell function (sorted by address), if none given. */
static void find_device(void)
{
	const char *root = "/sys/bus/pci/devices";
	DIR *d;
	struct dirent *e;
	char *names[256];
	int n = 0;

	if (bdf[0])
		return;
	d = opendir(root);
	if (!d)
		die_errno("opendir %s", root);
	while ((e = readdir(d)) && n < 256) {
		char dir[PATH_MAX];

		if (e->d_name[0] == '.')
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", root, e->d_name);
		if (sysfs_hex(dir, "vendor") == 0x1af4 && sysfs_hex(dir, "device") == 0x1110)
			names[n++] = strdup(e->d_name);
	}
	closedir(d);
	if (!n)
		die("no ivshmem-doorbell (1af4:1110) device in %s", root);
	qsort(names, n, sizeof(names[0]), cmp_name);
	snprintf(bdf, sizeof(bdf), "%s", names[0]);
	for (int i = 0; i < n; i++)
		free(names[i]);
}

static void unbind(void)
{
	char link[PATH_MAX], target[PATH_MAX], path[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/sys/bus/pci/devices/%s/driver", bdf);
	n = readlink(link, target, sizeof(target) - 1);
	if (n > 0) {
		target[n] = 0;
		snprintf(drv, sizeof(drv), "%.63s", strrchr(target, '/') ? strrchr(target, '/') + 1
								 : target);
		snprintf(path, sizeof(path), "/sys/bus/pci/drivers/%s/unbind", drv);
		if (sysfs_write(path, bdf))
			die_errno("unbinding %s from %s", bdf, drv);
		was_bound = 1;
	}
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/enable", bdf);
	enabled_by_us = sysfs_write(path, "1") == 0;
}

/* Async-signal-safe: the watchdog and SIGTERM call it too. */
static int rebind(void)
{
	char path[PATH_MAX];
	int ok = 1;

	if (enabled_by_us) {
		/* the driver's probe enables the function itself */
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/enable", bdf);
		sysfs_write(path, "0");
		enabled_by_us = 0;
	}
	if (was_bound) {
		snprintf(path, sizeof(path), "/sys/bus/pci/drivers/%s/bind", drv);
		ok = sysfs_write(path, bdf) == 0;
		was_bound = 0;
	}
	return ok;
}

static void *map_resource(int bar, size_t len)
{
	char path[PATH_MAX];
	int fd;
	void *p;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource%d", bdf, bar);
	fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0)
		die_errno("open %s", path);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die_errno("mmap %s (%zu bytes)", path, len);
	close(fd);
	return p;
}

/* ------------------------------------------------------------ guest memory */

/* The end of the last "System RAM" range of /proc/iomem (root sees addresses). */
static uint64_t iomem_ram_end(void)
{
	FILE *f = fopen("/proc/iomem", "r");
	char line[256];
	uint64_t end = 0;

	if (!f)
		die_errno("open /proc/iomem");
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b;

		if (strstr(line, "System RAM") && sscanf(line, " %llx-%llx", &a, &b) == 2 &&
		    b + 1 > end)
			end = b + 1;
	}
	fclose(f);
	if (!end)
		die("no System RAM in /proc/iomem (not root?)");
	return end;
}

static void buf_alloc(struct buf *b, size_t size)
{
	size_t align = 2u << 20;	/* THP-sized, for long physical runs */
	uint8_t *raw = mmap(NULL, size + align, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int pm;

	if (raw == MAP_FAILED)
		die_errno("mmap %zu bytes", size);
	b->p = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	b->size = size;
	b->npages = size / PAGE;
	madvise(b->p, size, MADV_HUGEPAGE);
	memset(b->p, 0, size);
	if (mlock(b->p, size))
		die_errno("mlock %zu bytes", size);
	b->phys = xmalloc(b->npages * sizeof(*b->phys));
	b->run = xmalloc(b->npages * sizeof(*b->run));
	pm = open("/proc/self/pagemap", O_RDONLY);
	if (pm < 0)
		die_errno("open /proc/self/pagemap");
	for (size_t i = 0; i < b->npages; i++) {
		uint64_t e;
		off_t at = (off_t)(((uintptr_t)b->p / PAGE + i) * 8);

		if (pread(pm, &e, 8, at) != 8)
			die_errno("pread pagemap");
		if (!(e >> 63) || !(e & ((1ull << 55) - 1)))
			die("page %zu of a locked buffer has no frame in pagemap (not root?)", i);
		b->phys[i] = (e & ((1ull << 55) - 1)) * PAGE;
		if (b->phys[i] + PAGE > ram_low)
			die("page at %#llx is past RAM's end %#llx",
			    (unsigned long long)b->phys[i], (unsigned long long)ram_low);
	}
	close(pm);
	for (size_t i = b->npages; i-- > 0;)
		b->run[i] = PAGE + (i + 1 < b->npages && b->phys[i + 1] == b->phys[i] + PAGE
				    ? b->run[i + 1] : 0);
}

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void index_rx(void)
{
	rx_ranges = xmalloc(rxb.npages * sizeof(*rx_ranges));
	for (size_t i = 0; i < rxb.npages;) {
		rx_ranges[n_rx_ranges++] = (struct range){ rxb.phys[i], rxb.run[i] };
		i += rxb.run[i] / PAGE;
	}
	big_page = LOOP_AREA / PAGE;
	for (size_t i = big_page; i < rxb.npages; i++)
		if (rxb.run[i] > rxb.run[big_page])
			big_page = i;
	qsort(rx_ranges, n_rx_ranges, sizeof(*rx_ranges), cmp_range);
}

/*
 * May the device write [addr, addr + len)?  Only our RX buffer, or no RAM at
 * all: past ram_limit without wrapping around (or wrapping into page 0 only,
 * which Linux never uses: a device that forgot the carry is caught there).
 */
static int rx_safe(uint64_t addr, uint32_t len)
{
	size_t lo = 0, hi = n_rx_ranges;

	if (!len)
		return 1;
	if (addr >= ram_limit)
		return addr + len > addr || addr + len <= PAGE;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (rx_ranges[mid].start <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo)
		return 0;
	return addr + len <= rx_ranges[lo - 1].start + rx_ranges[lo - 1].len;
}

/* ------------------------------------------------------------ descriptors */

static void set_desc(int q, uint32_t i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint32_t o = desc_off(q, i);

	if (q == RXQ && !rx_safe(addr, len))
		die("bug: RX descriptor %u would let the device write %#llx+%u", i % QSIZE,
		    (unsigned long long)addr, len);
	w64(o + FIFOLAB_DESC_ADDR, addr);
	w32(o + FIFOLAB_DESC_LEN, len);
	w16(o + FIFOLAB_DESC_FLAGS, flags);
	w16(o + FIFOLAB_DESC_NEXT, next);
}

static void set_flags(int q, uint32_t i, uint16_t flags)
{
	w16(desc_off(q, i) + FIFOLAB_DESC_FLAGS, flags);
}

static uint16_t get_flags(int q, uint32_t i)
{
	return *(volatile uint16_t *)(bar2 + desc_off(q, i) + FIFOLAB_DESC_FLAGS);
}

/* Put @head in the next avail slot and publish it (no doorbell). */
static void post(int q, uint32_t head)
{
	w16(qbase(q) + FIFOLAB_Q_AVAIL_OFF + (avail[q] % QSIZE) * 2, (uint16_t)head);
	__sync_synchronize();
	w32(FIFOLAB_QCTL(q, FIFOLAB_QCTL_AVAIL_IDX), ++avail[q]);
	__sync_synchronize();
}

/* Descriptors first..first+n-1 (mod QSIZE) as one chain; returns the head. */
static uint32_t chain(int q, uint32_t first, const struct seg *segs, int n, uint16_t head_flags)
{
	for (int k = 0; k < n; k++)
		set_desc(q, first + k, segs[k].addr, segs[k].len,
			 (k + 1 < n ? FIFOLAB_DESC_F_NEXT : 0) | (k ? 0 : head_flags),
			 (uint16_t)((first + k + 1) % QSIZE));
	return first % QSIZE;
}

/* Segments covering [off, off + n) of @b along its physical runs; pieces cut
 * at random when @split.  Returns how many (at most @max: the rest is left
 * out, so the total may be less than n). */
static int buf_segs(const struct buf *b, size_t off, size_t n, struct seg *out, int max,
		    int split)
{
	int k = 0;

	while (n && k < max) {
		size_t p = off / PAGE, in = off % PAGE;
		size_t run = b->run[p] - in;
		size_t piece = n < run ? n : run;

		if (split && piece > 1 && chance(30))
			piece = 1 + below(piece);
		out[k++] = (struct seg){ b->phys[p] + in, (uint32_t)piece };
		off += piece;
		n -= piece;
	}
	return k;
}

/* A random piece of the RX buffer outside the loopback area. */
static struct seg rx_piece(size_t most)
{
	size_t p = LOOP_AREA / PAGE + below(rxb.npages - LOOP_AREA / PAGE);
	size_t in = below(PAGE);
	size_t room = rxb.run[p] - in;

	if (most && most < room)
		room = most;
	return (struct seg){ rxb.phys[p] + in, (uint32_t)(1 + below(room)) };
}

/* An address where no RAM is, for the device to reject. */
static struct seg no_ram(int rx)
{
	uint64_t len = chance(20) ? 0xFFFFFFFFu : 1 + below(1 << 20);

	switch (below(rx ? 4 : 5)) {
	case 0:		/* just past the end */
		return (struct seg){ ram_limit + below(1 << 20), (uint32_t)len };
	case 1:		/* far away */
		return (struct seg){ TERABYTE + below(TERABYTE), (uint32_t)len };
	case 2:		/* the top of the address space, wrapping into page 0 */
		{
			uint64_t k = 1 + below(PAGE);

			return (struct seg){ -k, (uint32_t)(k + below(PAGE - k + 1)) };
		}
	case 3:		/* any 64-bit value past RAM */
		{
			uint64_t a = rnd() >> 2 | 1ull << 62;	/* < 2^63: no wrap */

			return (struct seg){ a, (uint32_t)len };
		}
	default:	/* TX only: starts in RAM, ends past it */
		return (struct seg){ ram_limit - 1 - below(PAGE),
				     (uint32_t)(2 * PAGE + below(1 << 20)) };
	}
}

/* Any address at all for a TX segment: RAM (the device only reads it) or not. */
static struct seg tx_any(void)
{
	if (chance(50)) {
		uint64_t a = below(ram_low - PAGE);
		uint64_t room = ram_low - a;

		if (room > 1u << 24)
			room = 1u << 24;
		return (struct seg){ a, (uint32_t)(1 + below(room)) };
	}
	return no_ram(0);
}

static struct seg any_seg(int q)
{
	if (q == RXQ)
		return chance(60) ? rx_piece(0) : no_ram(1);
	return tx_any();
}

/* ------------------------------------------------------------ device */

static uint32_t used_idx(int q)
{
	return r32(FIFOLAB_QCTL(q, FIFOLAB_QCTL_USED_IDX));
}

static int wait_reg_change(uint32_t off, uint32_t before, unsigned int ms)
{
	double t0 = now();

	while (r32(off) == before) {
		if (ms_since(t0) > (long)ms)
			return 0;
		pause_us(100);
	}
	return 1;
}

/* Datasheet section 3: AVAIL_IDX = 0, CONTROL = RESET, ring, wait. */
static int dev_reset(void)
{
	uint32_t before = r32(FIFOLAB_REG_RESET_COUNT);

	w32(FIFOLAB_QCTL(TXQ, FIFOLAB_QCTL_AVAIL_IDX), 0);
	w32(FIFOLAB_QCTL(RXQ, FIFOLAB_QCTL_AVAIL_IDX), 0);
	avail[TXQ] = avail[RXQ] = 0;
	used_seen[TXQ] = used_seen[RXQ] = 0;
	w32(FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_RESET);
	ring();
	if (!wait_reg_change(FIFOLAB_REG_RESET_COUNT, before, RESET_WAIT_MS)) {
		reset_timeouts++;
		return 0;
	}
	return 1;
}

static int ready(void)
{
	return r32(FIFOLAB_REG_STATUS) & FIFOLAB_STS_READY;
}

static int dev_enable(uint32_t int_enable)
{
	double t0 = now();

	w32(FIFOLAB_REG_INT_ACKED, r32(FIFOLAB_REG_INT_RAISED));
	w32(FIFOLAB_REG_INT_ENABLE, int_enable);
	w32(FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_ENABLE);
	ring();
	while (!ready()) {
		if (ms_since(t0) > RESET_WAIT_MS) {
			enable_timeouts++;
			return 0;
		}
		pause_us(100);
	}
	return 1;
}

/* The used entry of @head on @q, within @ms; its length, or -1. */
static long wait_used(int q, uint32_t head, unsigned int ms, uint32_t *status)
{
	double t0 = now();

	for (;;) {
		uint32_t u = used_idx(q);

		if (u - used_seen[q] > QSIZE)
			used_seen[q] = u - QSIZE;
		for (; used_seen[q] != u; used_seen[q]++) {
			uint32_t o = qbase(q) + FIFOLAB_Q_USED_OFF +
				     (used_seen[q] % QSIZE) * FIFOLAB_USED_SIZE;

			if (r32(o + FIFOLAB_USED_ID) == head) {
				*status = r32(o + FIFOLAB_USED_STATUS);
				used_seen[q]++;
				return r32(o + FIFOLAB_USED_LEN);
			}
		}
		if (ms_since(t0) > (long)ms)
			return -1;
		pause_us(50);
	}
}

/* Sample ERR_COUNT/ERR_CODE after each op: which errors the device reported. */
static void note_errors(void)
{
	uint32_t c = r32(FIFOLAB_REG_ERR_COUNT);

	if (c != last_err_count) {
		uint32_t code = r32(FIFOLAB_REG_ERR_CODE);

		if (code < 16)
			err_codes[code]++;
		else
			err_other++;
		last_err_count = c;
	}
}

/* ------------------------------------------------------------ the ops */

/* Valid traffic: a pattern through TX, read back through RX, bytes compared. */
static void op_loopback(void)
{
	static struct seg segs[FIFOLAB_MAX_SEGS];
	int clean = chance(50) || !ready();
	size_t n = 1 + below(LOOP_MAX), got = 0, matched = 0;
	uint32_t seed = (uint32_t)(s >> 7) | 1;
	uint32_t first, head, st;
	size_t toff = below(PAGE);
	int k, rounds = 0, timed_out = 0;

	if (clean && !(dev_reset() && dev_enable(FIFOLAB_INT_ALL)))
		return;
	loop_seq++;
	fill(txb.p + toff, n, seed, 0);
	memset(rxb.p, 0, LOOP_AREA);
	__sync_synchronize();
	k = buf_segs(&txb, toff, n, segs, (int)max_segs, 1);
	first = (uint32_t)below(QSIZE);
	post(TXQ, chain(TXQ, first, segs, k, 0));
	ring();
	n = 0;
	for (int i = 0; i < k; i++)
		n += segs[i].len;
	while (got < n && rounds++ < 8) {
		long len;

		k = buf_segs(&rxb, got, n - got, segs, (int)max_segs, 1);
		first = (uint32_t)below(QSIZE);
		head = chain(RXQ, first, segs, k, 0);
		post(RXQ, head);
		ring();
		len = wait_used(RXQ, head, WAIT_MS, &st);
		if (len < 0) {
			timed_out = 1;
			break;
		}
		if (st != FIFOLAB_ST_OK || len == 0)
			break;
		got += (size_t)len > n - got ? n - got : (size_t)len;
	}
	for (size_t i = 0; i < got; i++)
		matched += rxb.p[i] == pat(seed, i);
	loop_runs++;
	loop_bytes += n;
	loop_got += got;
	loop_matched += matched;
	loop_timeouts += timed_out;
	if (clean) {
		clean_runs++;
		clean_bytes += n;
		clean_got += got;
		clean_matched += matched;
		clean_timeouts += timed_out;
	}
}

static void op_random_desc(void)
{
	int q = (int)below(2);
	int n = 1 + (int)below(32);

	for (int i = 0; i < n; i++) {
		struct seg g = any_seg(q);
		uint16_t flags = chance(50) ? (uint16_t)rnd() : (uint16_t)below(8);
		uint16_t next = chance(80) ? (uint16_t)below(QSIZE) : (uint16_t)rnd();

		if (chance(5))
			g.len = 0;
		set_desc(q, (uint32_t)below(QSIZE), g.addr, g.len, flags, next);
	}
	for (int i = 1 + (int)below(8); i > 0; i--)
		post(q, chance(95) ? (uint32_t)below(QSIZE) : (uint32_t)(uint16_t)rnd());
	ring();
}

/* MAX_SEGS segments naming the same memory: totals past 1 GiB, 4 GiB, 65 GiB. */
static void op_max_chain(void)
{
	static struct seg segs[FIFOLAB_MAX_SEGS];
	static const uint64_t seg_len[] = { 4u << 20, (16u << 20) + PAGE, 128u << 20,
					     256u << 20 };
	uint64_t len = seg_len[below(4)];
	int n = (int)max_segs, same = chance(70);
	uint64_t addr;

	if (len > ram_low / 2)
		len = ram_low / 2;
	if (chance(25))
		n = 5 + (int)below(20);		/* 1.25 GiB .. 6 GiB at 256 MiB */
	addr = below(ram_low - len) / PAGE * PAGE;
	for (int i = 0; i < n; i++)
		segs[i] = (struct seg){ same ? addr : below(ram_low - len) / PAGE * PAGE,
					(uint32_t)len };
	post(TXQ, chain(TXQ, (uint32_t)below(QSIZE), segs, n, chance(10) ? FIFOLAB_DESC_F_NOWAIT
									  : 0));
	ring();
	/* and readers over the longest physical run of the RX buffer, repeated */
	for (int r = (int)below(4); r > 0; r--) {
		for (int i = 0; i < (int)max_segs; i++)
			segs[i] = (struct seg){ rxb.phys[big_page], (uint32_t)rxb.run[big_page] };
		post(RXQ, chain(RXQ, (uint32_t)below(QSIZE), segs, (int)max_segs, 0));
		ring();
	}
}

/* Every head of the TX ring posted, each walking MAX_SEGS + 1 descriptors (or,
 * with every 260th one ending a chain, long valid chains over big RAM). */
static void op_ring_walk(void)
{
	int valid = chance(50);
	uint64_t len = valid ? 1u << (12 + below(17)) : PAGE;

	if (len > ram_low / 2)
		len = ram_low / 2;
	for (uint32_t i = 0; i < QSIZE; i++) {
		int end = valid && i % max_segs == max_segs - 1;

		set_desc(TXQ, i, below(ram_low - len), (uint32_t)len,
			 end ? 0 : FIFOLAB_DESC_F_NEXT, (uint16_t)((i + 1) % QSIZE));
	}
	for (uint32_t i = 0; i < QSIZE; i++)
		post(TXQ, i);
	ring();
}

static void op_bad_chain(void)
{
	int q = (int)below(2);
	uint32_t first = (uint32_t)below(QSIZE);
	uint32_t n = max_segs + 1;

	switch (below(4)) {
	case 0:		/* one too many */
		for (uint32_t k = 0; k < n; k++) {
			struct seg g = q == RXQ ? rx_piece(PAGE) : tx_any();

			set_desc(q, first + k, g.addr, g.len, k + 1 < n ? FIFOLAB_DESC_F_NEXT : 0,
				 (uint16_t)((first + k + 1) % QSIZE));
		}
		break;
	case 1:		/* a loop of 1..8 */
		n = 1 + (uint32_t)below(8);
		for (uint32_t k = 0; k < n; k++) {
			struct seg g = q == RXQ ? rx_piece(PAGE) : tx_any();

			set_desc(q, first + k, g.addr, g.len, FIFOLAB_DESC_F_NEXT,
				 (uint16_t)((first + (k + 1) % n) % QSIZE));
		}
		break;
	case 2:		/* next out of range */
		{
			struct seg g = any_seg(q);

			set_desc(q, first, g.addr, g.len, FIFOLAB_DESC_F_NEXT,
				 (uint16_t)(QSIZE + below(65536 - QSIZE)));
		}
		break;
	default:	/* a zero-length segment in the middle */
		{
			struct seg g = q == RXQ ? rx_piece(PAGE) : tx_any();

			set_desc(q, first, g.addr, g.len, FIFOLAB_DESC_F_NEXT,
				 (uint16_t)((first + 1) % QSIZE));
			set_desc(q, first + 1, g.addr, 0, 0, 0);
		}
	}
	post(q, first % QSIZE);
	ring();
}

static void op_avail_jump(void)
{
	static const uint32_t jumps[] = { 2000, QSIZE + 1, 1u << 31, 0xFFFFFFFFu, 65536 };
	int q = (int)below(2);
	uint32_t by = chance(20) ? (uint32_t)rnd() : jumps[below(5)];

	avail[q] += by;
	w32(FIFOLAB_QCTL(q, FIFOLAB_QCTL_AVAIL_IDX), avail[q]);
	ring();
}

/* A request that waits (RX on an empty FIFO, TX bigger than the FIFO), then
 * its head posted again while the device holds it. */
static void op_repost(void)
{
	int q = (int)below(2);
	uint32_t head = (uint32_t)below(QSIZE);
	struct seg g = q == RXQ ? rx_piece(0)
				: (struct seg){ 1u << 20, (uint32_t)(1u << (16 + below(8))) };

	set_desc(q, head, g.addr, g.len, 0, 0);
	post(q, head);
	ring();
	for (int i = 1 + (int)below(5); i > 0; i--) {
		post(q, head);
		if (chance(50))
			ring();
	}
	ring();
}

static void op_control_storm(void)
{
	static const uint32_t values[] = { 0, FIFOLAB_CTRL_ENABLE, FIFOLAB_CTRL_RESET,
					   FIFOLAB_CTRL_RESET | FIFOLAB_CTRL_ENABLE };

	for (int i = 1 + (int)below(50); i > 0; i--) {
		w32(FIFOLAB_REG_CONTROL, chance(80) ? values[below(4)] : (uint32_t)rnd());
		if (chance(30))
			post((int)below(2), (uint32_t)below(QSIZE));
		ring();
	}
}

static void op_int_garbage(void)
{
	for (int i = 1 + (int)below(10); i > 0; i--) {
		w32(FIFOLAB_REG_INT_ACKED, (uint32_t)rnd());
		w32(FIFOLAB_REG_INT_ENABLE, chance(50) ? (uint32_t)rnd() : (uint32_t)below(64));
		ring();
	}
}

static void op_cancel(void)
{
	int q = (int)below(2);

	for (int i = 1 + (int)below(16); i > 0; i--) {
		/* a head posted lately, or any descriptor */
		uint32_t d = chance(70) && avail[q]
			? *(volatile uint16_t *)(bar2 + qbase(q) + FIFOLAB_Q_AVAIL_OFF +
						 ((avail[q] - 1 - below(8)) % QSIZE) * 2) % QSIZE
			: (uint32_t)below(QSIZE);

		set_flags(q, d, get_flags(q, d) | FIFOLAB_DESC_F_CANCEL);
	}
	ring();
}

static void op_doorbell_storm(void)
{
	uint32_t ivpos = bar0[IVSHMEM_REG_IVPOSITION / 4];

	for (int i = 100 + (int)below(1900); i > 0; i--) {
		uint32_t v = peer << 16 | FIFOLAB_DOORBELL_VECTOR;

		if (chance(5))
			v = peer << 16 | (uint32_t)below(256);		/* odd vectors */
		else if (chance(2))
			v = (chance(50) ? ivpos : (uint32_t)below(16)) << 16 | (uint32_t)below(4);
		ring_raw(v);
	}
}

static void op_ro_garbage(void)
{
	static const uint32_t regs_ro[] = {
		FIFOLAB_REG_MAGIC, FIFOLAB_REG_VERSION, FIFOLAB_REG_FEATURES,
		FIFOLAB_REG_DEVICE_PEER, FIFOLAB_REG_FIFO_DEPTH, FIFOLAB_REG_QUEUE_SIZE,
		FIFOLAB_REG_NUM_VECTORS, FIFOLAB_REG_MAX_SEGS, FIFOLAB_REG_STATUS,
		FIFOLAB_REG_INT_RAISED, FIFOLAB_REG_RX_LEVEL, FIFOLAB_REG_TX_SPACE,
		FIFOLAB_REG_ERR_CODE, FIFOLAB_REG_ERR_ADDR, FIFOLAB_REG_RESET_COUNT,
		FIFOLAB_REG_ERR_COUNT, FIFOLAB_REG_NO_NOTIFY, FIFOLAB_REG_STAT_TX_BYTES,
		FIFOLAB_REG_STAT_COMPLETIONS,
		FIFOLAB_QCTL(TXQ, FIFOLAB_QCTL_USED_IDX), FIFOLAB_QCTL(RXQ, FIFOLAB_QCTL_USED_IDX),
	};
	const size_t n_ro = sizeof(regs_ro) / sizeof(regs_ro[0]);

	for (int i = 1 + (int)below(16); i > 0; i--) {
		uint32_t off;

		switch (below(3)) {
		case 0:
			off = regs_ro[below(n_ro)];
			break;
		case 1:		/* a used ring */
			off = qbase((int)below(2)) + FIFOLAB_Q_USED_OFF +
			      (uint32_t)below(QSIZE * FIFOLAB_USED_SIZE / 4) * 4;
			break;
		default:	/* anywhere in the register block or past the queues */
			off = chance(50) ? 0 : 0x30000;
			off += (uint32_t)below(((off ? FIFOLAB_BAR2_SIZE : 0x1000) - off) / 4) * 4;
		}
		/* never the driver's own registers: those have their own ops */
		if (off == FIFOLAB_REG_CONTROL || off == FIFOLAB_REG_INT_ACKED ||
		    off == FIFOLAB_REG_INT_ENABLE || off == FIFOLAB_QCTL(TXQ, 0) ||
		    off == FIFOLAB_QCTL(RXQ, 0))
			continue;
		w32(off, (uint32_t)rnd());
	}
	ring();
}

struct op {
	const char *name;
	int weight;
	void (*run)(void);
	unsigned long done, ready_lost;
};

static struct op ops_table[] = {
	{ .name = "loopback", .weight = 16, .run = op_loopback },
	{ .name = "random-desc", .weight = 20, .run = op_random_desc },
	{ .name = "max-chain", .weight = 6, .run = op_max_chain },
	{ .name = "ring-walk", .weight = 2, .run = op_ring_walk },
	{ .name = "bad-chain", .weight = 8, .run = op_bad_chain },
	{ .name = "avail-jump", .weight = 4, .run = op_avail_jump },
	{ .name = "repost", .weight = 6, .run = op_repost },
	{ .name = "control-storm", .weight = 4, .run = op_control_storm },
	{ .name = "int-garbage", .weight = 5, .run = op_int_garbage },
	{ .name = "cancel", .weight = 8, .run = op_cancel },
	{ .name = "doorbell-storm", .weight = 3, .run = op_doorbell_storm },
	{ .name = "ro-garbage", .weight = 5, .run = op_ro_garbage },
};
#define N_OPS	(sizeof(ops_table) / sizeof(ops_table[0]))

static struct op *pick(void)
{
	int total = 0, r;

	for (size_t i = 0; i < N_OPS; i++)
		total += ops_table[i].weight;
	r = (int)below((uint64_t)total);
	for (size_t i = 0; i < N_OPS; i++) {
		r -= ops_table[i].weight;
		if (r < 0)
			return &ops_table[i];
	}
	return &ops_table[0];
}

/* ------------------------------------------------------------ the end */

/* One reset (AVAIL_IDX = 0, CONTROL = RESET, rung), waited for up to a
 * second with async-signal-safe calls only.  1 if the device confirmed it. */
static int reset_raw(void)
{
	uint32_t before = r32(FIFOLAB_REG_RESET_COUNT);
	struct timespec t0, t, pause = { 0, 100000 };

	w32(FIFOLAB_QCTL(TXQ, FIFOLAB_QCTL_AVAIL_IDX), 0);
	w32(FIFOLAB_QCTL(RXQ, FIFOLAB_QCTL_AVAIL_IDX), 0);
	w32(FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_RESET);
	ring();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (r32(FIFOLAB_REG_RESET_COUNT) != before)
			return 1;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >
		    RESET_WAIT_MS)
			return 0;
		nanosleep(&pause, NULL);
	}
}

/*
 * Put the device back for the driver: the identification registers as they
 * were, then reset it.  INT_RAISED may still hold garbage of ours (the
 * device writes it only when it raises a cause, from its own copy), and a
 * driver that acks it would see causes that were never raised -- a RESET
 * among them, which it must take for a device-initiated reset.  So the
 * device is made to write it: the reset raises RESET, enabled, once with
 * INT_ACKED = 0 and once with every bit acked; RESET is not pending for
 * the device in one of the two.  (MSI-X is off while no driver is bound:
 * the messages go nowhere.)  Async-signal-safe: the watchdog and SIGTERM
 * call it too.  1 if the device confirmed the resets.
 */
static int leave_device(void)
{
	int ok = 1;

	if (!bar2 || !bar0)
		return 0;
	for (int i = 0; i < 8; i++)
		w32((uint32_t)i * 4, identity[i]);
	for (int i = 0; i < 2; i++) {
		w32(FIFOLAB_REG_INT_ACKED, i ? FIFOLAB_INT_ALL : 0);
		w32(FIFOLAB_REG_INT_ENABLE, FIFOLAB_INT_RESET);
		ok &= reset_raw();
	}
	w32(FIFOLAB_REG_INT_ENABLE, 0);
	return ok;
}

static int finished;

/* die() after the driver was unbound: put everything back all the same */
static void at_exit(void)
{
	if (!finished) {
		finished = 1;
		leave_device();
		rebind();
	}
}

static void on_fatal(int sig)
{
	static const char msg[] = "hostile: stopped by a signal (watchdog or kill): device "
				  "reset, driver rebound\n";

	leave_device();
	rebind();
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(4);
	_exit(sig == SIGUSR2 ? 3 : 128 + sig);
}

/* the device's counters, read before the driver is bound again: its
 * pci_request_regions() revokes this program's mappings (SIGBUS after) */
static uint32_t final_err_count, final_reset_count;
static uint64_t final_doorbells;

static void summary(double t0, uint64_t seed, int left, int rebound)
{
	const char *sep = "";

	printf("{\"seed\":%llu,\"seconds\":%.2f,\"bdf\":\"%s\",\"driver\":\"%s\",\"ops\":%lu,"
	       "\"doorbells\":%lu,\"kinds\":{", (unsigned long long)seed, now() - t0, bdf,
	       drv, ops, doorbells);
	for (size_t i = 0; i < N_OPS; i++)
		printf("%s\"%s\":%lu", i ? "," : "", ops_table[i].name, ops_table[i].done);
	printf("},\"ready_lost\":{");
	for (size_t i = 0; i < N_OPS; i++) {
		if (!ops_table[i].ready_lost)
			continue;
		printf("%s\"%s\":%lu", sep, ops_table[i].name, ops_table[i].ready_lost);
		sep = ",";
	}
	printf("},\"loop\":{\"runs\":%llu,\"bytes\":%llu,\"got\":%llu,\"matched\":%llu,"
	       "\"timeouts\":%llu,\"clean_runs\":%llu,\"clean_bytes\":%llu,\"clean_got\":%llu,"
	       "\"clean_matched\":%llu,\"clean_timeouts\":%llu},",
	       (unsigned long long)loop_runs, (unsigned long long)loop_bytes,
	       (unsigned long long)loop_got, (unsigned long long)loop_matched,
	       (unsigned long long)loop_timeouts, (unsigned long long)clean_runs,
	       (unsigned long long)clean_bytes, (unsigned long long)clean_got,
	       (unsigned long long)clean_matched, (unsigned long long)clean_timeouts);
	printf("\"err_codes\":{");
	sep = "";
	for (int i = 0; i < 16; i++) {
		if (!err_codes[i])
			continue;
		printf("%s\"%d\":%lu", sep, i, err_codes[i]);
		sep = ",";
	}
	if (err_other)
		printf("%s\"other\":%lu", sep, err_other);
	printf("},\"reset_timeouts\":%lu,\"enable_timeouts\":%lu,\"max_run\":%zu,"
	       "\"err_count\":%u,\"reset_count\":%u,\"stat_doorbells\":%llu,"
	       "\"left_reset\":%s,\"rebound\":%s}\n",
	       reset_timeouts, enable_timeouts, rxb.run[big_page], final_err_count,
	       final_reset_count, (unsigned long long)final_doorbells,
	       left ? "true" : "false", rebound ? "true" : "false");
	fflush(stdout);
}

static const char usage[] =
	"usage: hostile SECONDS SEED [--ram MIB] [--bdf DDDD:BB:DD.F]\n"
	"  drive the fifolab device's BAR2 and doorbell from user space with random and\n"
	"  hostile values for SECONDS (root; unbinds the driver and binds it again)\n";

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_fatal };
	double seconds, t0, end;
	uint64_t seed;
	int left, rebound;
	uint64_t ram_mib = 0;
	char *pos[2];
	int npos = 0;

	prog = "hostile";
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ram") && i + 1 < argc)
			ram_mib = parse_size(argv[++i], "--ram MIB");
		else if (!strcmp(argv[i], "--bdf") && i + 1 < argc)
			snprintf(bdf, sizeof(bdf), "%s", argv[++i]);
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(usage, stdout);
			return 0;
		} else if (argv[i][0] != '-' && npos < 2)
			pos[npos++] = argv[i];
		else {
			fputs(usage, stderr);
			return 2;
		}
	}
	if (npos != 2) {
		fputs(usage, stderr);
		return 2;
	}
	seconds = strtod(pos[0], NULL);
	seed = strtoull(pos[1], NULL, 0);
	if (!(seconds > 0) || seconds > 86400) {
		fputs(usage, stderr);
		return 2;
	}
	s = seed * 0x9E3779B97F4A7C15ull + 1;

	/* the extent of RAM: what the model maps (--ram) or what the kernel says */
	ram_low = iomem_ram_end();
	if (ram_mib) {
		ram_limit = ram_mib << 20;
		if (ram_low > ram_limit)
			ram_low = ram_limit;
	} else {
		ram_limit = (ram_low + (1ull << 30) - 1) & ~((1ull << 30) - 1);
	}
	if (ram_limit > (2ull << 30))
		die("RAM up to %#llx: this program assumes RAM below 2 GiB, all of it at "
		    "guest-physical = file offset", (unsigned long long)ram_limit);

	buf_alloc(&rxb, RXBUF_SIZE);
	buf_alloc(&txb, TXBUF_SIZE);
	index_rx();

	find_device();
	watchdog((unsigned int)seconds + GRACE_SECONDS);
	atexit(at_exit);
	unbind();
	sigaction(SIGUSR2, &sa, NULL);	/* the watchdog: clean up first */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	bar2 = map_resource(2, FIFOLAB_BAR2_SIZE);
	bar0 = map_resource(0, PAGE);
	if (r32(FIFOLAB_REG_MAGIC) != FIFOLAB_MAGIC_VALUE) {
		uint32_t magic = r32(FIFOLAB_REG_MAGIC);

		bar2 = NULL;
		rebind();
		die("%s: BAR2 starts with %#x, not MAGIC: not a fifolab device", bdf, magic);
	}
	for (int i = 0; i < 8; i++)
		identity[i] = r32((uint32_t)i * 4);
	peer = r32(FIFOLAB_REG_DEVICE_PEER);
	max_segs = r32(FIFOLAB_REG_MAX_SEGS);
	if (!max_segs || max_segs > FIFOLAB_MAX_SEGS)
		max_segs = FIFOLAB_MAX_SEGS;

	/* The reset drops whatever the device still holds; then no stale RX
	 * descriptor of the driver's may point at memory it has freed. */
	if (!dev_reset())
		warn("the device did not confirm the first reset within %d ms", RESET_WAIT_MS);
	for (uint32_t i = 0; i < QSIZE; i++)
		set_desc(RXQ, i, rxb.phys[LOOP_AREA / PAGE], 1, 0, 0);
	dev_enable(FIFOLAB_INT_ALL);
	last_err_count = r32(FIFOLAB_REG_ERR_COUNT);

	t0 = now();
	end = t0 + seconds;
	while (now() < end) {
		struct op *op = pick();
		int was_ready = ready();

		op->run();
		op->done++;
		ops++;
		note_errors();
		if (was_ready && !ready() && op->run != op_control_storm && op->run != op_loopback)
			op->ready_lost++;
	}
	finished = 1;
	left = leave_device();
	final_err_count = r32(FIFOLAB_REG_ERR_COUNT);
	final_reset_count = r32(FIFOLAB_REG_RESET_COUNT);
	final_doorbells = *(volatile uint64_t *)(bar2 + FIFOLAB_REG_STAT_DOORBELLS);
	bar2 = NULL;		/* gone once the driver is bound (see above) */
	bar0 = NULL;
	rebound = rebind();
	summary(t0, seed, left, rebound);
	if (!left)
		fprintf(stderr, "hostile: the device did not confirm the final reset\n");
	if (!rebound)
		fprintf(stderr, "hostile: binding %s to %s failed\n", bdf, drv);
	return left && rebound ? 0 : 1;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab - driver for the fifolab FIFO peripheral (docs/datasheet.md)
 *
 * The device sits behind QEMU's ivshmem-doorbell (1af4:1110): BAR0 holds the
 * doorbell, BAR1 the MSI-X table, BAR2 is shared RAM with the device's
 * registers and its two descriptor queues (TX = queue 0 feeds the FIFO,
 * RX = queue 1 drains it).  Each bound device gets /dev/fifolabN.
 *
 * One I/O core serves every path:
 *
 *   fifolab_req_alloc()  pin the user pages of every iovec segment, build
 *                        and DMA-map one scatterlist
 *   fifolab_req_post()   take descriptors from the queue's free list, fill a
 *                        chain with the first window (at most MAX_SEGS
 *                        segments), publish the head in the avail ring,
 *                        ring (unless the device says NO_NOTIFY: it is busy
 *                        and will look at the ring again before it stops)
 *   fifolab_irq()        ack, then reap used entries: each one ends the
 *                        window whose head it names (fifolab_complete()),
 *                        which posts the next window (PARKED while the
 *                        descriptors are short) or finishes the request
 *   fifolab_req_wait()   sleep until completed; on a signal, cancel the
 *                        posted request and wait (bounded) for its used entry
 *   fifolab_req_free()   unmap, unpin (dirtying pages a read wrote), free
 *
 * Request life cycle (state is protected by queue->lock; DONE is also read
 * locklessly by the owner with acquire semantics):
 *
 *   NEW --post--> POSTED --used entry (IRQ), recovery or remove()--> DONE
 *                  ^  |  \
 *                  |  |   +--full window, more to go, no descriptors--> PARKED
 *   next window ---+--+      (PARKED --descriptors--> POSTED; cancel,
 *                  |          recovery or remove()--> DONE)
 *                  +--cancel timed out, or req->fail (owner)--> ORPHANED
 *                         --used entry, recovery or remove()--> freed
 *
 * Who owns what: a NEW or DONE request belongs to the task that allocated it
 * (its owner), which alone may free it.  While POSTED, the descriptors and
 * the pinned pages belong to the device; the request is reachable through
 * queue->inflight[head], and only fifolab_complete() (under queue->lock)
 * ends that.  An owner that gives up on a POSTED request marks it ORPHANED
 * and forgets it; whoever later completes it hands it to done_work (or, in
 * remove(), frees it directly) -- the pages stay pinned until the device is
 * known to be done with them.
 *
 * Asynchronous requests (a kiocb with ki_complete: libaio, io_uring's
 * inline try) have no sleeping owner.  fifolab_aio_submit() pins and maps
 * every byte (the iov_iter is the submitter's and gone once we return),
 * posts the first window and returns -EIOCBQUEUED; from then on the
 * request and the kiocb belong to the completion path:
 *
 *   used entry --fifolab_irq() (hard IRQ, q->lock)--> fifolab_complete():
 *     DONE, moved from q->aios to q->aio_done, done_work scheduled
 *   done_work (process context, no lock held) --> fifolab_aio_finish():
 *     clear iocb->private, unmap, unpin (dirtying pages the device wrote),
 *     ki_complete(bytes or -errno) -- exactly once, and only if we returned
 *     -EIOCBQUEUED; for any other return value the caller completes it.
 *
 * Cancelling an async request (io_cancel(2); io_destroy(2) and exit, where
 * the aio core cancels every pending kiocb; async_timeout_ms) only flags
 * its head CANCEL and rings (a PARKED one finishes at once).  The device
 * then returns it with status CANCELLED and the bytes already moved, and
 * it completes as above: -ECANCELED (-ETIMEDOUT for the
 * timeout) if nothing moved, else the count (a write the FIFO took part of).
 * The aio cancel callback runs under the aio ctx_lock with IRQs off and
 * takes q->lock; the completion path never calls ki_complete() (which takes
 * ctx_lock) with q->lock held, so the two cannot deadlock.  It finds the
 * request through iocb->private, which fifolab_aio_finish() clears under
 * q->lock before the request is freed.  remove() completes every async
 * request still in flight with -ENODEV.
 *
 * How each user-space API reaches the driver (Debian's 6.1 kernel):
 *
 *   read(2)/write(2), readv/writev, pread/pwrite: ->read_iter/->write_iter
 *     with a sync kiocb (ki_complete == NULL): the task sleeps in
 *     fifolab_req_wait().  pread/pwrite fail with -ESPIPE (stream_open).
 *     Every iovec segment is used; a write moves every byte, a read takes
 *     what the FIFO holds up to the iovecs' total and the FIFO's depth.
 *   O_NONBLOCK: not turned into IOCB_NOWAIT (kiocb flags come from
 *     f_iocb_flags), so both are checked: -EAGAIN before anything is pinned
 *     if nothing can move (a write of at most PIPE_BUF bytes: if it does
 *     not fit whole), then device NOWAIT requests.  preadv2/pwritev2
 *     RWF_NOWAIT set IOCB_NOWAIT; they need FMODE_NOWAIT (set in open).
 *   ioctl: FIONREAD, FIFOLAB_IOC_CLEAR/GET_DEPTH/GET_SPACE (uapi header).
 *   poll/select/epoll (and aio IOCB_CMD_POLL, io_uring poll): ->poll, one
 *     wait queue woken from the interrupt handler and on removal.
 *   O_ASYNC/F_SETOWN[_EX]/F_SETSIG: ->fasync (fasync_helper); SIGIO from the
 *     interrupt handler through kill_fasync(), which fills si_band/si_fd;
 *     __fput() takes the file off the list on release.
 *   glibc POSIX AIO (aio_read/aio_write): glibc threads call pread/pwrite,
 *     get -ESPIPE and fall back to read/write: sync kiocbs, never
 *     -EIOCBQUEUED.
 *   libaio io_submit: aio_read()/aio_write() call ->read_iter/->write_iter
 *     with an async kiocb (ki_complete = aio_complete_rw, IOCB_AIO_RW), so
 *     kiocb_set_cancel_fn() takes effect; any return other than
 *     -EIOCBQUEUED is completed by aio_rw_done().  io_cancel(2) returns
 *     -EINPROGRESS and the event arrives later through the ring.
 *   io_uring READ/WRITE: with FMODE_NOWAIT the request is first issued
 *     inline with IOCB_NOWAIT.  io_uring cannot cancel a request we hold
 *     (exec() and ring teardown wait for every one), so we hold one only
 *     if it ends at once: a read with bytes there, a write that fits whole
 *     (NOWAIT windows, -EIOCBQUEUED, ki_complete = io_complete_rw, which
 *     queues task_work).  Otherwise -EAGAIN: io_uring arms a poll on
 *     ->poll and reissues when it fires, and in the end (a write larger
 *     than the room that comes free) issues it from io-wq without
 *     IOCB_NOWAIT, where it runs the sync path; io-wq's cancellation
 *     (exec, exit, ring teardown, IORING_OP_ASYNC_CANCEL) interrupts that
 *     wait like a signal: the count moved, or -ECANCELED.  A short count
 *     only if another writer raced for the room.  Registered (fixed)
 *     buffers are not user-backed: -EINVAL.
 *
 * Faults (datasheet 7; docs/faults.md injects each).  The device is not
 * trusted, and every pending request ends -- the caller gets its data or an
 * error, never silence:
 *
 *   DMA error       the request fails with -EIO (or ends with the count of
 *                   the windows before it); SIGIO carries POLL_ERR, and
 *                   every other open file is told once: EPOLLERR until
 *                   its next read/write, which fails with -EIO
 *                   (fifolab_error(); STATUS.DMA_ERROR is not used).  The
 *                   device carries on.
 *   lost interrupt  the watchdog (fifolab_watch_work(), every
 *                   completion_timeout_ms while requests are in flight)
 *                   acks and reaps as the handler would; idempotent, so
 *                   nothing is lost or completed twice (sysfs lost_irqs).
 *   spurious IRQ    nothing pending: counted (spurious_irqs), ignored.
 *   slow device     completions come late: nothing to do.
 *   stall           the watchdog rings a doorbell each run; when
 *                   STAT_DOORBELLS stands still for stall_timeout_ms with
 *                   requests in flight, fifolab_recover(-ETIMEDOUT).
 *   device reset    INT_RESET, or READY gone, while RUNNING:
 *                   fifolab_recover(-EIO); nothing is reaped (USED_IDX is 0
 *                   and the requests were dropped uncompleted).
 *   hostile entry   used entries are checked before anything is completed:
 *                   at most as many as are in flight, each naming a head in
 *                   flight, len <= the request's.  A violation is counted
 *                   (bad_completions), logged at a rate limit, stops the
 *                   queue and calls fifolab_recover(-EIO).
 *   corrupted data  reported OK by the device: undetectable here (the
 *                   tests check sums end to end).
 *   hot-unplug      remove() fails what is in flight with -ENODEV (below).
 *
 * fifolab_recover() stops both queues (nothing posted, nothing reaped),
 * reports the error once to every open file with POLL_ERR, and
 * recover_work resets the device (FIFOLAB_IOC_CLEAR uses the same reset,
 * reporting nothing).  Once it
 * has reset it holds no request, so everything in flight fails with the
 * reason's errno -- requests are not re-posted: a TX request's bytes may be
 * partly in the FIFO, which the reset empties -- and the queues restart
 * from zero (datasheet 3).  Requests waiting to be posted then go ahead.  A
 * stalled device does not reset: its callers are answered at once (sync:
 * req->fail, the owner orphans the request; async: ki_complete()), the
 * pages stay pinned, CONTROL stays RESET and recover_work looks again each
 * completion_timeout_ms; when the device resumes it resets first, then the
 * orphans are freed and the device is brought up again.  Meanwhile new
 * requests fail with -EIO (and poll() says EPOLLERR).  Bytes the FIFO held
 * at a reset are lost with it (the device empties it): every open file
 * hears of it once (-EIO from its next read or write, EPOLLERR until then,
 * POLL_ERR), and sysfs errors and recoveries count it.  remove() turns bus
 * mastering off before the last requests end, so even a stalled device's
 * pages go back.
 */

#include <linux/aio.h>
#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/cdev.h>
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/iopoll.h>
#include <linux/kernel.h>
#include <linux/limits.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/wait_bit.h>
#include <linux/workqueue.h>

#include <asm/ioctls.h>

#include "fifolab_hw.h"
#include "fifolab.h"

#define DRV_NAME		"fifolab"
#define FIFOLAB_MAX_DEVICES	64
/* causes after which poll() may say EPOLLIN, EPOLLOUT */
#define FIFOLAB_INT_POLL_IN	(FIFOLAB_INT_DATA_AVAIL | FIFOLAB_INT_RX_DONE)
#define FIFOLAB_INT_POLL_OUT	(FIFOLAB_INT_SPACE_AVAIL | FIFOLAB_INT_TX_DONE)

/* bytes a blocking write pins at a time; an async one pins all it has */
#define FIFOLAB_SYNC_PIN	SZ_4M
/* bytes in one window: what the device takes in one request (datasheet 5) */
#define FIFOLAB_MAX_WINDOW	FIFOLAB_MAX_REQ_BYTES
#define FIFOLAB_HW_TIMEOUT_US	USEC_PER_SEC	/* reset, enable (datasheet 3) */

static unsigned int cancel_timeout_ms = 2000;
module_param(cancel_timeout_ms, uint, 0644);
MODULE_PARM_DESC(cancel_timeout_ms,
		 "how long a cancelled request may take to come back (ms)");

static unsigned int async_timeout_ms;
module_param(async_timeout_ms, uint, 0644);
MODULE_PARM_DESC(async_timeout_ms,
		 "cancel an async request still pending after this long (ms, 0 = never)");

static unsigned int completion_timeout_ms = 1000;
module_param(completion_timeout_ms, uint, 0644);
MODULE_PARM_DESC(completion_timeout_ms,
		 "while requests are in flight, look for completions whose interrupt was lost this often (ms, default 1000)");

static unsigned int stall_timeout_ms = 5000;
module_param(stall_timeout_ms, uint, 0644);
MODULE_PARM_DESC(stall_timeout_ms,
		 "a device that handles no doorbell for this long with requests in flight is stalled: they fail with -ETIMEDOUT (ms, default 5000, 0 = never)");

/* How often the watchdog looks while requests are in flight. */
static unsigned long fifolab_watch_period(void)
{
	return msecs_to_jiffies(max(READ_ONCE(completion_timeout_ms), 10U));
}

static struct class *fifolab_class;
static dev_t fifolab_devt;
static DEFINE_IDA(fifolab_minors);

enum fifolab_req_state {
	FIFOLAB_REQ_NEW,	/* owner's; nothing posted */
	FIFOLAB_REQ_POSTED,	/* device's; in queue->inflight[head] */
	FIFOLAB_REQ_PARKED,	/* between windows, waiting for descriptors:
				 * on queue->parked, nothing posted
				 */
	FIFOLAB_REQ_DONE,	/* owner's again; moved/err are final */
	FIFOLAB_REQ_ORPHANED,	/* posted, owner gone; freed on completion */
};

/*
 * The device as the driver sees it (P: fdev->irq_lock):
 *
 *   DOWN --probe: reset + enable--> RUNNING
 *   RUNNING --fifolab_recover(): device reset itself, broke a rule
 *             or stalled--> RECOVERING (queues stopped)
 *   RECOVERING --recover_work: device reset and ready--> RUNNING
 *   any --remove()--> DOWN
 */
enum fifolab_hw_state {
	FIFOLAB_HW_DOWN,
	FIFOLAB_HW_RUNNING,
	FIFOLAB_HW_RECOVERING,
};

/*
 * Async request counters (sysfs).  Every request that went -EIOCBQUEUED is
 * counted once in async_submitted and, when its kiocb is completed, once in
 * exactly one of completed / cancelled / failed, so
 * submitted = completed + cancelled + failed + (still pending).
 */
struct fifolab_aio_stats {
	atomic64_t submitted;		/* posted, -EIOCBQUEUED returned */
	atomic64_t completed;		/* ki_complete(>= 0): bytes moved */
	atomic64_t cancelled;		/* the device returned it CANCELLED */
	atomic64_t failed;		/* ki_complete(-errno), not a cancel */
};

struct fifolab_queue;
struct fifolab_file;

/*
 * One read or write: the user pages of an iov_iter (every segment, up to a
 * byte limit), pinned and DMA-mapped as one scatterlist.  The device sees
 * it as one or more windows of at most max_segs segments, posted one after
 * the other: a window that comes back full is followed by the next (RX: as
 * a NOWAIT request, so that a read takes only what is there), until all
 * moved, or a window comes back short, failed or cancelled.
 */
struct fifolab_req {
	struct fifolab_queue *q;	/* const */
	size_t len;			/* const: bytes pinned, all windows */
	bool nowait;			/* const: every window FIFOLAB_DESC_F_NOWAIT */
	unsigned int npages;		/* const */
	struct page **pages;		/* const: npages pinned pages */
	struct sg_append_table sga;	/* const once mapped */

	/* P: q->lock */
	enum fifolab_req_state state;	/* DONE also read with acquire */
	struct scatterlist *win;	/* first segment of the current window */
	struct scatterlist *win_end;	/* the segment after it (or NULL) */
	unsigned int win_left;		/* mapped segments from @win on */
	unsigned int win_nents;		/* segments in the current window */
	u32 win_len;			/* bytes in the current window */
	bool win_nowait;		/* it was posted NOWAIT */
	u16 head;			/* first descriptor, while POSTED */
	u16 tail;			/* last descriptor, while POSTED */
	u16 head_flags;			/* what we wrote in the head */
	bool cancelled;			/* cancel asked: no further window */
	int fail;			/* sync: recovery gave up on it (-errno);
					 * the owner orphans it (fifolab_req_wait())
					 */
	int cancel_err;			/* async: why cancelled (-ECANCELED...) */
	struct list_head node;		/* on q->orphans, or async: q->aios
					 * until DONE, then q->aio_done
					 */
	struct list_head park;		/* on q->parked while PARKED */

	/* written by fifolab_finish_locked() before state = DONE */
	size_t moved;			/* bytes moved by every window */
	int err;			/* 0, -EIO, -ETIMEDOUT or -ENODEV */
	bool aborted;			/* the device said CANCELLED */

	/* async requests only (iocb != NULL); const once posted */
	struct kiocb *iocb;		/* completed by fifolab_aio_finish() */
	struct fifolab_file *ff;	/* the open file it was submitted on */
	unsigned long deadline;		/* jiffies, if @timed */
	bool timed;			/* async_timeout_ms was set at submit */
};

struct fifolab_queue_stats {
	u64 bytes;			/* moved by completed requests */
	u64 cancels;			/* cancels sent to the device */
	u64 bad;			/* used entries rejected */
	u64 doorbells;			/* rung after a post */
	u64 doorbells_skipped;		/* not rung: the device said NO_NOTIFY */
};

struct fifolab_queue {
	/* const after probe */
	struct fifolab_dev *fdev;
	unsigned int qid;		/* FIFOLAB_QUEUE_TX or _RX */
	unsigned int max_segs;		/* descriptors per window */
	struct fifolab_desc *desc;	/* BAR2: descriptor table */
	__le16 *avail;			/* BAR2: avail ring */
	struct fifolab_used *used;	/* BAR2: used ring */
	__le32 *avail_idx_reg;		/* BAR2: AVAIL_IDX[q] (ours) */
	__le32 *used_idx_reg;		/* BAR2: USED_IDX[q] (device's) */

	/* readers (RX) or writers (TX): completions, free descriptors, dead */
	wait_queue_head_t wq;

	spinlock_t lock;		/* protects everything below */
	bool dead;			/* remove() began: post nothing, reap nothing */
	bool stopped;			/* recovery: post nothing, reap nothing */
	int stop_err;			/* while stopped: new requests fail with it
					 * (0: they wait for the recovery)
					 */
	u32 avail_idx;			/* requests posted (our AVAIL_IDX) */
	u32 last_used;			/* used entries consumed */
	/*
	 * Free descriptors, a FIFO: a chain given back goes to the tail, so a
	 * head is reused as late as possible -- a hostile device's duplicate
	 * used entry then names a head no longer (not yet again) in flight,
	 * and is caught, instead of completing a new request that happens to
	 * have the same head (datasheet 7).
	 */
	u16 free_head;			/* the next to take (if num_free) */
	u16 free_tail;			/* the last given back (if num_free) */
	unsigned int num_free;		/* free descriptors */
	unsigned int num_inflight;	/* POSTED or ORPHANED requests */
	u64 win_bytes;			/* bytes of the windows posted */
	unsigned int win_waiting;	/* windows posted without NOWAIT */
	u16 *next;			/* [QUEUE_SIZE] free list and chain links */
	struct fifolab_req **inflight;	/* [QUEUE_SIZE] by head: posted requests */
	struct list_head orphans;	/* ORPHANED requests the device completed */
	struct list_head aios;		/* POSTED async requests, oldest first */
	struct list_head aio_done;	/* DONE async requests for done_work */
	struct list_head parked;	/* PARKED requests, oldest first */
	struct fifolab_queue_stats stats;
};

struct fifolab_dev {
	struct device dev;		/* /sys/class/fifolab/fifolabN; owns us */
	struct cdev cdev;
	struct pci_dev *pdev;		/* const; valid while bound */
	int minor;			/* const */
	void __iomem *bar0;		/* const; valid while bound */
	void *bar2;			/* const; valid while bound */
	u16 peer;			/* const: DEVICE_PEER, for the doorbell */
	u32 fifo_depth;			/* const */
	bool no_notify;			/* const: FEAT_NO_NOTIFY (doorbell suppression) */
	char irq_name[FIFOLAB_NUM_VECTORS][24];

	struct fifolab_queue queue[FIFOLAB_NUM_QUEUES];

	/*
	 * irq_lock serialises the ack of both vectors, and lets poll() read
	 * BAR2 registers without holding a request: remove() sets @removed
	 * under it before BAR2 goes (fifolab_read_levels()).
	 */
	spinlock_t irq_lock;
	u32 int_acked;			/* P: irq_lock; last INT_ACKED written */
	u64 irqs;			/* P: irq_lock */

	/*
	 * remove() sets @removed (under irq_lock), then waits until @nr_reqs
	 * (requests that exist: pinned, maybe DMA-mapped) drops to zero.  A
	 * submitter counts its request before it looks at @removed (see
	 * fifolab_get_req()).
	 */
	bool removed;
	atomic_t nr_reqs;
	struct work_struct done_work;	/* frees orphans, completes aios */
	struct delayed_work timeout_work; /* async_timeout_ms */

	/*
	 * Recovery (fifolab_recover(), fifolab_recover_work()).  @hw_state
	 * and @recover_err: P: irq_lock.  The rest belongs to recover_work.
	 */
	enum fifolab_hw_state hw_state;
	int recover_err;		/* what in-flight requests fail with */
	struct delayed_work recover_work;
	u32 recover_count;		/* RESET_COUNT before our reset */
	bool recover_waiting;		/* reset asked; the device is silent */
	bool recover_report;		/* P: irq_lock; a fault, not a CLEAR */

	/* watchdog (fifolab_watch_work(); its fields are its own) */
	struct delayed_work watch_work;
	bool watch_busy;		/* the last run found requests in flight */
	u64 watch_doorbells;		/* STAT_DOORBELLS seen last */
	unsigned long alive_at;		/* jiffies: STAT_DOORBELLS last moved */

	/* fault counters (sysfs) */
	atomic64_t recoveries;		/* device reset and re-initialised */
	atomic64_t device_resets;	/* resets the device did by itself */
	atomic64_t stalls;		/* stall_timeout_ms expired */
	atomic64_t lost_irqs;		/* the watchdog found causes pending */
	atomic64_t spurious_irqs;	/* messages with no cause pending */

	/*
	 * Errors reported once to each open file (the errseq_t pattern of
	 * filemap_check_wb_err()): a device error bumps @err_gen; a file has
	 * one pending while its err_seen differs (fifolab_err_take()).
	 */
	atomic_t err_gen;
	atomic64_t clears;		/* FIFOLAB_IOC_CLEAR resets */

	wait_queue_head_t poll_wq;	/* poll(): levels, errors, removal */
	struct fasync_struct *fasync;	/* SIGIO listeners (fasync_helper) */
	atomic64_t sigio_sent;		/* kill_fasync() calls with listeners */
	struct fifolab_aio_stats aio;
};

/* One open file (file->private_data). */
struct fifolab_file {
	struct fifolab_dev *fdev;	/* const; the cdev reference keeps it */
	unsigned int err_seen;		/* fdev->err_gen last reported here */
};

/* ---------------------------------------------------------------- BAR2 */

/* BAR2 is RAM shared with the device: plain little-endian loads and stores. */
static u32 fifolab_rd32(struct fifolab_dev *fdev, unsigned int off)
{
	return le32_to_cpu(READ_ONCE(*(__le32 *)(fdev->bar2 + off)));
}

static u64 fifolab_rd64(struct fifolab_dev *fdev, unsigned int off)
{
	return le64_to_cpu(READ_ONCE(*(__le64 *)(fdev->bar2 + off)));
}

static void fifolab_wr32(struct fifolab_dev *fdev, unsigned int off, u32 val)
{
	WRITE_ONCE(*(__le32 *)(fdev->bar2 + off), cpu_to_le32(val));
}

/* Order every BAR2 store before the doorbell, then ring (datasheet 1). */
static void fifolab_ring(struct fifolab_dev *fdev)
{
	/* descriptors, rings, indices, CONTROL: all visible before the ring */
	wmb();
	writel(((u32)fdev->peer << 16) | FIFOLAB_DOORBELL_VECTOR,
	       fdev->bar0 + IVSHMEM_REG_DOORBELL);
}

/* ------------------------------------------------------- request life */

static enum dma_data_direction fifolab_dir(const struct fifolab_queue *q)
{
	return q->qid == FIFOLAB_QUEUE_RX ? DMA_FROM_DEVICE : DMA_TO_DEVICE;
}

/* Count a request that is about to exist; fails once remove() has begun. */
static bool fifolab_get_req(struct fifolab_dev *fdev)
{
	atomic_inc(&fdev->nr_reqs);
	smp_mb__after_atomic();		/* pairs with smp_mb() in remove() */
	if (!READ_ONCE(fdev->removed))
		return true;
	if (atomic_dec_and_test(&fdev->nr_reqs))
		wake_up_var(&fdev->nr_reqs);
	return false;
}

static void fifolab_put_req(struct fifolab_dev *fdev)
{
	if (atomic_dec_and_test(&fdev->nr_reqs))
		wake_up_var(&fdev->nr_reqs);
}

/* The current user segment of @it, at most @max bytes (@it->count > 0). */
static void __user *fifolab_iter_seg(struct iov_iter *it, size_t max,
				     size_t *len)
{
	struct iovec iov;

	if (iter_is_ubuf(it)) {
		*len = min(iov_iter_count(it), max);
		return it->ubuf + it->iov_offset;
	}
	iov_iter_advance(it, 0);	/* skip empty iovecs */
	iov = iov_iter_iovec(it);
	*len = min(iov.iov_len, max);
	return iov.iov_base;
}

/* Pages spanned by @len bytes at @ubuf. */
static unsigned int fifolab_npages(void __user *ubuf, size_t len)
{
	return DIV_ROUND_UP(offset_in_page(ubuf) + len, PAGE_SIZE);
}

/*
 * Add @len bytes at @off of @n pinned pages to the scatterlist being built
 * (*@sg: its last entry, NULL before the first): physically contiguous
 * bytes extend the last entry up to @max_seg, so that a huge page becomes
 * one descriptor.  (sg_alloc_append_table_from_pages() takes only
 * page-aligned additions after the first; an iovec may start anywhere.)
 */
static void fifolab_sg_add(struct sg_table *sgt, struct scatterlist **sg,
			   struct page **pages, unsigned int n,
			   unsigned int off, size_t len, unsigned int max_seg)
{
	unsigned int i;

	for (i = 0; i < n; i++, off = 0) {
		unsigned int chunk = min_t(size_t, len, PAGE_SIZE - off);
		struct scatterlist *last = *sg;

		if (last && last->length + chunk <= max_seg &&
		    page_to_phys(sg_page(last)) + last->offset + last->length ==
		    page_to_phys(pages[i]) + off) {
			last->length += chunk;
		} else {
			*sg = last ? sg_next(last) : sgt->sgl;
			sg_set_page(*sg, pages[i], chunk, off);
			sgt->nents++;
		}
		len -= chunk;
	}
}

/* Undo the pinning and mapping of fifolab_req_alloc(); frees nothing else. */
static void fifolab_req_unpin(struct fifolab_req *req, unsigned int pinned,
			      bool mapped, bool dirty)
{
	struct fifolab_queue *q = req->q;

	if (mapped)
		dma_unmap_sgtable(&q->fdev->pdev->dev, &req->sga.sgt,
				  fifolab_dir(q), 0);
	/* frees all total_nents entries, however few were used */
	sg_free_append_table(&req->sga);
	unpin_user_pages_dirty_lock(req->pages, pinned, dirty);
}

/*
 * Pin the next bytes of @it -- every segment in turn, at most @max bytes --
 * and map them for DMA as one scatterlist.  @it is not advanced: the caller
 * advances it by what moved.  Bad user memory (unmapped, or read-only for a
 * read) fails with -EFAULT before anything is posted.  @nowait: the caller
 * must not sleep (IOCB_NOWAIT), so neither do our allocations.
 */
static struct fifolab_req *fifolab_req_alloc(struct fifolab_queue *q,
					     const struct iov_iter *it,
					     size_t max, bool nowait)
{
	struct fifolab_dev *fdev = q->fdev;
	struct device *dma_dev = &fdev->pdev->dev;
	bool rx = q->qid == FIFOLAB_QUEUE_RX;
	gfp_t gfp = nowait ? GFP_NOWAIT : GFP_KERNEL;
	/* a request that may wait indefinitely pins for the long term */
	unsigned int gup = (rx ? FOLL_WRITE : 0) | (nowait ? 0 : FOLL_LONGTERM);
	unsigned int npages = 0, pinned = 0;
	struct iov_iter walk = *it;	/* a copy to walk: @it stays */
	struct scatterlist *sg = NULL;
	struct fifolab_req *req;
	size_t len = 0, done, slen;
	void __user *ubuf;
	int ret;

	/* how many bytes and pages */
	while (iov_iter_count(&walk) && len < max) {
		ubuf = fifolab_iter_seg(&walk, max - len, &slen);
		npages += fifolab_npages(ubuf, slen);
		len += slen;
		iov_iter_advance(&walk, slen);
	}

	req = kzalloc(sizeof(*req), gfp);
	if (!req)
		return ERR_PTR(nowait ? -EAGAIN : -ENOMEM);
	req->pages = kvmalloc_array(npages, sizeof(*req->pages), gfp);
	if (!req->pages) {
		ret = nowait ? -EAGAIN : -ENOMEM;
		goto err_free_req;
	}
	req->q = q;
	req->len = len;
	req->nowait = nowait;
	req->npages = npages;
	req->state = FIFOLAB_REQ_NEW;
	INIT_LIST_HEAD(&req->node);
	INIT_LIST_HEAD(&req->park);

	if (!fifolab_get_req(fdev)) {
		ret = -ENODEV;
		goto err_free_pages;
	}
	/* one entry per page at most; the entries used are counted in nents */
	ret = sg_alloc_table(&req->sga.sgt, npages, gfp);
	if (ret) {
		ret = nowait ? -EAGAIN : ret;
		goto err_put_req;
	}
	req->sga.total_nents = npages;
	req->sga.sgt.nents = 0;

	walk = *it;
	for (done = 0; done < len; done += slen) {
		unsigned int n;

		ubuf = fifolab_iter_seg(&walk, len - done, &slen);
		n = fifolab_npages(ubuf, slen);
		ret = pin_user_pages_fast((unsigned long)ubuf & PAGE_MASK, n,
					  gup, req->pages + pinned);
		if (ret != n) {
			if (ret > 0)
				unpin_user_pages(req->pages + pinned, ret);
			ret = ret < 0 ? ret : -EFAULT;
			goto err_unpin;
		}
		fifolab_sg_add(&req->sga.sgt, &sg, req->pages + pinned, n,
			       offset_in_page(ubuf), slen,
			       dma_get_max_seg_size(dma_dev));
		pinned += n;
		iov_iter_advance(&walk, slen);
	}
	sg_mark_end(sg);
	req->sga.sgt.orig_nents = req->sga.sgt.nents;

	ret = dma_map_sgtable(dma_dev, &req->sga.sgt, fifolab_dir(q), 0);
	if (ret)
		goto err_unpin;
	req->win = req->sga.sgt.sgl;
	req->win_left = req->sga.sgt.nents;
	return req;

err_unpin:
	fifolab_req_unpin(req, pinned, false, false);
err_put_req:
	fifolab_put_req(fdev);
err_free_pages:
	kvfree(req->pages);
err_free_req:
	kfree(req);
	return ERR_PTR(ret);
}

/* Undo fifolab_req_alloc().  Process context: unpinning may sleep. */
static void fifolab_req_free(struct fifolab_req *req)
{
	struct fifolab_dev *fdev = req->q->fdev;

	fifolab_req_unpin(req, req->npages, true,
			  req->q->qid == FIFOLAB_QUEUE_RX && req->moved);
	kvfree(req->pages);
	kfree(req);
	fifolab_put_req(fdev);		/* last: remove() may be waiting */
}

/*
 * Cut the next window from the mapped segments: at most max_segs of them
 * and FIFOLAB_MAX_WINDOW bytes (the first segment always fits: a segment
 * is at most dma_get_max_seg_size(), < 4 GiB).
 */
static void fifolab_window(struct fifolab_queue *q, struct fifolab_req *req)
{
	struct scatterlist *sg = req->win;
	unsigned int n = 0;
	u64 len = 0;

	while (n < req->win_left && n < q->max_segs &&
	       (!n || len + sg_dma_len(sg) <= FIFOLAB_MAX_WINDOW)) {
		len += sg_dma_len(sg);
		n++;
		sg = sg_next(sg);
	}
	req->win_nents = n;
	req->win_len = len;
	req->win_end = sg;
}

static bool fifolab_req_done(struct fifolab_req *req)
{
	/* DONE before moved/err; pairs with fifolab_finish_locked() */
	return smp_load_acquire(&req->state) == FIFOLAB_REQ_DONE;
}

/* Jiffies from now until @deadline, 0 if it has passed. */
static unsigned long fifolab_until(unsigned long deadline)
{
	unsigned long now = jiffies;

	return time_after(deadline, now) ? deadline - now : 0;
}

/* Bring the async timeout forward to @deadline; never push it back. */
static void fifolab_timeout_arm(struct fifolab_dev *fdev,
				unsigned long deadline)
{
	struct delayed_work *dw = &fdev->timeout_work;

	if (!delayed_work_pending(dw) ||
	    time_before(deadline, READ_ONCE(dw->timer.expires)))
		mod_delayed_work(system_wq, dw, fifolab_until(deadline));
}

/*
 * The request is over (all moved, a window came back short, failed or
 * cancelled, or the queue stopped): hand it to its owner.  Nothing here
 * sleeps; after the store-release of DONE a sync request is its owner's
 * and may be freed at once.
 */
static void fifolab_finish_locked(struct fifolab_queue *q,
				  struct fifolab_req *req, int err)
{
	lockdep_assert_held(&q->lock);

	req->err = err;
	if (req->state == FIFOLAB_REQ_ORPHANED) {
		list_add_tail(&req->node, &q->orphans);
	} else if (req->iocb) {
		/* async: done_work completes the kiocb (it may sleep) */
		req->state = FIFOLAB_REQ_DONE;
		list_move_tail(&req->node, &q->aio_done);
	} else {
		/* moved/err before DONE; pairs with fifolab_req_done() */
		smp_store_release(&req->state, FIFOLAB_REQ_DONE);
	}
}

/* Finish a PARKED request as it stands (its windows so far moved). */
static void fifolab_unpark_locked(struct fifolab_queue *q,
				  struct fifolab_req *req, int err)
{
	list_del_init(&req->park);
	req->state = FIFOLAB_REQ_NEW;
	fifolab_finish_locked(q, req, err);
}

/* Finish every PARKED request: the queue stopped (@err) or is gone. */
static bool fifolab_unpark_all_locked(struct fifolab_queue *q, int err)
{
	struct fifolab_req *req, *tmp;
	bool any = false;

	list_for_each_entry_safe(req, tmp, &q->parked, park) {
		fifolab_unpark_locked(q, req, req->moved ? 0 : err);
		any = true;
	}
	return any;
}

static void fifolab_post_locked(struct fifolab_queue *q,
				struct fifolab_req *req);

/*
 * A used entry (or the recovery, or remove()) ends the posted window of
 * @req: give its descriptors back, then post the next window or finish.
 */
static void fifolab_complete(struct fifolab_queue *q, struct fifolab_req *req,
			     u32 moved, int err)
{
	bool full = !err && !req->aborted && moved == req->win_len;

	lockdep_assert_held(&q->lock);

	if (q->num_free)
		q->next[q->free_tail] = req->head;
	else
		q->free_head = req->head;
	q->free_tail = req->tail;
	q->num_free += req->win_nents;
	q->inflight[req->head] = NULL;
	q->num_inflight--;
	q->win_bytes -= req->win_len;
	q->win_waiting -= !req->win_nowait;
	q->stats.bytes += moved;
	req->moved += moved;

	if (full && req->win_left > req->win_nents &&
	    req->state == FIFOLAB_REQ_POSTED && !req->cancelled &&
	    !req->cancel_err && !req->fail && !q->stopped && !q->dead) {
		req->win = req->win_end;
		req->win_left -= req->win_nents;
		fifolab_window(q, req);
		if (list_empty(&q->parked) && q->num_free >= req->win_nents) {
			fifolab_post_locked(q, req);
		} else {
			req->state = FIFOLAB_REQ_PARKED;
			list_add_tail(&req->park, &q->parked);
		}
		return;
	}
	/* a count if anything moved; an error stays pending for the file */
	fifolab_finish_locked(q, req, req->moved ? 0 : err);
}

/* Post the PARKED requests that the free descriptors allow, oldest first. */
static void fifolab_post_parked_locked(struct fifolab_queue *q)
{
	struct fifolab_req *req;

	while (!q->stopped && !q->dead &&
	       (req = list_first_entry_or_null(&q->parked, struct fifolab_req,
					       park)) &&
	       q->num_free >= req->win_nents) {
		list_del_init(&req->park);
		fifolab_post_locked(q, req);
	}
}

/*
 * Write the current window as a chain, publish its head and ring
 * (datasheet 4, "Posting").  Windows after the first of a read are NOWAIT:
 * a read takes what the FIFO holds, it does not wait for more.
 */
static void fifolab_post_locked(struct fifolab_queue *q,
				struct fifolab_req *req)
{
	bool nowait = req->nowait || (q->qid == FIFOLAB_QUEUE_RX && req->moved);
	bool first = req->state == FIFOLAB_REQ_NEW;
	unsigned int n = req->win_nents;
	struct scatterlist *sg;
	u16 idx = q->free_head;
	unsigned int i;

	lockdep_assert_held(&q->lock);

	req->head = idx;
	for_each_sg(req->win, sg, n, i) {
		struct fifolab_desc *d = &q->desc[idx];
		bool last = i + 1 == n;
		u16 flags = last ? 0 : FIFOLAB_DESC_F_NEXT;

		if (i == 0 && nowait)
			flags |= FIFOLAB_DESC_F_NOWAIT;
		if (i == 0)
			req->head_flags = flags;
		WRITE_ONCE(d->addr, cpu_to_le64(sg_dma_address(sg)));
		WRITE_ONCE(d->len, cpu_to_le32(sg_dma_len(sg)));
		WRITE_ONCE(d->flags, cpu_to_le16(flags));
		WRITE_ONCE(d->next, cpu_to_le16(last ? 0 : q->next[idx]));
		req->tail = idx;
		idx = q->next[idx];
	}
	q->free_head = idx;
	q->num_free -= n;
	q->inflight[req->head] = req;
	q->num_inflight++;
	q->win_bytes += req->win_len;
	q->win_waiting += !nowait;
	req->win_nowait = nowait;
	req->state = FIFOLAB_REQ_POSTED;
	if (req->iocb && first) {
		list_add_tail(&req->node, &q->aios);
		atomic64_inc(&q->fdev->aio.submitted);
		/* under q->lock: remove() sets q->dead, then cancels the work */
		if (req->timed)
			fifolab_timeout_arm(q->fdev, req->deadline);
	}

	/* lost interrupts, stalls: see fifolab_watch_work() */
	queue_delayed_work(system_wq, &q->fdev->watch_work,
			   fifolab_watch_period());

	WRITE_ONCE(q->avail[q->avail_idx % FIFOLAB_QUEUE_SIZE],
		   cpu_to_le16(req->head));
	wmb();				/* the ring entry before the index */
	q->avail_idx++;
	WRITE_ONCE(*q->avail_idx_reg, cpu_to_le32(q->avail_idx));

	/*
	 * Doorbell suppression (datasheet 4): while the device handles a
	 * doorbell it keeps NO_NOTIFY at 1 and looks at the avail rings again
	 * after clearing it.  The index store before the NO_NOTIFY load (a
	 * full barrier: the device fences between its clear and its look), so
	 * either we read 0 and ring, or the device sees this post.
	 */
	if (q->fdev->no_notify) {
		mb();
		if (fifolab_rd32(q->fdev, FIFOLAB_REG_NO_NOTIFY) & 1) {
			q->stats.doorbells_skipped++;
			return;
		}
	}
	q->stats.doorbells++;
	fifolab_ring(q->fdev);
}

/* Can the first window of @req be posted now? */
static bool fifolab_can_post(struct fifolab_queue *q, struct fifolab_req *req)
{
	return !q->stopped && list_empty(&q->parked) &&
	       q->num_free >= req->win_nents;
}

/*
 * Of @level (RX_LEVEL or TX_SPACE), what the windows posted on @q leave for
 * a request posted now; none while a window waits in the device (a new
 * request queues behind it).  A lockless peek, as poll() needs; windows
 * the device finished but we did not reap yet count twice, so it errs low.
 */
static u32 fifolab_claimable(struct fifolab_queue *q, u32 level)
{
	u64 claimed = READ_ONCE(q->win_bytes);

	if (READ_ONCE(q->win_waiting) || claimed >= level)
		return 0;
	return level - claimed;
}

/*
 * Will @req (all NOWAIT) end whole, before anything else takes the bytes
 * or the room?  Only if no window waits in the device (a NOWAIT request
 * behind one moves nothing) and what the device reports is more than the
 * windows posted may take: a read then gets a byte at least, a write all
 * of it.  Windows the device finished but we did not reap yet are counted
 * twice: the answer errs on the side of "no".
 */
static bool fifolab_room_locked(struct fifolab_queue *q,
				struct fifolab_req *req)
{
	lockdep_assert_held(&q->lock);

	if (q->qid == FIFOLAB_QUEUE_RX)
		return fifolab_claimable(q, fifolab_rd32(q->fdev,
							 FIFOLAB_REG_RX_LEVEL));
	return fifolab_claimable(q, fifolab_rd32(q->fdev,
						 FIFOLAB_REG_TX_SPACE)) >= req->len;
}

/*
 * Post @req's first window, waiting (interruptibly, if @wait) for enough
 * free descriptors and for a recovery to end.  @whole (io_uring's inline
 * try): -EAGAIN unless it will end whole at once (fifolab_room_locked()).
 * On failure the request is still NEW.  An async request cancelled before
 * it could be posted fails with its cancel errno; while the device is given
 * up on (stalled), with q->stop_err.
 */
static int fifolab_req_post(struct fifolab_req *req, bool wait, bool whole)
{
	struct fifolab_queue *q = req->q;
	int ret = 0;

	spin_lock_irq(&q->lock);
	fifolab_window(q, req);
	if (!wait) {
		if (!q->dead && (!fifolab_can_post(q, req) ||
				 (whole && !fifolab_room_locked(q, req))))
			ret = q->stop_err ?: -EAGAIN;
	} else {
		ret = wait_event_interruptible_lock_irq(q->wq,
							q->dead || req->cancel_err ||
							q->stop_err ||
							fifolab_can_post(q, req),
							q->lock);
	}
	if (!ret && q->dead)
		ret = -ENODEV;
	if (!ret && req->cancel_err)
		ret = req->cancel_err;
	if (!ret && q->stop_err)
		ret = q->stop_err;
	if (!ret)
		fifolab_post_locked(q, req);
	spin_unlock_irq(&q->lock);
	return ret;
}

/*
 * Stop @req: a POSTED window gets its head flagged CANCEL and a doorbell
 * (the device then completes it with status CANCELLED and the bytes
 * already moved; the head is still ours to write until its used entry
 * appears, and we hold q->lock, so it has not been reaped); a PARKED one
 * finishes with what its windows moved.  Any context; does not sleep.
 * Returns true if it finished here.
 */
static bool fifolab_cancel_locked(struct fifolab_queue *q,
				  struct fifolab_req *req)
{
	lockdep_assert_held(&q->lock);

	if (req->state == FIFOLAB_REQ_PARKED) {
		req->cancelled = true;
		fifolab_unpark_locked(q, req, 0);
		return true;
	}
	if (req->state != FIFOLAB_REQ_POSTED || q->dead || req->cancelled)
		return false;
	req->cancelled = true;
	WRITE_ONCE(q->desc[req->head].flags,
		   cpu_to_le16(req->head_flags | FIFOLAB_DESC_F_CANCEL));
	fifolab_ring(q->fdev);
	q->stats.cancels++;
	return false;
}

/* Woken for good: DONE, or given up on by the recovery (req->fail). */
static bool fifolab_req_ended(struct fifolab_req *req)
{
	return fifolab_req_done(req) || READ_ONCE(req->fail);
}

/*
 * Wait for a posted request.  Returns 0 once it is DONE (the caller owns it
 * again), or a negative errno if it had to be given up as ORPHANED (the
 * caller must forget it; the driver frees it when the device is known to
 * be done with it).  A signal cancels the request: the device completes it
 * with the bytes already moved and never touches its pages after that used
 * entry.  A stalled device makes the recovery set req->fail (-ETIMEDOUT).
 */
static int fifolab_req_wait(struct fifolab_req *req)
{
	struct fifolab_queue *q = req->q;
	struct fifolab_dev *fdev = q->fdev;
	int err = 0;
	u16 head;

	if (!wait_event_interruptible(q->wq, fifolab_req_ended(req)))
		goto ended;

	spin_lock_irq(&q->lock);
	fifolab_cancel_locked(q, req);
	spin_unlock_irq(&q->lock);

	/* uninterruptible: the pages must not go while the device has them */
	wait_event_timeout(q->wq, fifolab_req_ended(req),
			   msecs_to_jiffies(cancel_timeout_ms));
ended:
	if (fifolab_req_done(req))
		return 0;

	spin_lock_irq(&q->lock);
	if (req->state == FIFOLAB_REQ_POSTED) {
		req->state = FIFOLAB_REQ_ORPHANED;
		err = req->fail ?: -EIO;
	}
	head = req->head;	/* ORPHANED: the completion path may free it */
	spin_unlock_irq(&q->lock);
	if (!err)
		return 0;	/* completed under the lock just now */

	if (err == -EIO)
		dev_err_ratelimited(&fdev->dev,
				    "%s request (head %u) not returned %u ms after cancel; pages stay pinned until it is\n",
				    q->qid == FIFOLAB_QUEUE_RX ? "RX" : "TX",
				    head, cancel_timeout_ms);
	return err;
}

/*
 * What a DONE request gives its caller: the bytes moved if any (as a pipe
 * does: a signal, a cancel or an error after some bytes ends it with the
 * count; the error stays pending for the file), else its error.
 */
static long fifolab_req_result(const struct fifolab_req *req)
{
	if (req->moved)
		return req->moved;
	if (req->err)
		return req->err;
	if (req->cancel_err)
		return req->cancel_err;	/* async: -ECANCELED, -ETIMEDOUT */
	if (req->cancelled)
		return -ERESTARTSYS;	/* sync: a signal */
	if (req->nowait)
		return -EAGAIN;
	return -EIO;	/* a waiting request came back empty: device bug */
}

/*
 * One synchronous request: pin up to @max bytes of @it, post, wait.
 * Returns the bytes moved or a negative errno; does not advance @it.
 */
static ssize_t fifolab_xfer(struct fifolab_queue *q, struct iov_iter *it,
			    size_t max, bool nowait)
{
	struct fifolab_req *req;
	ssize_t ret;

	req = fifolab_req_alloc(q, it, max, nowait);
	if (IS_ERR(req))
		return PTR_ERR(req);

	ret = fifolab_req_post(req, !nowait, false);
	if (!ret) {
		ret = fifolab_req_wait(req);
		if (ret)
			return ret;	/* orphaned: no longer ours */
		ret = fifolab_req_result(req);
	}
	fifolab_req_free(req);
	return ret;
}

/* ------------------------------------------------------- errors, once */

/*
 * A device error that every open file must hear of once: its next read or
 * write fails with -EIO (unless it was the caller that got the error),
 * poll() shows EPOLLERR until then.  Any context.
 */
static void fifolab_error(struct fifolab_dev *fdev)
{
	atomic_inc(&fdev->err_gen);
	wake_up_interruptible_poll(&fdev->poll_wq, EPOLLERR);
}

static bool fifolab_err_pending(struct fifolab_file *ff)
{
	return READ_ONCE(ff->err_seen) != (unsigned int)atomic_read(&ff->fdev->err_gen);
}

/* Take @ff's pending error: true once per error, whoever asks first. */
static bool fifolab_err_take(struct fifolab_file *ff)
{
	unsigned int gen = atomic_read(&ff->fdev->err_gen);
	unsigned int seen = READ_ONCE(ff->err_seen);

	return seen != gen && cmpxchg(&ff->err_seen, seen, gen) == seen;
}

/* A caller on @ff got @ret: if it is the device's error, @ff has heard. */
static void fifolab_err_told(struct fifolab_file *ff, long ret)
{
	if (ret == -EIO || ret == -ETIMEDOUT)
		WRITE_ONCE(ff->err_seen, atomic_read(&ff->fdev->err_gen));
}

/* ------------------------------------------------------------ interrupt */

/*
 * Consume the used ring of @q; *@done counts the requests completed.
 *
 * The device is not trusted (datasheet 7, "Hostile completions"): at most
 * as many new entries as requests in flight, each naming a head in flight,
 * with no more bytes than asked for.  The first entry that breaks a rule
 * stops the queue (nothing more is posted or reaped) and makes this return
 * false: the caller has the device reset (fifolab_recover()), and every
 * request still in flight then fails with -EIO.  Entries before it were
 * valid and stand.  Such entries are counted (sysfs bad_completions) and
 * logged at a rate limit, never trusted for an array index or a length.
 */
static bool fifolab_reap(struct fifolab_queue *q, unsigned int *done)
{
	struct fifolab_dev *fdev = q->fdev;
	u32 used_idx, n;

	lockdep_assert_held(&q->lock);

	if (q->dead || q->stopped)
		return true;
	used_idx = le32_to_cpu(READ_ONCE(*q->used_idx_reg));
	n = used_idx - q->last_used;
	if (n > q->num_inflight) {
		/* a device that reset itself zeroed USED_IDX: not a lie */
		if (!(fifolab_rd32(fdev, FIFOLAB_REG_STATUS) & FIFOLAB_STS_READY))
			goto broken;
		q->stats.bad++;
		dev_warn_ratelimited(&fdev->dev,
				     "queue %u: USED_IDX %u is %u ahead with %u in flight\n",
				     q->qid, used_idx, n, q->num_inflight);
		goto broken;
	}
	rmb();				/* the index before the entries */

	for (; n; n--, q->last_used++) {
		struct fifolab_used *u =
			&q->used[q->last_used % FIFOLAB_QUEUE_SIZE];
		u32 id = le32_to_cpu(READ_ONCE(u->id));
		u32 len = le32_to_cpu(READ_ONCE(u->len));
		u32 status = le32_to_cpu(READ_ONCE(u->status));
		struct fifolab_req *req;
		int err = 0;

		req = id < FIFOLAB_QUEUE_SIZE ? q->inflight[id] : NULL;
		if (!req) {
			q->stats.bad++;
			dev_warn_ratelimited(&fdev->dev,
					     "queue %u: used entry for head %u, which is not in flight\n",
					     q->qid, id);
			goto broken;
		}
		if (len > req->win_len) {
			q->stats.bad++;
			dev_warn_ratelimited(&fdev->dev,
					     "queue %u: head %u moved %u of %u bytes\n",
					     q->qid, id, len, req->win_len);
			fifolab_complete(q, req, 0, -EIO);
			(*done)++;
			q->last_used++;
			goto broken;
		}
		switch (status) {
		case FIFOLAB_ST_OK:
			break;
		case FIFOLAB_ST_CANCELLED:
			if (!req->cancelled)
				q->stats.bad++;
			req->aborted = true;
			break;
		case FIFOLAB_ST_DMA_ERROR:
		case FIFOLAB_ST_BAD_DESC:
			dev_err_ratelimited(&fdev->dev,
					    "queue %u: head %u failed with status %u\n",
					    q->qid, id, status);
			/* before the owner can see the request end */
			fifolab_error(fdev);
			err = -EIO;
			len = 0;
			break;
		default:
			q->stats.bad++;
			err = -EIO;
			len = 0;
			break;
		}
		fifolab_complete(q, req, len, err);
		(*done)++;
	}
	return true;

broken:
	q->stopped = true;
	return false;
}

/* Reap @q; false if the device broke a rule (see fifolab_reap()). */
static bool fifolab_queue_irq(struct fifolab_queue *q, bool level_changed)
{
	unsigned int done = 0;
	unsigned long flags;
	bool ok, work;

	spin_lock_irqsave(&q->lock, flags);
	ok = fifolab_reap(q, &done);
	fifolab_post_parked_locked(q);
	work = !list_empty(&q->orphans) || !list_empty(&q->aio_done);
	spin_unlock_irqrestore(&q->lock, flags);

	if (work)
		schedule_work(&q->fdev->done_work);
	if (done || level_changed)
		wake_up(&q->wq);
	return ok;
}

/* SIGIO to the file owners that asked for it (F_SETOWN, F_SETSIG). */
static void fifolab_notify(struct fifolab_dev *fdev, int band)
{
	/* a racy peek: counts the calls made while the list is non-empty */
	if (!READ_ONCE(fdev->fasync))
		return;
	atomic64_inc(&fdev->sigio_sent);
	kill_fasync(&fdev->fasync, SIGIO, band);	/* IRQ-safe */
}

/*
 * The device can no longer be trusted to finish what it holds: it reset
 * itself (@err -EIO), broke a rule (-EIO) or stalled (-ETIMEDOUT) -- or
 * FIFOLAB_IOC_CLEAR asks for a reset (-ECANCELED, !@report).  Stop both
 * queues and let fifolab_recover_work() reset it, fail what was in flight
 * with @err and bring it up again.  A fault (@report) is an error every
 * open file hears of once: the reset lost whatever the FIFO held.  Any
 * context; the first reason wins until the recovery is over.  Returns
 * whether this call started the recovery.
 */
static bool fifolab_recover(struct fifolab_dev *fdev, int err, bool report)
{
	unsigned long flags;
	unsigned int i;
	bool start, kick = false;

	spin_lock_irqsave(&fdev->irq_lock, flags);
	start = fdev->hw_state == FIFOLAB_HW_RUNNING;
	if (start) {
		fdev->hw_state = FIFOLAB_HW_RECOVERING;
		fdev->recover_err = err;
		fdev->recover_report = report;
	}
	spin_unlock_irqrestore(&fdev->irq_lock, flags);
	if (!start)
		return false;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irqsave(&q->lock, flags);
		q->stopped = true;
		kick |= fifolab_unpark_all_locked(q, err);
		spin_unlock_irqrestore(&q->lock, flags);
		wake_up_all(&q->wq);
	}
	if (kick)
		schedule_work(&fdev->done_work);
	mod_delayed_work(system_wq, &fdev->recover_work, 0);
	if (report) {
		fifolab_error(fdev);
		fifolab_notify(fdev, POLL_ERR);
	}
	return true;
}

/* ERR_CODE names, datasheet 5 */
static const char * const fifolab_err_names[] = {
	[FIFOLAB_ERR_NONE] = "none",
	[FIFOLAB_ERR_DMA_RANGE] = "DMA_RANGE",
	[FIFOLAB_ERR_DESC_INDEX] = "DESC_INDEX",
	[FIFOLAB_ERR_DESC_CHAIN] = "DESC_CHAIN",
	[FIFOLAB_ERR_DESC_LEN] = "DESC_LEN",
	[FIFOLAB_ERR_REQ_LEN] = "REQ_LEN",
	[FIFOLAB_ERR_AVAIL_IDX] = "AVAIL_IDX",
};

/*
 * The device reported an error.  A request's own error (codes 1-5) also
 * completes that request with an error status, which fails it; AVAIL_IDX
 * (6) stops the device (READY clear) and the caller recovers as from a
 * reset the device did itself.
 */
static void fifolab_log_error(struct fifolab_dev *fdev)
{
	u32 code = fifolab_rd32(fdev, FIFOLAB_REG_ERR_CODE);
	u64 addr = fifolab_rd64(fdev, FIFOLAB_REG_ERR_ADDR);

	dev_err_ratelimited(&fdev->dev, "device error %u (%s) at %#llx\n",
			    code, code < ARRAY_SIZE(fifolab_err_names) ?
			    fifolab_err_names[code] : "unknown", addr);
}

/*
 * Ack every pending cause, then act on it: the interrupt handler, and the
 * watchdog for a message that never came.  Returns the causes that were
 * pending.  Any context; @from_irq: a message came (sysfs irqs).
 */
static u32 fifolab_handle(struct fifolab_dev *fdev, bool from_irq)
{
	u32 raised, causes, status;
	unsigned long flags;
	bool running, ok;

	spin_lock_irqsave(&fdev->irq_lock, flags);
	raised = fifolab_rd32(fdev, FIFOLAB_REG_INT_RAISED);
	causes = raised ^ fdev->int_acked;
	fdev->int_acked = raised;
	fifolab_wr32(fdev, FIFOLAB_REG_INT_ACKED, raised);
	fdev->irqs += from_irq;
	running = fdev->hw_state == FIFOLAB_HW_RUNNING;
	spin_unlock_irqrestore(&fdev->irq_lock, flags);
	mb();		/* the ack before the indices it covers (datasheet 2) */

	if (causes & FIFOLAB_INT_ERROR)
		fifolab_log_error(fdev);

	/*
	 * A reset we did not ask for (ours run with causes masked and outside
	 * RUNNING): everything in flight was dropped without a used entry and
	 * USED_IDX is 0 again.  Or the device stopped itself (READY clear, the
	 * AVAIL_IDX error of datasheet 5): it completes nothing more until a
	 * reset.  Either way, do not reap; re-initialise (datasheet 7).
	 */
	status = fifolab_rd32(fdev, FIFOLAB_REG_STATUS);
	if (running && ((causes & FIFOLAB_INT_RESET) ||
			!(status & FIFOLAB_STS_READY))) {
		atomic64_inc(&fdev->device_resets);
		dev_warn_ratelimited(&fdev->dev,
				     "device reset or stopped itself (status %#x): recovering\n",
				     status);
		fifolab_recover(fdev, -EIO, true);
		return causes;
	}

	/* reap both queues whatever the causes: reaping is idempotent */
	ok = fifolab_queue_irq(&fdev->queue[FIFOLAB_QUEUE_TX],
			       causes & FIFOLAB_INT_SPACE_AVAIL);
	ok &= fifolab_queue_irq(&fdev->queue[FIFOLAB_QUEUE_RX],
				causes & FIFOLAB_INT_DATA_AVAIL);
	if (!ok)
		fifolab_recover(fdev, -EIO, true);

	/*
	 * What poll() reports may have changed (errors: fifolab_error()):
	 * levels, and completions, which give back what posted requests had
	 * claimed (fifolab_poll()).
	 */
	if (causes & FIFOLAB_INT_POLL_IN)
		wake_up_interruptible_poll(&fdev->poll_wq,
					   EPOLLIN | EPOLLRDNORM |
					   (causes & FIFOLAB_INT_POLL_OUT ?
					    EPOLLOUT | EPOLLWRNORM : 0));
	else if (causes & FIFOLAB_INT_POLL_OUT)
		wake_up_interruptible_poll(&fdev->poll_wq,
					   EPOLLOUT | EPOLLWRNORM);
	if (causes & FIFOLAB_INT_DATA_AVAIL)
		fifolab_notify(fdev, POLL_IN);
	if (causes & FIFOLAB_INT_SPACE_AVAIL)
		fifolab_notify(fdev, POLL_OUT);
	if (causes & FIFOLAB_INT_ERROR)
		fifolab_notify(fdev, POLL_ERR);
	return causes;
}

/*
 * Both vectors: the cause register tells everything (datasheet 1).  A
 * message with no cause pending (spurious, or one whose cause the other
 * vector's handler or the watchdog already took) is counted and ignored;
 * it is still ours (MSI-X), so IRQ_HANDLED.
 */
static irqreturn_t fifolab_irq(int irq, void *data)
{
	struct fifolab_dev *fdev = data;

	if (!fifolab_handle(fdev, true))
		atomic64_inc(&fdev->spurious_irqs);
	return IRQ_HANDLED;
}

/* Someone waits for a readiness change: a poller, an epoll, a SIGIO owner. */
static bool fifolab_listened(struct fifolab_dev *fdev)
{
	return wq_has_sleeper(&fdev->poll_wq) || READ_ONCE(fdev->fasync);
}

/*
 * The watchdog: runs every completion_timeout_ms while requests are in
 * flight (fifolab_post_locked() arms it) or someone listens for readiness
 * (poll(), fasync arm it); it re-arms itself while either lasts.
 *
 * Lost interrupts (datasheet 7): a message may never come although its
 * cause flipped in INT_RAISED; the cause then stays pending and the device
 * raises it no more.  So each run acks and handles what is pending, as the
 * interrupt handler would: nothing is lost -- neither a completion nor the
 * DATA_AVAIL/SPACE_AVAIL a poller with no request in flight waits for --
 * and since reaping is idempotent under q->lock nothing is completed twice.
 * Causes found pending here are counted in sysfs lost_irqs.
 *
 * Stalls: a request may wait for ever for good reasons (a read of an empty
 * FIFO), so time in flight says nothing.  The device's liveness does: each
 * run with requests in flight rings a doorbell, which a working device
 * counts in STAT_DOORBELLS (it changes nothing else; datasheet 1).  If
 * STAT_DOORBELLS stands still for stall_timeout_ms while requests are in
 * flight, the device is stalled: fifolab_recover(-ETIMEDOUT).
 */
static void fifolab_watch_work(struct work_struct *work)
{
	struct fifolab_dev *fdev = container_of(to_delayed_work(work),
						struct fifolab_dev,
						watch_work);
	unsigned int stall = READ_ONCE(stall_timeout_ms);
	unsigned int i, busy = 0;
	bool running, dead = false;
	u64 doorbells;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		busy += q->num_inflight;
		dead |= q->dead;
		spin_unlock_irq(&q->lock);
	}
	spin_lock_irq(&fdev->irq_lock);
	running = fdev->hw_state == FIFOLAB_HW_RUNNING;
	spin_unlock_irq(&fdev->irq_lock);
	if (dead || !running || (!busy && !fifolab_listened(fdev))) {
		/* a post, poll() or fasync re-arms; the recovery fails what is in flight */
		fdev->watch_busy = false;
		return;
	}

	if (fifolab_handle(fdev, false))
		atomic64_inc(&fdev->lost_irqs);

	if (!busy) {
		fdev->watch_busy = false;	/* only listeners: no stall to see */
		goto again;
	}
	doorbells = fifolab_rd64(fdev, FIFOLAB_REG_STAT_DOORBELLS);
	if (!fdev->watch_busy || doorbells != fdev->watch_doorbells) {
		fdev->watch_busy = true;
		fdev->watch_doorbells = doorbells;
		fdev->alive_at = jiffies;
	} else if (stall && time_after(jiffies, fdev->alive_at +
				       msecs_to_jiffies(stall))) {
		atomic64_inc(&fdev->stalls);
		dev_warn(&fdev->dev,
			 "device handled no doorbell for %u ms with %u requests in flight: stalled\n",
			 jiffies_to_msecs(jiffies - fdev->alive_at), busy);
		fdev->watch_busy = false;
		fifolab_recover(fdev, -ETIMEDOUT, true);
		return;
	}
	fifolab_ring(fdev);		/* the heartbeat */
again:
	queue_delayed_work(system_wq, &fdev->watch_work,
			   fifolab_watch_period());
}

/*
 * Complete a DONE async request: unmap (the CPU now sees what the device
 * wrote), unpin (dirtying pages a read filled), then ki_complete().  Process
 * context: unpinning may sleep.  ki_complete() is called with no lock of
 * ours held: it takes the aio context's ctx_lock, under which the aio core
 * calls fifolab_aio_cancel(), which takes q->lock.
 */
static void fifolab_aio_finish(struct fifolab_req *req)
{
	struct fifolab_queue *q = req->q;
	struct fifolab_dev *fdev = q->fdev;
	struct kiocb *iocb = req->iocb;
	long res = fifolab_req_result(req);

	/* from here fifolab_aio_cancel() no longer finds the request */
	spin_lock_irq(&q->lock);
	iocb->private = NULL;
	spin_unlock_irq(&q->lock);

	if (req->aborted)
		atomic64_inc(&fdev->aio.cancelled);
	else if (res < 0)
		atomic64_inc(&fdev->aio.failed);
	else
		atomic64_inc(&fdev->aio.completed);
	fifolab_err_told(req->ff, res);

	fifolab_req_free(req);
	iocb->ki_complete(iocb, res);	/* @iocb may be gone after this */
}

/*
 * Finish what the interrupt handler (or remove()) completed: free orphans,
 * complete async kiocbs.
 */
static void fifolab_done(struct fifolab_dev *fdev)
{
	struct fifolab_req *req, *tmp;
	LIST_HEAD(orphans);
	LIST_HEAD(aios);
	unsigned int i;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		list_splice_tail_init(&q->orphans, &orphans);
		list_splice_tail_init(&q->aio_done, &aios);
		spin_unlock_irq(&q->lock);
	}
	list_for_each_entry_safe(req, tmp, &orphans, node) {
		list_del(&req->node);
		fifolab_req_free(req);
	}
	list_for_each_entry_safe(req, tmp, &aios, node) {
		list_del(&req->node);
		fifolab_aio_finish(req);
	}
}

static void fifolab_done_work(struct work_struct *work)
{
	fifolab_done(container_of(work, struct fifolab_dev, done_work));
}

/*
 * Ask the device to give a POSTED async request back (or, still NEW, stop
 * it from being posted; PARKED, finish it with what moved).  @err is what
 * the kiocb completes with if nothing moved.  Returns 0, or -EAGAIN if it
 * is too late: it completed already.
 */
static int fifolab_aio_cancel_locked(struct fifolab_queue *q,
				     struct fifolab_req *req, int err)
{
	lockdep_assert_held(&q->lock);

	if (req->cancel_err)
		return 0;			/* cancelled already */
	switch (req->state) {
	case FIFOLAB_REQ_NEW:			/* the submitter is posting it */
		req->cancel_err = err;
		wake_up(&q->wq);		/* it may wait for descriptors */
		return 0;
	case FIFOLAB_REQ_POSTED:
	case FIFOLAB_REQ_PARKED:
		if (q->dead)			/* remove() fails it */
			return 0;
		req->cancel_err = err;
		if (fifolab_cancel_locked(q, req))
			schedule_work(&q->fdev->done_work);
		return 0;
	default:
		return -EAGAIN;
	}
}

/*
 * io_cancel(2), and io_destroy(2) or exit for every libaio request still
 * pending (fs/aio.c free_ioctx_users()).  Called by the aio core under its
 * ctx_lock with interrupts off, for a kiocb still on its active list (so
 * alive, and holding our file): must not sleep.  The kiocb is completed
 * later, by fifolab_aio_finish(), when the device has returned it.
 */
static int fifolab_aio_cancel(struct kiocb *iocb)
{
	struct fifolab_file *ff = iocb->ki_filp->private_data;
	struct fifolab_dev *fdev = ff->fdev;
	unsigned int qid = iocb->ki_flags & IOCB_WRITE ? FIFOLAB_QUEUE_TX :
							  FIFOLAB_QUEUE_RX;
	struct fifolab_queue *q = &fdev->queue[qid];
	struct fifolab_req *req;
	unsigned long flags;
	int ret = -EAGAIN;

	spin_lock_irqsave(&q->lock, flags);
	req = iocb->private;		/* NULL once fifolab_aio_finish() began */
	if (req)
		ret = fifolab_aio_cancel_locked(q, req, -ECANCELED);
	spin_unlock_irqrestore(&q->lock, flags);
	return ret;
}

/* async_timeout_ms: cancel async requests pending for too long. */
static void fifolab_timeout_work(struct work_struct *work)
{
	struct fifolab_dev *fdev = container_of(to_delayed_work(work),
						struct fifolab_dev,
						timeout_work);
	unsigned long next = 0;
	bool rearm = false;
	unsigned int i;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];
		struct fifolab_req *req, *tmp;

		spin_lock_irq(&q->lock);
		/* _safe: a PARKED request leaves the list when cancelled */
		list_for_each_entry_safe(req, tmp, &q->aios, node) {
			if (!req->timed || req->cancel_err || q->dead)
				continue;
			if (!time_after(req->deadline, jiffies)) {
				fifolab_aio_cancel_locked(q, req, -ETIMEDOUT);
			} else if (!rearm || time_before(req->deadline, next)) {
				next = req->deadline;
				rearm = true;
			}
		}
		spin_unlock_irq(&q->lock);
	}
	if (rearm)
		queue_delayed_work(system_wq, &fdev->timeout_work,
				   fifolab_until(next));
}

/* ----------------------------------------------------------- file ops */

struct fifolab_levels {
	u32 rx_level;
	u32 tx_space;
};

/*
 * A snapshot of RX_LEVEL and TX_SPACE.  False once remove() has begun:
 * BAR2 may be unmapped then.  Needs no request (poll() has none).
 * @listen: the caller waits for readiness; keep the watchdog running, so
 * that a lost DATA_AVAIL or SPACE_AVAIL message does not leave it asleep.
 */
static bool fifolab_read_levels(struct fifolab_dev *fdev,
				struct fifolab_levels *lv, bool listen)
{
	unsigned long flags;
	bool alive;

	spin_lock_irqsave(&fdev->irq_lock, flags);
	alive = !fdev->removed;		/* remove() cancels the watchdog after */
	if (alive) {
		lv->rx_level = fifolab_rd32(fdev, FIFOLAB_REG_RX_LEVEL);
		lv->tx_space = fifolab_rd32(fdev, FIFOLAB_REG_TX_SPACE);
		if (listen)
			queue_delayed_work(system_wq, &fdev->watch_work,
					   fifolab_watch_period());
	}
	spin_unlock_irqrestore(&fdev->irq_lock, flags);
	return alive;
}

/*
 * For a request that must not wait (O_NONBLOCK, IOCB_NOWAIT): -EAGAIN if
 * it cannot start now, before any page is pinned.  A read needs a byte in
 * the FIFO.  A write of at most PIPE_BUF bytes needs room for all of it
 * (atomic, as on a pipe), a larger one room for a byte -- or, @whole, room
 * for all of it: io_uring's inline try, which must not end short (io_uring
 * hands a char device's short count to the user as it is) and comes back
 * through poll, then in io-wq, where it may wait.  Racy by nature; the
 * device has the last word (FIFOLAB_DESC_F_NOWAIT).
 */
static int fifolab_would_block(struct fifolab_queue *q, size_t len,
			       bool whole)
{
	struct fifolab_levels lv;
	size_t need;

	if (!fifolab_read_levels(q->fdev, &lv, false))
		return -ENODEV;
	if (q->qid == FIFOLAB_QUEUE_RX)
		return lv.rx_level ? 0 : -EAGAIN;
	need = whole || len <= PIPE_BUF ? len : 1;
	return lv.tx_space >= need ? 0 : -EAGAIN;
}

/* Bytes one read may take: what the FIFO can hold, as a pipe. */
static size_t fifolab_read_max(struct fifolab_queue *q)
{
	return q->fdev->fifo_depth;
}

/*
 * An async kiocb (libaio; io_uring's inline try): pin and map every byte
 * of @it (a read: up to the FIFO's depth) -- @it is the submitter's and
 * gone once we return -- post the first window and return -EIOCBQUEUED.
 * The completion path posts the windows that follow and
 * fifolab_aio_finish() completes the kiocb with every byte moved, or the
 * count so far if a window came back short (a read: the FIFO had no more;
 * NOWAIT: no more room), failed or was cancelled.
 *
 * @nowait (IOCB_NOWAIT or O_NONBLOCK): the caller has seen that bytes can
 * move now (fifolab_would_block()); do not sleep for descriptors either,
 * and post every window NOWAIT, so that the request ends at once: io_uring
 * cannot cancel a request once we returned -EIOCBQUEUED (exec() and ring
 * teardown wait for it), so an io_uring request never waits in the device.
 * @whole (io_uring's inline try): post only if it will not end short or
 * empty with the requests already posted (fifolab_room_locked()); -EAGAIN
 * sends it back to io_uring's poll.
 */
static ssize_t fifolab_aio_submit(struct kiocb *iocb, struct iov_iter *it,
				  struct fifolab_queue *q, bool nowait,
				  bool whole)
{
	unsigned int timeout = READ_ONCE(async_timeout_ms);
	size_t max = q->qid == FIFOLAB_QUEUE_RX ? fifolab_read_max(q) : SIZE_MAX;
	struct fifolab_req *req;
	int ret;

	req = fifolab_req_alloc(q, it, max, nowait);
	if (IS_ERR(req))
		return PTR_ERR(req);
	req->iocb = iocb;
	req->ff = iocb->ki_filp->private_data;
	if (timeout) {
		req->timed = true;
		req->deadline = jiffies + msecs_to_jiffies(timeout);
	}

	/*
	 * Before posting: once posted, the request may complete (and @iocb
	 * be freed) at any time.  io_cancel() may run from here on; it finds
	 * the request through ->private (a no-op for io_uring kiocbs).
	 */
	iocb->private = req;
	kiocb_set_cancel_fn(iocb, fifolab_aio_cancel);

	ret = fifolab_req_post(req, !nowait, whole);
	if (ret) {
		/* not posted: we complete nothing, the aio core will */
		spin_lock_irq(&q->lock);
		iocb->private = NULL;
		spin_unlock_irq(&q->lock);
		fifolab_req_free(req);
		return ret;
	}
	/*
	 * Posted.  The pinned pages and the descriptors now belong to the
	 * device, @req and @iocb to the completion path (fifolab_reap() ->
	 * done_work -> fifolab_aio_finish()): touch neither again.
	 */
	return -EIOCBQUEUED;
}

/*
 * The synchronous path: a read takes what the FIFO holds (at least a byte,
 * waiting for it unless @nowait), up to the iovec's total and the FIFO's
 * depth; a write moves every byte before it returns, in requests of at
 * most FIFOLAB_SYNC_PIN bytes, unless a signal (or, @nowait, a full FIFO)
 * ends it -- then the count moved so far, as a pipe.
 */
static ssize_t fifolab_sync_rw(struct fifolab_queue *q, struct iov_iter *it,
			       bool nowait)
{
	bool rx = q->qid == FIFOLAB_QUEUE_RX;
	size_t max = rx ? fifolab_read_max(q) : FIFOLAB_SYNC_PIN;
	ssize_t total = 0, ret = 0;

	while (iov_iter_count(it)) {
		size_t want = min(iov_iter_count(it), max);

		if (total && signal_pending(current))
			break;
		ret = fifolab_xfer(q, it, max, nowait);
		if (ret <= 0)
			break;
		iov_iter_advance(it, ret);
		total += ret;
		if (rx || (size_t)ret < want)
			break;
	}
	return total ? total : ret;
}

/*
 * Every read and write.  A pending device error is reported first, once
 * (fifolab_err_take()).  Then:
 *   sync kiocb (read(2), readv(2), glibc's POSIX AIO threads): the sync
 *     path, sleeping here;
 *   libaio (IOCB_AIO_RW): fifolab_aio_submit(), waiting in the device;
 *   io_uring's inline try (IOCB_NOWAIT): fifolab_aio_submit() if it can
 *     complete at once, else -EAGAIN: io_uring polls and tries again, in
 *     the end from io-wq without IOCB_NOWAIT;
 *   io_uring from io-wq: the sync path in the worker, which io_uring's
 *     cancellation (exec, exit, ring teardown, ASYNC_CANCEL) interrupts
 *     like a signal: the request ends with its count, or -ECANCELED.
 */
static ssize_t fifolab_rw(struct kiocb *iocb, struct iov_iter *it,
			  unsigned int qid)
{
	struct file *file = iocb->ki_filp;
	struct fifolab_file *ff = file->private_data;
	struct fifolab_queue *q = &ff->fdev->queue[qid];
	bool nonblock = file->f_flags & O_NONBLOCK;
	/* O_NONBLOCK does not set IOCB_NOWAIT (nor the reverse): ask both */
	bool nowait = nonblock || (iocb->ki_flags & IOCB_NOWAIT);
	bool uring = !is_sync_kiocb(iocb) && !(iocb->ki_flags & IOCB_AIO_RW);
	bool whole = uring && !nonblock;	/* the inline try, see above */
	size_t count = iov_iter_count(it);
	ssize_t ret;

	if (!user_backed_iter(it))
		return -EINVAL;
	if (!count)
		return 0;
	if (fifolab_err_take(ff))
		return -EIO;
	if (nowait) {
		ret = fifolab_would_block(q, count, whole);
		if (ret)
			return ret;
	}
	if (!is_sync_kiocb(iocb) && (!uring || nowait))
		return fifolab_aio_submit(iocb, it, q, nowait, whole);

	ret = fifolab_sync_rw(q, it, nowait);
	fifolab_err_told(ff, ret);
	if (ret == -ERESTARTSYS && (current->flags & PF_IO_WORKER))
		ret = -ECANCELED;	/* io-wq's cancellation, not a signal */
	return ret;
}

static ssize_t fifolab_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	return fifolab_rw(iocb, to, FIFOLAB_QUEUE_RX);
}

static ssize_t fifolab_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	return fifolab_rw(iocb, from, FIFOLAB_QUEUE_TX);
}

static int fifolab_open(struct inode *inode, struct file *file)
{
	struct fifolab_dev *fdev = container_of(inode->i_cdev,
						struct fifolab_dev, cdev);
	struct fifolab_file *ff;
	int ret;

	/* the open file's cdev reference keeps fdev alive (cdev_device_add) */
	if (READ_ONCE(fdev->removed))
		return -ENODEV;
	ret = stream_open(inode, file);
	if (ret)
		return ret;
	ff = kzalloc(sizeof(*ff), GFP_KERNEL);
	if (!ff)
		return -ENOMEM;
	ff->fdev = fdev;
	/* errors before the open are not this file's */
	ff->err_seen = atomic_read(&fdev->err_gen);
	file->private_data = ff;
	/* IOCB_NOWAIT is honoured: io_uring tries inline, polls on -EAGAIN */
	file->f_mode |= FMODE_NOWAIT;
	return 0;
}

/* The last reference: no request of ours holds the file any more. */
static int fifolab_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

/*
 * Readable while the FIFO holds bytes that no posted read will take,
 * writable while room for a write of PIPE_BUF bytes (as a pipe says; or
 * the whole FIFO, if smaller) is left after the posted writes
 * (fifolab_claimable()): what a request made now would get, so that
 * io_uring's poll, which retries its inline try, fires when that succeeds.
 * EPOLLERR while this file has a device error it has not been told of, or
 * while the device is given up on (stalled: every request fails at once),
 * EPOLLHUP once the device is gone.  One wait queue, woken with the events
 * that changed, so that every poller (aio's IOCB_CMD_POLL takes one only)
 * can wait on it and epoll can tell which.
 */
static __poll_t fifolab_poll(struct file *file, poll_table *wait)
{
	struct fifolab_file *ff = file->private_data;
	struct fifolab_dev *fdev = ff->fdev;
	struct fifolab_levels lv;
	__poll_t mask = 0;

	poll_wait(file, &fdev->poll_wq, wait);
	if (!fifolab_read_levels(fdev, &lv, !poll_does_not_wait(wait)))
		return EPOLLHUP;
	/* what a request posted now would get: after those already posted */
	if (fifolab_claimable(&fdev->queue[FIFOLAB_QUEUE_RX], lv.rx_level))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (fifolab_claimable(&fdev->queue[FIFOLAB_QUEUE_TX], lv.tx_space) >=
	    min_t(u32, PIPE_BUF, fdev->fifo_depth))
		mask |= EPOLLOUT | EPOLLWRNORM;
	/* an error not yet told; or given up on (stalled): I/O fails at once */
	if (fifolab_err_pending(ff) ||
	    READ_ONCE(fdev->queue[FIFOLAB_QUEUE_TX].stop_err))
		mask |= EPOLLERR;
	return mask;
}

/* FIOASYNC / F_SETFL O_ASYNC; __fput() calls it with on = 0 on release. */
static int fifolab_fasync(int fd, struct file *file, int on)
{
	struct fifolab_file *ff = file->private_data;
	struct fifolab_levels lv;
	int ret;

	ret = fasync_helper(fd, file, on, &ff->fdev->fasync);
	if (ret > 0 && on)
		fifolab_read_levels(ff->fdev, &lv, true);	/* the watchdog */
	return ret;
}

static bool fifolab_running(struct fifolab_dev *fdev)
{
	bool running;

	spin_lock_irq(&fdev->irq_lock);
	running = fdev->hw_state == FIFOLAB_HW_RUNNING;
	spin_unlock_irq(&fdev->irq_lock);
	return running;
}

/*
 * FIFOLAB_IOC_CLEAR: reset the device, which empties its FIFOs; what was
 * pending ends with its count or -ECANCELED.  No error is reported for it:
 * it was asked for.  Returns once the device is back.
 */
static int fifolab_clear(struct fifolab_dev *fdev)
{
	/* recover_work wakes both queues' waiters when it is done */
	wait_queue_head_t *wq = &fdev->queue[FIFOLAB_QUEUE_TX].wq;
	long left;

	if (fifolab_recover(fdev, -ECANCELED, false))
		atomic64_inc(&fdev->clears);
	/* else a recovery is under way: its reset empties the FIFO as well */
	left = wait_event_interruptible_timeout(*wq, fifolab_running(fdev) ||
						READ_ONCE(fdev->removed),
						msecs_to_jiffies(stall_timeout_ms ?: 5000));
	if (left < 0)
		return left;
	if (READ_ONCE(fdev->removed))
		return -ENODEV;
	return left ? 0 : -ETIMEDOUT;
}

/* Dispatch: one helper per command (the uapi header says what each does). */
static long fifolab_ioctl(struct file *file, unsigned int cmd,
			  unsigned long arg)
{
	struct fifolab_file *ff = file->private_data;
	struct fifolab_dev *fdev = ff->fdev;
	struct fifolab_levels lv;

	switch (cmd) {
	case FIONREAD:
		if (!fifolab_read_levels(fdev, &lv, false))
			return -ENODEV;
		return put_user((int)min_t(u32, lv.rx_level, INT_MAX),
				(int __user *)arg);
	case FIFOLAB_IOC_GET_DEPTH:
		return put_user(fdev->fifo_depth, (__u32 __user *)arg);
	case FIFOLAB_IOC_GET_SPACE:
		if (!fifolab_read_levels(fdev, &lv, false))
			return -ENODEV;
		return put_user(lv.tx_space, (__u32 __user *)arg);
	case FIFOLAB_IOC_CLEAR:
		return fifolab_clear(fdev);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations fifolab_fops = {
	.owner		= THIS_MODULE,
	.open		= fifolab_open,
	.release	= fifolab_release,
	.read_iter	= fifolab_read_iter,
	.write_iter	= fifolab_write_iter,
	.poll		= fifolab_poll,
	.fasync		= fifolab_fasync,
	.unlocked_ioctl	= fifolab_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= no_llseek,
};

/* ---------------------------------------------------------------- sysfs */

static struct fifolab_dev *to_fifolab(struct device *dev)
{
	return container_of(dev, struct fifolab_dev, dev);
}

/* A consistent copy of queue @qid's counters. */
static struct fifolab_queue_stats fifolab_stats(struct fifolab_dev *fdev,
						unsigned int qid)
{
	struct fifolab_queue *q = &fdev->queue[qid];
	struct fifolab_queue_stats st;

	spin_lock_irq(&q->lock);
	st = q->stats;
	spin_unlock_irq(&q->lock);
	return st;
}

static ssize_t tx_bytes_show(struct device *dev, struct device_attribute *attr,
			     char *buf)
{
	struct fifolab_dev *fdev = to_fifolab(dev);

	return sysfs_emit(buf, "%llu\n", fifolab_stats(fdev, FIFOLAB_QUEUE_TX).bytes);
}
static DEVICE_ATTR_RO(tx_bytes);

static ssize_t rx_bytes_show(struct device *dev, struct device_attribute *attr,
			     char *buf)
{
	struct fifolab_dev *fdev = to_fifolab(dev);

	return sysfs_emit(buf, "%llu\n", fifolab_stats(fdev, FIFOLAB_QUEUE_RX).bytes);
}
static DEVICE_ATTR_RO(rx_bytes);

/* a counter kept per queue (q->stats.@field), shown as the sum of both */
#define FIFOLAB_QUEUE_SUM_ATTR(name, field)					\
static ssize_t name##_show(struct device *dev,					\
			   struct device_attribute *attr, char *buf)		\
{										\
	struct fifolab_dev *fdev = to_fifolab(dev);				\
										\
	return sysfs_emit(buf, "%llu\n",					\
			  fifolab_stats(fdev, FIFOLAB_QUEUE_TX).field +		\
			  fifolab_stats(fdev, FIFOLAB_QUEUE_RX).field);		\
}										\
static DEVICE_ATTR_RO(name)

FIFOLAB_QUEUE_SUM_ATTR(cancels, cancels);
FIFOLAB_QUEUE_SUM_ATTR(bad_completions, bad);
FIFOLAB_QUEUE_SUM_ATTR(doorbells, doorbells);
FIFOLAB_QUEUE_SUM_ATTR(doorbells_skipped, doorbells_skipped);

static ssize_t irqs_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	struct fifolab_dev *fdev = to_fifolab(dev);
	u64 val;

	spin_lock_irq(&fdev->irq_lock);
	val = fdev->irqs;
	spin_unlock_irq(&fdev->irq_lock);
	return sysfs_emit(buf, "%llu\n", val);
}
static DEVICE_ATTR_RO(irqs);

static ssize_t fifolab_show_count(char *buf, atomic64_t *count)
{
	return sysfs_emit(buf, "%lld\n", atomic64_read(count));
}

static ssize_t async_submitted_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->aio.submitted);
}
static DEVICE_ATTR_RO(async_submitted);

static ssize_t async_completed_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->aio.completed);
}
static DEVICE_ATTR_RO(async_completed);

static ssize_t async_cancelled_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->aio.cancelled);
}
static DEVICE_ATTR_RO(async_cancelled);

static ssize_t async_failed_show(struct device *dev,
				 struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->aio.failed);
}
static DEVICE_ATTR_RO(async_failed);

static ssize_t sigio_sent_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->sigio_sent);
}
static DEVICE_ATTR_RO(sigio_sent);

static ssize_t recoveries_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->recoveries);
}
static DEVICE_ATTR_RO(recoveries);

static ssize_t device_resets_show(struct device *dev,
				  struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->device_resets);
}
static DEVICE_ATTR_RO(device_resets);

static ssize_t stalls_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->stalls);
}
static DEVICE_ATTR_RO(stalls);

static ssize_t lost_irqs_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->lost_irqs);
}
static DEVICE_ATTR_RO(lost_irqs);

static ssize_t clears_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->clears);
}
static DEVICE_ATTR_RO(clears);

/* device errors reported to the open files (each hears of each once) */
static ssize_t errors_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	return sysfs_emit(buf, "%u\n",
			  (unsigned int)atomic_read(&to_fifolab(dev)->err_gen));
}
static DEVICE_ATTR_RO(errors);

static ssize_t spurious_irqs_show(struct device *dev,
				  struct device_attribute *attr, char *buf)
{
	return fifolab_show_count(buf, &to_fifolab(dev)->spurious_irqs);
}
static DEVICE_ATTR_RO(spurious_irqs);

/* 1 while the device works, 0 while a fault is being recovered from */
static ssize_t running_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	struct fifolab_dev *fdev = to_fifolab(dev);
	bool running;

	spin_lock_irq(&fdev->irq_lock);
	running = fdev->hw_state == FIFOLAB_HW_RUNNING;
	spin_unlock_irq(&fdev->irq_lock);
	return sysfs_emit(buf, "%d\n", running);
}
static DEVICE_ATTR_RO(running);

static ssize_t fifo_depth_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", to_fifolab(dev)->fifo_depth);
}
static DEVICE_ATTR_RO(fifo_depth);

static struct attribute *fifolab_attrs[] = {
	&dev_attr_tx_bytes.attr,
	&dev_attr_rx_bytes.attr,
	&dev_attr_cancels.attr,
	&dev_attr_doorbells.attr,
	&dev_attr_doorbells_skipped.attr,
	&dev_attr_bad_completions.attr,
	&dev_attr_irqs.attr,
	&dev_attr_fifo_depth.attr,
	&dev_attr_async_submitted.attr,
	&dev_attr_async_completed.attr,
	&dev_attr_async_cancelled.attr,
	&dev_attr_async_failed.attr,
	&dev_attr_sigio_sent.attr,
	&dev_attr_recoveries.attr,
	&dev_attr_device_resets.attr,
	&dev_attr_stalls.attr,
	&dev_attr_lost_irqs.attr,
	&dev_attr_spurious_irqs.attr,
	&dev_attr_running.attr,
	&dev_attr_clears.attr,
	&dev_attr_errors.attr,
	NULL,
};
ATTRIBUTE_GROUPS(fifolab);

/* ------------------------------------------------------ device bring-up */

/*
 * Reset (datasheet 3, step 2) with interrupts disabled at the source.
 * After it succeeds the device holds no request: it will not touch any
 * buffer posted before.  If it fails (a stalled device handles no
 * doorbell), CONTROL stays RESET, so that the device resets first thing
 * when it handles doorbells again; fdev->recover_count is what RESET_COUNT
 * was before.
 */
static int fifolab_hw_reset(struct fifolab_dev *fdev)
{
	u32 count, val;
	unsigned int i;
	int ret;

	fifolab_wr32(fdev, FIFOLAB_REG_INT_ENABLE, 0);
	count = fifolab_rd32(fdev, FIFOLAB_REG_RESET_COUNT);
	fdev->recover_count = count;
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++)
		fifolab_wr32(fdev, FIFOLAB_QCTL(i, FIFOLAB_QCTL_AVAIL_IDX), 0);
	fifolab_wr32(fdev, FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_RESET);
	fifolab_ring(fdev);
	ret = read_poll_timeout(fifolab_rd32, val, val != count, 1000,
				FIFOLAB_HW_TIMEOUT_US, false,
				fdev, FIFOLAB_REG_RESET_COUNT);
	if (ret) {
		/* CONTROL stays RESET: a stalled device resets when it resumes */
		dev_err(&fdev->pdev->dev, "device did not reset\n");
		return ret;
	}
	fifolab_wr32(fdev, FIFOLAB_REG_CONTROL, 0);
	return 0;
}

/* Datasheet 3, step 3: ack, enable causes, enable, wait for READY. */
static int fifolab_hw_enable(struct fifolab_dev *fdev)
{
	u32 raised, val;
	int ret;

	spin_lock_irq(&fdev->irq_lock);
	raised = fifolab_rd32(fdev, FIFOLAB_REG_INT_RAISED);
	fdev->int_acked = raised;
	fifolab_wr32(fdev, FIFOLAB_REG_INT_ACKED, raised);
	spin_unlock_irq(&fdev->irq_lock);

	fifolab_wr32(fdev, FIFOLAB_REG_INT_ENABLE, FIFOLAB_INT_ALL);
	fifolab_wr32(fdev, FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_ENABLE);
	fifolab_ring(fdev);
	ret = read_poll_timeout(fifolab_rd32, val, val & FIFOLAB_STS_READY,
				1000, FIFOLAB_HW_TIMEOUT_US, false,
				fdev, FIFOLAB_REG_STATUS);
	if (ret)
		dev_err(&fdev->pdev->dev, "device did not become ready\n");
	return ret;
}

/*
 * Complete every request in flight with @err: the device reset (it holds
 * none of them any more) or can no longer reach memory (remove()).  A sync
 * owner is woken; orphans and async kiocbs go to done_work (kicked here
 * unless @kick is false).  Returns the number of requests completed.
 */
static unsigned int fifolab_fail_inflight(struct fifolab_dev *fdev, int err,
					  bool kick)
{
	struct fifolab_req *req;
	unsigned int i, d, n = 0;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		for (d = 0; d < FIFOLAB_QUEUE_SIZE; d++) {
			req = q->inflight[d];
			if (!req)
				continue;
			fifolab_complete(q, req, 0, err);
			n++;
		}
		spin_unlock_irq(&q->lock);
		wake_up_all(&q->wq);
	}
	if (n && kick)
		schedule_work(&fdev->done_work);
	return n;
}

/*
 * The device stalled and did not reset: answer every caller now with @err
 * without giving anything back to user space.  A sync owner is woken with
 * req->fail and orphans its request; an async kiocb is completed here and
 * its request orphaned.  The requests stay in flight, pages pinned, until
 * the device is known to have dropped them (fifolab_recover_work()) or
 * remove() gives up on them.  New requests fail with -EIO meanwhile.
 */
static void fifolab_detach_inflight(struct fifolab_dev *fdev, int err)
{
	struct fifolab_file *ff;
	struct fifolab_req *req;
	struct kiocb *iocb;
	long res;
	unsigned int i, d;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		q->stop_err = -EIO;
		for (d = 0; d < FIFOLAB_QUEUE_SIZE; d++) {
			req = q->inflight[d];
			if (req && req->state == FIFOLAB_REQ_POSTED &&
			    !req->iocb)
				WRITE_ONCE(req->fail, err);
		}
		spin_unlock_irq(&q->lock);
		wake_up_all(&q->wq);

		for (;;) {
			spin_lock_irq(&q->lock);
			req = list_first_entry_or_null(&q->aios,
						       struct fifolab_req, node);
			if (!req) {
				spin_unlock_irq(&q->lock);
				break;
			}
			list_del_init(&req->node);
			req->state = FIFOLAB_REQ_ORPHANED;
			iocb = req->iocb;
			req->iocb = NULL;
			iocb->private = NULL;	/* fifolab_aio_cancel(): too late */
			res = req->moved ?: err;
			ff = req->ff;
			spin_unlock_irq(&q->lock);

			atomic64_inc(&fdev->aio.failed);
			fifolab_err_told(ff, res);
			iocb->ki_complete(iocb, res);
		}
	}
}

/*
 * Recovery (see fifolab_recover()): reset the device; once it has reset it
 * holds no request, so every request in flight fails with the reason's
 * errno (-EIO, or -ETIMEDOUT for a stall) and the pages go back; then the
 * queues start from zero (datasheet 3) and the device is enabled again.
 * Requests waiting to be posted wait for this and then go ahead.
 *
 * A device that does not reset within a second (stalled) keeps CONTROL =
 * RESET: its callers are answered now (fifolab_detach_inflight()), and this
 * work looks again every completion_timeout_ms (ringing, for a device that
 * was restarted) until RESET_COUNT moves -- when the device resumes it
 * resets before it handles anything else -- and then finishes as above.
 */
static void fifolab_recover_work(struct work_struct *work)
{
	struct fifolab_dev *fdev = container_of(to_delayed_work(work),
						struct fifolab_dev,
						recover_work);
	unsigned int i, n;
	bool report;
	int err;

	spin_lock_irq(&fdev->irq_lock);
	err = fdev->recover_err;
	report = fdev->recover_report;
	if (fdev->hw_state != FIFOLAB_HW_RECOVERING) {
		spin_unlock_irq(&fdev->irq_lock);
		return;
	}
	spin_unlock_irq(&fdev->irq_lock);

	if (!fdev->recover_waiting) {
		if (fifolab_hw_reset(fdev)) {
			fdev->recover_waiting = true;
			dev_warn(&fdev->dev,
				 "device does not respond: in-flight requests fail with %d, their pages stay pinned until it resets\n",
				 err);
			fifolab_detach_inflight(fdev, err);
			goto again;
		}
	} else {
		if (fifolab_rd32(fdev, FIFOLAB_REG_RESET_COUNT) ==
		    fdev->recover_count) {
			fifolab_ring(fdev);
			goto again;
		}
		fdev->recover_waiting = false;
		fifolab_wr32(fdev, FIFOLAB_REG_CONTROL, 0);
	}

	/* the device holds no request now: fail them, pages go back */
	n = fifolab_fail_inflight(fdev, err, true);
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		q->avail_idx = 0;
		q->last_used = 0;
		spin_unlock_irq(&q->lock);
	}
	if (fifolab_hw_enable(fdev))
		goto again;		/* reset again, a little later */

	spin_lock_irq(&fdev->irq_lock);
	if (fdev->hw_state == FIFOLAB_HW_RECOVERING)
		fdev->hw_state = FIFOLAB_HW_RUNNING;
	spin_unlock_irq(&fdev->irq_lock);
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		q->stopped = false;
		q->stop_err = 0;
		spin_unlock_irq(&q->lock);
		wake_up_all(&q->wq);
	}
	if (report) {
		atomic64_inc(&fdev->recoveries);
		dev_info(&fdev->dev, "device reset and re-initialised; %u requests failed with %d\n",
			 n, err);
	}
	/* an empty FIFO again: room to write */
	wake_up_interruptible_poll(&fdev->poll_wq, EPOLLOUT | EPOLLWRNORM);
	return;

again:
	queue_delayed_work(system_wq, &fdev->recover_work,
			   fifolab_watch_period());
}

/* Is this ivshmem device a fifolab we can drive?  -ENODEV if not. */
static int fifolab_check_id(struct fifolab_dev *fdev)
{
	struct device *dev = &fdev->pdev->dev;
	u32 version, features, qsize, nvec, max_segs, peer, depth;
	/* the I/O core needs these; LOOPBACK or HOST_WIRE only say where bytes go */
	u32 want = FIFOLAB_FEAT_NOWAIT | FIFOLAB_FEAT_CANCEL;
	unsigned int i;

	if (fifolab_rd32(fdev, FIFOLAB_REG_MAGIC) != FIFOLAB_MAGIC_VALUE) {
		dev_info(dev, "ivshmem without the fifolab magic: not ours\n");
		return -ENODEV;
	}
	version = fifolab_rd32(fdev, FIFOLAB_REG_VERSION);
	if (version >> 16 != FIFOLAB_VERSION_VALUE >> 16) {
		dev_info(dev, "fifolab version %#x not supported\n", version);
		return -ENODEV;
	}
	features = fifolab_rd32(fdev, FIFOLAB_REG_FEATURES);
	qsize = fifolab_rd32(fdev, FIFOLAB_REG_QUEUE_SIZE);
	nvec = fifolab_rd32(fdev, FIFOLAB_REG_NUM_VECTORS);
	max_segs = fifolab_rd32(fdev, FIFOLAB_REG_MAX_SEGS);
	peer = fifolab_rd32(fdev, FIFOLAB_REG_DEVICE_PEER);
	depth = fifolab_rd32(fdev, FIFOLAB_REG_FIFO_DEPTH);
	if ((features & want) != want || qsize != FIFOLAB_QUEUE_SIZE ||
	    nvec != FIFOLAB_NUM_VECTORS || max_segs < 2 || peer > U16_MAX ||
	    !depth) {
		dev_err(dev, "unusable fifolab: features %#x queue size %u vectors %u max segs %u peer %u depth %u\n",
			features, qsize, nvec, max_segs, peer, depth);
		return -ENODEV;
	}
	fdev->peer = peer;
	fdev->fifo_depth = depth;
	fdev->no_notify = features & FIFOLAB_FEAT_NO_NOTIFY;

	max_segs = min_t(u32, max_segs, FIFOLAB_MAX_SEGS);
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		q->max_segs = max_segs;
	}
	dev_info(dev, "fifolab %u.%u (%s), FIFO %u bytes, peer %u\n",
		 version >> 16, version & 0xffff,
		 features & FIFOLAB_FEAT_HOST_WIRE ? "wired" : "loopback",
		 depth, peer);
	return 0;
}

static void fifolab_queue_map(struct fifolab_queue *q)
{
	void *base = q->fdev->bar2 + FIFOLAB_QUEUE_BASE +
		     q->qid * FIFOLAB_QUEUE_STRIDE;

	q->desc = base + FIFOLAB_Q_DESC_OFF;
	q->avail = base + FIFOLAB_Q_AVAIL_OFF;
	q->used = base + FIFOLAB_Q_USED_OFF;
	q->avail_idx_reg = q->fdev->bar2 +
			   FIFOLAB_QCTL(q->qid, FIFOLAB_QCTL_AVAIL_IDX);
	q->used_idx_reg = q->fdev->bar2 +
			  FIFOLAB_QCTL(q->qid, FIFOLAB_QCTL_USED_IDX);
}

static void fifolab_dev_release(struct device *dev)
{
	struct fifolab_dev *fdev = to_fifolab(dev);
	unsigned int i;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		kfree(fdev->queue[i].inflight);
		kfree(fdev->queue[i].next);
	}
	kfree(fdev);
}

/* The software half: lives until the last open file is closed. */
static struct fifolab_dev *fifolab_alloc(struct pci_dev *pdev)
{
	struct fifolab_dev *fdev;
	unsigned int i, d;

	fdev = kzalloc(sizeof(*fdev), GFP_KERNEL);
	if (!fdev)
		return NULL;
	fdev->pdev = pdev;
	spin_lock_init(&fdev->irq_lock);
	atomic_set(&fdev->nr_reqs, 0);
	INIT_WORK(&fdev->done_work, fifolab_done_work);
	INIT_DELAYED_WORK(&fdev->timeout_work, fifolab_timeout_work);
	INIT_DELAYED_WORK(&fdev->recover_work, fifolab_recover_work);
	INIT_DELAYED_WORK(&fdev->watch_work, fifolab_watch_work);
	fdev->hw_state = FIFOLAB_HW_DOWN;
	init_waitqueue_head(&fdev->poll_wq);
	device_initialize(&fdev->dev);
	fdev->dev.release = fifolab_dev_release;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		q->fdev = fdev;
		q->qid = i;
		init_waitqueue_head(&q->wq);
		spin_lock_init(&q->lock);
		INIT_LIST_HEAD(&q->orphans);
		INIT_LIST_HEAD(&q->aios);
		INIT_LIST_HEAD(&q->aio_done);
		INIT_LIST_HEAD(&q->parked);
		q->num_free = FIFOLAB_QUEUE_SIZE;
		q->next = kcalloc(FIFOLAB_QUEUE_SIZE, sizeof(*q->next),
				  GFP_KERNEL);
		q->inflight = kcalloc(FIFOLAB_QUEUE_SIZE, sizeof(*q->inflight),
				      GFP_KERNEL);
		if (!q->next || !q->inflight) {
			put_device(&fdev->dev);
			return NULL;
		}
		for (d = 0; d < FIFOLAB_QUEUE_SIZE; d++)
			q->next[d] = d + 1;	/* the last one is never followed */
		q->free_tail = FIFOLAB_QUEUE_SIZE - 1;
	}
	return fdev;
}

static void fifolab_free_irqs(struct fifolab_dev *fdev, int n)
{
	while (n--)
		free_irq(pci_irq_vector(fdev->pdev, n), fdev);
}

static int fifolab_request_irqs(struct fifolab_dev *fdev)
{
	int i, ret;

	for (i = 0; i < FIFOLAB_NUM_VECTORS; i++) {
		snprintf(fdev->irq_name[i], sizeof(fdev->irq_name[i]),
			 DRV_NAME "%d-%s", fdev->minor,
			 i == FIFOLAB_VEC_QUEUE ? "queue" : "event");
		ret = request_irq(pci_irq_vector(fdev->pdev, i), fifolab_irq, 0,
				  fdev->irq_name[i], fdev);
		if (ret) {
			fifolab_free_irqs(fdev, i);
			return ret;
		}
	}
	return 0;
}

/*
 * remove(): no new request, and the device can no longer reach memory (it
 * reset, or at least lost bus mastering), so every request still in flight
 * is completed with -ENODEV and its pages go back -- those of a stalled
 * device too: a sync owner is woken, an async kiocb is completed here
 * (ki_complete(-ENODEV)).  Returns once no request exists any more, so the
 * DMA mappings are gone before the device goes.
 */
static void fifolab_fail_all(struct fifolab_dev *fdev)
{
	cancel_work_sync(&fdev->done_work);	/* IRQs are freed: no requeue */
	fifolab_fail_inflight(fdev, -ENODEV, false);
	fifolab_done(fdev);		/* orphans freed, kiocbs completed */
	wait_var_event(&fdev->nr_reqs, !atomic_read(&fdev->nr_reqs));
}

static int fifolab_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct fifolab_dev *fdev;
	unsigned int i;
	int ret;

	fdev = fifolab_alloc(pdev);
	if (!fdev)
		return -ENOMEM;

	ret = ida_alloc_max(&fifolab_minors, FIFOLAB_MAX_DEVICES - 1,
			    GFP_KERNEL);
	if (ret < 0)
		goto err_put_fdev;
	fdev->minor = ret;

	ret = pci_enable_device(pdev);
	if (ret)
		goto err_free_minor;

	ret = pci_request_regions(pdev, DRV_NAME);
	if (ret)
		goto err_disable_pdev;

	fdev->bar0 = pci_iomap(pdev, 0, 0);
	if (!fdev->bar0) {
		ret = -ENOMEM;
		goto err_release_regions;
	}

	if (pci_resource_len(pdev, 2) < FIFOLAB_BAR2_SIZE) {
		dev_info(&pdev->dev, "BAR2 too small for a fifolab: not ours\n");
		ret = -ENODEV;
		goto err_iounmap_bar0;
	}
	/* shared RAM, not registers: write-back (datasheet 1) */
	fdev->bar2 = memremap(pci_resource_start(pdev, 2), FIFOLAB_BAR2_SIZE,
			      MEMREMAP_WB);
	if (!fdev->bar2) {
		ret = -ENOMEM;
		goto err_iounmap_bar0;
	}

	ret = fifolab_check_id(fdev);
	if (ret)
		goto err_memunmap_bar2;
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++)
		fifolab_queue_map(&fdev->queue[i]);

	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		goto err_memunmap_bar2;
	/*
	 * A descriptor may be as long as its u32 length field says (datasheet
	 * 4): physically contiguous pages of a buffer become one segment, not
	 * one per 64 KiB (the PCI default), so the device walks fewer.
	 */
	ret = dma_set_max_seg_size(&pdev->dev, U32_MAX & PAGE_MASK);
	if (ret)
		goto err_memunmap_bar2;
	pci_set_master(pdev);

	/* MSI-X on before CONTROL.ENABLE: the device's messages are edges */
	ret = pci_alloc_irq_vectors(pdev, FIFOLAB_NUM_VECTORS,
				    FIFOLAB_NUM_VECTORS, PCI_IRQ_MSIX);
	if (ret < 0)
		goto err_clear_master;

	/* reset before any handler: USED_IDX may be a previous driver's */
	ret = fifolab_hw_reset(fdev);
	if (ret)
		goto err_free_vectors;

	ret = fifolab_request_irqs(fdev);
	if (ret)
		goto err_free_vectors;

	ret = fifolab_hw_enable(fdev);
	if (ret)
		goto err_reset_hw;
	spin_lock_irq(&fdev->irq_lock);
	fdev->hw_state = FIFOLAB_HW_RUNNING;
	spin_unlock_irq(&fdev->irq_lock);

	fdev->dev.class = fifolab_class;
	fdev->dev.parent = &pdev->dev;
	fdev->dev.devt = MKDEV(MAJOR(fifolab_devt), fdev->minor);
	fdev->dev.groups = fifolab_groups;
	ret = dev_set_name(&fdev->dev, DRV_NAME "%d", fdev->minor);
	if (ret)
		goto err_reset_hw;
	cdev_init(&fdev->cdev, &fifolab_fops);
	fdev->cdev.owner = THIS_MODULE;
	ret = cdev_device_add(&fdev->cdev, &fdev->dev);
	if (ret)
		goto err_reset_hw;

	pci_set_drvdata(pdev, fdev);
	return 0;

err_reset_hw:
	spin_lock_irq(&fdev->irq_lock);
	fdev->hw_state = FIFOLAB_HW_DOWN;
	spin_unlock_irq(&fdev->irq_lock);
	fifolab_hw_reset(fdev);
	fifolab_free_irqs(fdev, FIFOLAB_NUM_VECTORS);
err_free_vectors:
	pci_free_irq_vectors(pdev);
err_clear_master:
	pci_clear_master(pdev);
err_memunmap_bar2:
	memunmap(fdev->bar2);
err_iounmap_bar0:
	pci_iounmap(pdev, fdev->bar0);
err_release_regions:
	pci_release_regions(pdev);
err_disable_pdev:
	pci_disable_device(pdev);
err_free_minor:
	ida_free(&fifolab_minors, fdev->minor);
err_put_fdev:
	put_device(&fdev->dev);
	return ret;
}

static void fifolab_remove(struct pci_dev *pdev)
{
	struct fifolab_dev *fdev = pci_get_drvdata(pdev);
	unsigned int i;

	/* no new open; sysfs readers drained */
	cdev_device_del(&fdev->cdev, &fdev->dev);

	/*
	 * No new request (see fifolab_get_req()); none posted or reaped.
	 * Under irq_lock: after it, poll() reads no BAR2 register.
	 */
	spin_lock_irq(&fdev->irq_lock);
	WRITE_ONCE(fdev->removed, true);
	fdev->hw_state = FIFOLAB_HW_DOWN;	/* no new recovery */
	spin_unlock_irq(&fdev->irq_lock);
	/* @removed before @nr_reqs is read; pairs with fifolab_get_req() */
	smp_mb();
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		q->dead = true;
		fifolab_unpark_all_locked(q, -ENODEV);
		spin_unlock_irq(&q->lock);
		wake_up_all(&q->wq);
	}
	/* dead queues: the timeout work re-arms no more, nobody queues it */
	cancel_delayed_work_sync(&fdev->timeout_work);
	/* nor the watchdog; DOWN: nobody starts a recovery, one ends here */
	cancel_delayed_work_sync(&fdev->watch_work);
	cancel_delayed_work_sync(&fdev->recover_work);
	wake_up_interruptible_poll(&fdev->poll_wq, EPOLLHUP);
	fifolab_notify(fdev, POLL_HUP);

	if (fifolab_hw_reset(fdev))
		dev_err(&fdev->dev, "device did not reset: bus mastering off, its requests end anyway\n");
	fifolab_free_irqs(fdev, FIFOLAB_NUM_VECTORS);
	pci_clear_master(pdev);		/* before the pages go back */
	fifolab_fail_all(fdev);

	pci_free_irq_vectors(pdev);
	memunmap(fdev->bar2);
	pci_iounmap(pdev, fdev->bar0);
	pci_release_regions(pdev);
	pci_disable_device(pdev);
	ida_free(&fifolab_minors, fdev->minor);
	put_device(&fdev->dev);		/* freed when the last file closes */
}

static const struct pci_device_id fifolab_ids[] = {
	{ PCI_DEVICE(PCI_VENDOR_ID_REDHAT_QUMRANET, 0x1110) },	/* ivshmem */
	{ }
};
MODULE_DEVICE_TABLE(pci, fifolab_ids);

static struct pci_driver fifolab_driver = {
	.name		= DRV_NAME,
	.id_table	= fifolab_ids,
	.probe		= fifolab_probe,
	.remove		= fifolab_remove,
};

static int __init fifolab_init(void)
{
	int ret;

	fifolab_class = class_create(THIS_MODULE, DRV_NAME);
	if (IS_ERR(fifolab_class))
		return PTR_ERR(fifolab_class);

	ret = alloc_chrdev_region(&fifolab_devt, 0, FIFOLAB_MAX_DEVICES,
				  DRV_NAME);
	if (ret)
		goto err_destroy_class;

	ret = pci_register_driver(&fifolab_driver);
	if (ret)
		goto err_unregister_chrdev;
	return 0;

err_unregister_chrdev:
	unregister_chrdev_region(fifolab_devt, FIFOLAB_MAX_DEVICES);
err_destroy_class:
	class_destroy(fifolab_class);
	return ret;
}

static void __exit fifolab_exit(void)
{
	pci_unregister_driver(&fifolab_driver);
	unregister_chrdev_region(fifolab_devt, FIFOLAB_MAX_DEVICES);
	class_destroy(fifolab_class);
	ida_destroy(&fifolab_minors);
}

module_init(fifolab_init);
module_exit(fifolab_exit);

MODULE_DESCRIPTION("fifolab FIFO peripheral (ivshmem-doorbell)");
MODULE_LICENSE("GPL");

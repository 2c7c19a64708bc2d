/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fifolab: the driver's internal structures -- who owns each field and
 * which lock protects it -- and what the files of the module share.
 *
 * docs/driver.md maps the files, the data path and every user-space API;
 * the register and queue layout is fifolab_hw.h (docs/datasheet.md).
 *
 * Locks.  "P: x" on a field: written (and read, unless said otherwise)
 * only with x held.
 *
 *   q->lock        (spinlock, taken with interrupts off) one queue: its
 *                  free list, the descriptors and avail ring we write, the
 *                  used entries we consume, the requests on it and their
 *                  state.  Nothing under it sleeps.
 *   fdev->irq_lock (spinlock, interrupts off) the interrupt ack, the
 *                  device state (hw_state) and the start of remove().
 *   q->lock and irq_lock are never held together.
 *   The aio core's ctx_lock is taken around q->lock (fifolab_aio_cancel()
 *   runs under it), so nothing calls ki_complete() -- which takes ctx_lock
 *   -- with q->lock held: the completion path drops it first.
 *
 * Request life cycle (P: q->lock; DONE is also read locklessly by the
 * owner with acquire semantics, fifolab_req_done()):
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
 * inline try) have no sleeping owner.  Once fifolab_aio_submit() has posted
 * one and returned -EIOCBQUEUED, the request and the kiocb belong to the
 * completion path:
 *
 *   used entry --fifolab_irq() (hard IRQ, q->lock)--> fifolab_complete():
 *     DONE, moved from q->aios to q->aio_done, done_work scheduled
 *   done_work (process context, no lock held) --> fifolab_aio_finish():
 *     clear iocb->private, unmap, unpin (dirtying pages the device wrote),
 *     ki_complete(bytes or -errno) -- exactly once, and only if we returned
 *     -EIOCBQUEUED; for any other return value the caller completes it.
 *
 * fifolab_aio_cancel() finds the request through iocb->private: set by
 * fifolab_aio_submit() before the request is posted, cleared under q->lock
 * before the request is freed or its kiocb completed (fifolab_aio_finish(),
 * fifolab_detach_inflight(), a post that failed).
 */
#ifndef FIFOLAB_H
#define FIFOLAB_H

#include <linux/atomic.h>
#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/dma-direction.h>
#include <linux/fs.h>
#include <linux/interrupt.h>
#include <linux/list.h>
#include <linux/scatterlist.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "fifolab_hw.h"

#define DRV_NAME		"fifolab"

/* module parameters (fifolab_main.c; the names in /sys/module lack fifolab_) */
extern unsigned int fifolab_cancel_timeout_ms;
extern unsigned int fifolab_async_timeout_ms;
extern unsigned int fifolab_completion_timeout_ms;
extern unsigned int fifolab_stall_timeout_ms;

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
					 * the owner orphans it (fifolab_req_wait()),
					 * which also reads it locklessly
					 */
	int cancel_err;			/* async: why cancelled (-ECANCELED...) */
	struct list_head node;		/* on q->orphans, or async: q->aios
					 * until DONE, then q->aio_done
					 */
	struct list_head park;		/* on q->parked while PARKED */

	/*
	 * P: q->lock until DONE; written by fifolab_finish_locked() before
	 * state = DONE (release), then the owner's
	 */
	size_t moved;			/* bytes moved by every window */
	int err;			/* 0, -EIO, -ETIMEDOUT or -ENODEV */
	bool aborted;			/* the device said CANCELLED */

	/*
	 * async requests only (iocb != NULL): set before posting, then
	 * constant -- except that fifolab_detach_inflight() takes @iocb
	 * away (P: q->lock) when it completes the kiocb itself
	 */
	struct kiocb *iocb;		/* completed by fifolab_aio_finish() */
	struct fifolab_file *ff;	/* the open file it was submitted on */
	unsigned long deadline;		/* jiffies, if @timed */
	bool timed;			/* async_timeout_ms was set at submit */
};

/* P: q->lock (sysfs takes a consistent copy: fifolab_stats()) */
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
					 * (0: they wait for the recovery); poll()
					 * reads it locklessly
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
	/* @win_bytes, @win_waiting: also peeked locklessly (fifolab_claimable()) */
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
	char irq_name[FIFOLAB_NUM_VECTORS][24];	/* const */

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
	 * remove() sets @removed (under irq_lock; read locklessly elsewhere),
	 * then waits until @nr_reqs (requests that exist: pinned, maybe
	 * DMA-mapped) drops to zero.  A submitter counts its request before
	 * it looks at @removed (see fifolab_get_req()).
	 */
	bool removed;
	atomic_t nr_reqs;
	struct work_struct done_work;	/* frees orphans, completes aios */
	struct delayed_work timeout_work; /* async_timeout_ms */

	/*
	 * Recovery (fifolab_recover(), fifolab_recover_work()).  @hw_state,
	 * @recover_err and @recover_report: P: irq_lock.  The rest belongs to
	 * recover_work (probe and remove() use it while it cannot run).
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
	struct fasync_struct *fasync;	/* SIGIO listeners (P: fasync_helper()) */
	atomic64_t sigio_sent;		/* kill_fasync() calls with listeners */
	struct fifolab_aio_stats aio;
};

/* One open file (file->private_data). */
struct fifolab_file {
	struct fifolab_dev *fdev;	/* const; the cdev reference keeps it */
	unsigned int err_seen;		/* fdev->err_gen last reported here;
					 * lockless (READ_ONCE, cmpxchg)
					 */
};

static inline struct fifolab_dev *to_fifolab(struct device *dev)
{
	return container_of(dev, struct fifolab_dev, dev);
}

/* fifolab_queue.c: registers, the rings, the request life */
u32 fifolab_rd32(struct fifolab_dev *fdev, unsigned int off);
u64 fifolab_rd64(struct fifolab_dev *fdev, unsigned int off);
void fifolab_wr32(struct fifolab_dev *fdev, unsigned int off, u32 val);
void fifolab_ring(struct fifolab_dev *fdev);
struct fifolab_req *fifolab_req_alloc(struct fifolab_queue *q,
				      const struct iov_iter *it,
				      size_t max, bool nowait);
void fifolab_req_free(struct fifolab_req *req);
int fifolab_req_post(struct fifolab_req *req, bool wait, bool whole);
long fifolab_req_result(const struct fifolab_req *req);
void fifolab_complete(struct fifolab_queue *q, struct fifolab_req *req,
		      u32 moved, int err);
bool fifolab_unpark_all_locked(struct fifolab_queue *q, int err);
bool fifolab_cancel_locked(struct fifolab_queue *q, struct fifolab_req *req);
u32 fifolab_claimable(struct fifolab_queue *q, u32 level);
bool fifolab_queue_irq(struct fifolab_queue *q, bool level_changed);

/* fifolab_irq.c: the interrupt handler and the watchdog */
unsigned long fifolab_watch_period(void);
void fifolab_notify(struct fifolab_dev *fdev, int band);
irqreturn_t fifolab_irq(int irq, void *data);
void fifolab_watch_work(struct work_struct *work);

/* fifolab_recover.c: errors told once, recovery, reset and enable */
void fifolab_error(struct fifolab_dev *fdev);
bool fifolab_err_pending(struct fifolab_file *ff);
bool fifolab_err_take(struct fifolab_file *ff);
void fifolab_err_told(struct fifolab_file *ff, long ret);
bool fifolab_recover(struct fifolab_dev *fdev, int err, bool report);
bool fifolab_running(struct fifolab_dev *fdev);
int fifolab_hw_reset(struct fifolab_dev *fdev);
int fifolab_hw_enable(struct fifolab_dev *fdev);
unsigned int fifolab_fail_inflight(struct fifolab_dev *fdev, int err,
				   bool kick);
void fifolab_recover_work(struct work_struct *work);

/* fifolab_aio.c: async kiocbs, done_work, async_timeout_ms */
ssize_t fifolab_aio_submit(struct kiocb *iocb, struct iov_iter *it,
			   struct fifolab_queue *q, bool nowait, bool whole);
void fifolab_timeout_arm(struct fifolab_dev *fdev, unsigned long deadline);
void fifolab_done(struct fifolab_dev *fdev);
void fifolab_done_work(struct work_struct *work);
void fifolab_timeout_work(struct work_struct *work);

/* fifolab_chrdev.c: /dev/fifolabN */
extern const struct file_operations fifolab_fops;
size_t fifolab_read_max(struct fifolab_queue *q);

/* fifolab_sysfs.c: /sys/class/fifolab/fifolabN */
extern const struct attribute_group *fifolab_groups[];

#endif /* FIFOLAB_H */

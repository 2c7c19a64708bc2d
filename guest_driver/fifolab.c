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
 *   fifolab_req_alloc()  pin the user pages, build and DMA-map an sg_table
 *   fifolab_req_post()   take descriptors from the queue's free list, fill a
 *                        chain, publish the head in the avail ring, ring
 *   fifolab_irq()        ack, then reap used entries: each one completes the
 *                        request whose head it names (fifolab_complete())
 *   fifolab_req_wait()   sleep until completed; on a signal, cancel the
 *                        posted request and wait (bounded) for its used entry
 *   fifolab_req_free()   unmap, unpin (dirtying pages a read wrote), free
 *
 * Request life cycle (state is protected by queue->lock; DONE is also read
 * locklessly by the owner with acquire semantics):
 *
 *   NEW --post--> POSTED --used entry (IRQ) or remove()--> DONE
 *                   |
 *                   +--cancel timed out (owner)--> ORPHANED
 *                         --used entry or remove()--> freed by the driver
 *
 * Who owns what: a NEW or DONE request belongs to the task that allocated it
 * (its owner), which alone may free it.  While POSTED, the descriptors and
 * the pinned pages belong to the device; the request is reachable through
 * queue->inflight[head], and only fifolab_complete() (under queue->lock)
 * ends that.  An owner that gives up on a POSTED request marks it ORPHANED
 * and forgets it; whoever later completes it hands it to orphan_work (or, in
 * remove(), frees it directly) -- the pages stay pinned until the device is
 * known to be done with them.  The async (AIO) path will be another kind of
 * owner: fifolab_complete() will queue the completion to a worker instead
 * of waking a sleeping task.
 *
 * The device is not trusted: used entries name heads and byte counts that
 * are checked against what is in flight before anything is completed (a
 * bogus entry is counted in sysfs bad_completions and dropped), and a bad
 * USED_IDX cannot make the interrupt handler loop for long.
 */

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
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/sched/signal.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/wait_bit.h>
#include <linux/workqueue.h>

#include "fifolab_hw.h"

#define DRV_NAME		"fifolab"
#define FIFOLAB_MAX_DEVICES	64
#define FIFOLAB_MAX_REQ		SZ_1M		/* bytes per request */
#define FIFOLAB_HW_TIMEOUT_US	USEC_PER_SEC	/* reset, enable (datasheet 3) */

static unsigned int cancel_timeout_ms = 2000;
module_param(cancel_timeout_ms, uint, 0644);
MODULE_PARM_DESC(cancel_timeout_ms,
		 "how long a cancelled request may take to come back (ms)");

static struct class *fifolab_class;
static dev_t fifolab_devt;
static DEFINE_IDA(fifolab_minors);

enum fifolab_req_state {
	FIFOLAB_REQ_NEW,	/* owner's; nothing posted */
	FIFOLAB_REQ_POSTED,	/* device's; in queue->inflight[head] */
	FIFOLAB_REQ_DONE,	/* owner's again; moved/err are final */
	FIFOLAB_REQ_ORPHANED,	/* posted, owner gone; freed on completion */
};

struct fifolab_queue;

struct fifolab_req {
	struct fifolab_queue *q;	/* const */
	size_t len;			/* const: bytes asked for */
	bool nowait;			/* const: FIFOLAB_DESC_F_NOWAIT */
	unsigned int npages;		/* const */
	struct sg_table sgt;		/* const once mapped */

	/* P: q->lock */
	enum fifolab_req_state state;	/* DONE also read with acquire */
	u16 head;			/* first descriptor, while POSTED */
	u16 tail;			/* last descriptor, while POSTED */
	u16 ndesc;
	u16 head_flags;			/* what we wrote in the head */
	bool cancelled;			/* owner set FIFOLAB_DESC_F_CANCEL */
	bool keep_pinned;		/* device never quiesced: leak pages */
	struct list_head node;		/* on q->orphans */

	/* written once by fifolab_complete() before state = DONE */
	u32 moved;			/* bytes the device moved */
	int err;			/* 0, -EIO or -ENODEV */

	struct page *pages[];		/* const: npages pinned pages */
};

struct fifolab_queue_stats {
	u64 bytes;			/* moved by completed requests */
	u64 cancels;			/* cancels sent to the device */
	u64 bad;			/* used entries rejected */
};

struct fifolab_queue {
	/* const after probe */
	struct fifolab_dev *fdev;
	unsigned int qid;		/* FIFOLAB_QUEUE_TX or _RX */
	size_t max_req;			/* bytes per request */
	unsigned int max_segs;		/* descriptors per request */
	struct fifolab_desc *desc;	/* BAR2: descriptor table */
	__le16 *avail;			/* BAR2: avail ring */
	struct fifolab_used *used;	/* BAR2: used ring */
	__le32 *avail_idx_reg;		/* BAR2: AVAIL_IDX[q] (ours) */
	__le32 *used_idx_reg;		/* BAR2: USED_IDX[q] (device's) */

	/* readers (RX) or writers (TX): completions, free descriptors, dead */
	wait_queue_head_t wq;

	spinlock_t lock;		/* protects everything below */
	bool dead;			/* remove() began: post nothing, reap nothing */
	u32 avail_idx;			/* requests posted (our AVAIL_IDX) */
	u32 last_used;			/* used entries consumed */
	u16 free_head;			/* first free descriptor */
	unsigned int num_free;		/* free descriptors */
	unsigned int num_inflight;	/* POSTED or ORPHANED requests */
	u16 *next;			/* [QUEUE_SIZE] free list and chain links */
	struct fifolab_req **inflight;	/* [QUEUE_SIZE] by head: posted requests */
	struct list_head orphans;	/* ORPHANED requests the device completed */
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
	char irq_name[FIFOLAB_NUM_VECTORS][24];

	struct fifolab_queue queue[FIFOLAB_NUM_QUEUES];

	spinlock_t irq_lock;		/* serialises the ack of both vectors */
	u32 int_acked;			/* P: irq_lock; last INT_ACKED written */
	u64 irqs;			/* P: irq_lock */

	/*
	 * remove() sets @removed, then waits until @nr_reqs (requests that
	 * exist: pinned, maybe DMA-mapped) drops to zero.  A submitter counts
	 * its request before it looks at @removed (see fifolab_get_req()).
	 */
	bool removed;
	atomic_t nr_reqs;
	struct work_struct orphan_work;	/* frees q->orphans */
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

/*
 * Pin @len bytes at @ubuf and map them for DMA.  Bad user memory (unmapped,
 * or read-only for a read) fails with -EFAULT before anything is posted.
 */
static struct fifolab_req *fifolab_req_alloc(struct fifolab_queue *q,
					     void __user *ubuf, size_t len,
					     bool nowait)
{
	struct fifolab_dev *fdev = q->fdev;
	struct device *dma_dev = &fdev->pdev->dev;
	unsigned long start = (unsigned long)ubuf;
	unsigned int offset = offset_in_page(start);
	unsigned int npages = DIV_ROUND_UP(offset + len, PAGE_SIZE);
	bool rx = q->qid == FIFOLAB_QUEUE_RX;
	struct fifolab_req *req;
	int pinned, ret;

	req = kzalloc(struct_size(req, pages, npages), GFP_KERNEL);
	if (!req)
		return ERR_PTR(-ENOMEM);
	req->q = q;
	req->len = len;
	req->nowait = nowait;
	req->npages = npages;
	req->state = FIFOLAB_REQ_NEW;
	INIT_LIST_HEAD(&req->node);

	if (!fifolab_get_req(fdev)) {
		ret = -ENODEV;
		goto err_free_req;
	}

	pinned = pin_user_pages_fast(start & PAGE_MASK, npages,
				     rx ? FOLL_WRITE : 0, req->pages);
	if (pinned != npages) {
		if (pinned > 0)
			unpin_user_pages(req->pages, pinned);
		ret = pinned < 0 ? pinned : -EFAULT;
		goto err_put_req;
	}

	ret = sg_alloc_table_from_pages_segment(&req->sgt, req->pages, npages,
						offset, len,
						dma_get_max_seg_size(dma_dev),
						GFP_KERNEL);
	if (ret)
		goto err_unpin;

	ret = dma_map_sgtable(dma_dev, &req->sgt, fifolab_dir(q), 0);
	if (ret)
		goto err_free_sgt;

	/* at most one segment per page, and max_req keeps pages <= max_segs */
	if (WARN_ON_ONCE(req->sgt.nents > q->max_segs)) {
		ret = -EINVAL;
		goto err_unmap;
	}
	return req;

err_unmap:
	dma_unmap_sgtable(dma_dev, &req->sgt, fifolab_dir(q), 0);
err_free_sgt:
	sg_free_table(&req->sgt);
err_unpin:
	unpin_user_pages(req->pages, npages);
err_put_req:
	fifolab_put_req(fdev);
err_free_req:
	kfree(req);
	return ERR_PTR(ret);
}

/* Undo fifolab_req_alloc().  Process context: unpinning may sleep. */
static void fifolab_req_free(struct fifolab_req *req)
{
	struct fifolab_queue *q = req->q;
	struct fifolab_dev *fdev = q->fdev;

	if (req->keep_pinned) {
		/* the device never confirmed it let go: leak, do not unpin */
		fifolab_put_req(fdev);
		return;
	}
	dma_unmap_sgtable(&fdev->pdev->dev, &req->sgt, fifolab_dir(q), 0);
	sg_free_table(&req->sgt);
	unpin_user_pages_dirty_lock(req->pages, req->npages,
				    q->qid == FIFOLAB_QUEUE_RX && req->moved);
	kfree(req);
	fifolab_put_req(fdev);		/* last: remove() may be waiting */
}

/*
 * A used entry (or remove()) ends a posted request: give its descriptors
 * back and hand the request to its owner.  Nothing here sleeps; after the
 * store-release of DONE the request is the owner's and may be freed at once.
 */
static void fifolab_complete(struct fifolab_queue *q, struct fifolab_req *req,
			     u32 moved, int err)
{
	lockdep_assert_held(&q->lock);

	q->next[req->tail] = q->free_head;
	q->free_head = req->head;
	q->num_free += req->ndesc;
	q->inflight[req->head] = NULL;
	q->num_inflight--;
	q->stats.bytes += moved;

	req->moved = moved;
	req->err = err;
	if (req->state == FIFOLAB_REQ_ORPHANED)
		list_add_tail(&req->node, &q->orphans);
	else	/* moved/err before DONE; pairs with fifolab_req_done() */
		smp_store_release(&req->state, FIFOLAB_REQ_DONE);
}

static bool fifolab_req_done(struct fifolab_req *req)
{
	/* DONE before moved/err; pairs with fifolab_complete() */
	return smp_load_acquire(&req->state) == FIFOLAB_REQ_DONE;
}

/* Write the chain, publish its head and ring (datasheet 4, "Posting"). */
static void fifolab_post_locked(struct fifolab_queue *q,
				struct fifolab_req *req)
{
	unsigned int n = req->sgt.nents;
	struct scatterlist *sg;
	u16 idx = q->free_head;
	unsigned int i;

	lockdep_assert_held(&q->lock);

	req->head = idx;
	req->ndesc = n;
	for_each_sgtable_dma_sg(&req->sgt, sg, i) {
		struct fifolab_desc *d = &q->desc[idx];
		bool last = i + 1 == n;
		u16 flags = last ? 0 : FIFOLAB_DESC_F_NEXT;

		if (i == 0 && req->nowait)
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
	req->state = FIFOLAB_REQ_POSTED;

	WRITE_ONCE(q->avail[q->avail_idx % FIFOLAB_QUEUE_SIZE],
		   cpu_to_le16(req->head));
	wmb();				/* the ring entry before the index */
	q->avail_idx++;
	WRITE_ONCE(*q->avail_idx_reg, cpu_to_le32(q->avail_idx));
	fifolab_ring(q->fdev);
}

/*
 * Post @req, waiting (interruptibly, unless it is a NOWAIT request) for
 * enough free descriptors.  On failure the request is still NEW.
 */
static int fifolab_req_post(struct fifolab_req *req)
{
	struct fifolab_queue *q = req->q;
	unsigned int n = req->sgt.nents;
	int ret = 0;

	spin_lock_irq(&q->lock);
	if (req->nowait) {
		if (!q->dead && q->num_free < n)
			ret = -EAGAIN;
	} else {
		ret = wait_event_interruptible_lock_irq(q->wq,
							q->dead || q->num_free >= n,
							q->lock);
	}
	if (!ret && q->dead)
		ret = -ENODEV;
	if (!ret)
		fifolab_post_locked(q, req);
	spin_unlock_irq(&q->lock);
	return ret;
}

/*
 * Wait for a posted request.  Returns true once it is DONE (the caller owns
 * it again), false if it had to be given up as ORPHANED (the caller must
 * forget it).  A signal cancels the request: the device completes it with
 * the bytes already moved and never touches its pages after that used entry.
 */
static bool fifolab_req_wait(struct fifolab_req *req)
{
	struct fifolab_queue *q = req->q;
	struct fifolab_dev *fdev = q->fdev;
	bool orphaned = false;

	if (!wait_event_interruptible(q->wq, fifolab_req_done(req)))
		return true;

	spin_lock_irq(&q->lock);
	if (req->state == FIFOLAB_REQ_POSTED && !q->dead) {
		/* the head is still ours until its used entry: flag it */
		req->cancelled = true;
		WRITE_ONCE(q->desc[req->head].flags,
			   cpu_to_le16(req->head_flags | FIFOLAB_DESC_F_CANCEL));
		fifolab_ring(fdev);
		q->stats.cancels++;
	}
	spin_unlock_irq(&q->lock);

	/* uninterruptible: the pages must not go while the device has them */
	if (wait_event_timeout(q->wq, fifolab_req_done(req),
			       msecs_to_jiffies(cancel_timeout_ms)))
		return true;

	spin_lock_irq(&q->lock);
	if (req->state == FIFOLAB_REQ_POSTED) {
		req->state = FIFOLAB_REQ_ORPHANED;
		orphaned = true;
	}
	spin_unlock_irq(&q->lock);
	if (!orphaned)
		return true;	/* completed under the lock just now */

	dev_err_ratelimited(&fdev->dev,
			    "%s request (head %u) not returned %u ms after cancel; pages stay pinned until it is\n",
			    q->qid == FIFOLAB_QUEUE_RX ? "RX" : "TX",
			    req->head, cancel_timeout_ms);
	return false;
}

/* What the system call returns for a DONE request. */
static ssize_t fifolab_req_result(const struct fifolab_req *req)
{
	if (req->err)
		return req->err;
	if (req->moved)
		return req->moved;
	if (req->cancelled)
		return -ERESTARTSYS;
	if (req->nowait)
		return -EAGAIN;
	return -EIO;	/* a waiting request came back empty: device bug */
}

/* Move up to @len bytes (at most q->max_req) through queue @q. */
static ssize_t fifolab_xfer(struct fifolab_queue *q, void __user *ubuf,
			    size_t len, bool nowait)
{
	struct fifolab_req *req;
	ssize_t ret;

	req = fifolab_req_alloc(q, ubuf, len, nowait);
	if (IS_ERR(req))
		return PTR_ERR(req);

	ret = fifolab_req_post(req);
	if (!ret) {
		if (!fifolab_req_wait(req))
			return -EIO;	/* orphaned: no longer ours */
		ret = fifolab_req_result(req);
	}
	fifolab_req_free(req);
	return ret;
}

/* ------------------------------------------------------------ interrupt */

/* Consume the used ring of @q.  Returns the number of requests completed. */
static unsigned int fifolab_reap(struct fifolab_queue *q)
{
	struct fifolab_dev *fdev = q->fdev;
	unsigned int done = 0;
	u32 used_idx, n;

	lockdep_assert_held(&q->lock);

	if (q->dead)
		return 0;
	used_idx = le32_to_cpu(READ_ONCE(*q->used_idx_reg));
	n = used_idx - q->last_used;
	if (n > q->num_inflight) {
		/* more entries than requests in flight: USED_IDX is garbage */
		q->stats.bad++;
		dev_err_ratelimited(&fdev->dev,
				    "queue %u: USED_IDX %u is %u ahead with %u in flight\n",
				    q->qid, used_idx, n, q->num_inflight);
		n = q->num_inflight;
		if (!n) {
			q->last_used = used_idx;
			return 0;
		}
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
			dev_err_ratelimited(&fdev->dev,
					    "queue %u: used entry for head %u, which is not in flight\n",
					    q->qid, id);
			continue;
		}
		switch (status) {
		case FIFOLAB_ST_OK:
			break;
		case FIFOLAB_ST_CANCELLED:
			if (!req->cancelled)
				q->stats.bad++;
			break;
		case FIFOLAB_ST_DMA_ERROR:
		case FIFOLAB_ST_BAD_DESC:
			dev_err_ratelimited(&fdev->dev,
					    "queue %u: head %u failed with status %u\n",
					    q->qid, id, status);
			err = -EIO;
			len = 0;
			break;
		default:
			q->stats.bad++;
			err = -EIO;
			len = 0;
			break;
		}
		if (len > req->len) {
			q->stats.bad++;
			dev_err_ratelimited(&fdev->dev,
					    "queue %u: head %u moved %u of %zu bytes\n",
					    q->qid, id, len, req->len);
			err = -EIO;
			len = 0;
		}
		fifolab_complete(q, req, len, err);
		done++;
	}
	return done;
}

static void fifolab_queue_irq(struct fifolab_queue *q, bool level_changed)
{
	bool orphans;
	unsigned int done;

	spin_lock(&q->lock);
	done = fifolab_reap(q);
	orphans = !list_empty(&q->orphans);
	spin_unlock(&q->lock);

	if (orphans)
		schedule_work(&q->fdev->orphan_work);
	if (done || level_changed)
		wake_up(&q->wq);
}

/* Both vectors: the cause register tells everything (datasheet 1). */
static irqreturn_t fifolab_irq(int irq, void *data)
{
	struct fifolab_dev *fdev = data;
	u32 raised, causes;

	spin_lock(&fdev->irq_lock);
	raised = fifolab_rd32(fdev, FIFOLAB_REG_INT_RAISED);
	causes = raised ^ fdev->int_acked;
	fdev->int_acked = raised;
	fifolab_wr32(fdev, FIFOLAB_REG_INT_ACKED, raised);
	fdev->irqs++;
	spin_unlock(&fdev->irq_lock);
	mb();		/* the ack before the indices it covers (datasheet 2) */

	if (causes & FIFOLAB_INT_ERROR)
		dev_err_ratelimited(&fdev->dev, "device error %u at %#llx\n",
				    fifolab_rd32(fdev, FIFOLAB_REG_ERR_CODE),
				    fifolab_rd64(fdev, FIFOLAB_REG_ERR_ADDR));

	/* reap both queues whatever the causes: reaping is idempotent */
	fifolab_queue_irq(&fdev->queue[FIFOLAB_QUEUE_TX],
			  causes & FIFOLAB_INT_SPACE_AVAIL);
	fifolab_queue_irq(&fdev->queue[FIFOLAB_QUEUE_RX],
			  causes & FIFOLAB_INT_DATA_AVAIL);
	return IRQ_HANDLED;
}

static void fifolab_orphan_work(struct work_struct *work)
{
	struct fifolab_dev *fdev = container_of(work, struct fifolab_dev,
						orphan_work);
	struct fifolab_req *req, *tmp;
	LIST_HEAD(list);
	unsigned int i;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		list_splice_tail_init(&q->orphans, &list);
		spin_unlock_irq(&q->lock);
	}
	list_for_each_entry_safe(req, tmp, &list, node) {
		list_del(&req->node);
		fifolab_req_free(req);
	}
}

/* ----------------------------------------------------------- file ops */

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

/*
 * read: one RX request, returns what it got (>= 1 byte).
 * write: TX requests of at most max_req bytes until all is sent, a request
 * comes back short (O_NONBLOCK) or a signal stops it.
 */
static ssize_t fifolab_rw(struct kiocb *iocb, struct iov_iter *it,
			  unsigned int qid)
{
	struct fifolab_dev *fdev = iocb->ki_filp->private_data;
	struct fifolab_queue *q = &fdev->queue[qid];
	bool nowait = (iocb->ki_filp->f_flags & O_NONBLOCK) ||
		      (iocb->ki_flags & IOCB_NOWAIT);
	ssize_t total = 0, ret = 0;

	if (!user_backed_iter(it))
		return -EINVAL;

	while (iov_iter_count(it)) {
		void __user *ubuf;
		size_t len;

		if (total && signal_pending(current))
			break;
		ubuf = fifolab_iter_seg(it, q->max_req, &len);
		ret = fifolab_xfer(q, ubuf, len, nowait);
		if (ret <= 0)
			break;
		iov_iter_advance(it, ret);
		total += ret;
		if (qid == FIFOLAB_QUEUE_RX || (size_t)ret < len)
			break;
	}
	return total ? total : ret;
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

	/* the open file's cdev reference keeps fdev alive (cdev_device_add) */
	if (READ_ONCE(fdev->removed))
		return -ENODEV;
	file->private_data = fdev;
	return stream_open(inode, file);
}

static const struct file_operations fifolab_fops = {
	.owner		= THIS_MODULE,
	.open		= fifolab_open,
	.read_iter	= fifolab_read_iter,
	.write_iter	= fifolab_write_iter,
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

static ssize_t cancels_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	struct fifolab_dev *fdev = to_fifolab(dev);

	return sysfs_emit(buf, "%llu\n",
			  fifolab_stats(fdev, FIFOLAB_QUEUE_TX).cancels +
			  fifolab_stats(fdev, FIFOLAB_QUEUE_RX).cancels);
}
static DEVICE_ATTR_RO(cancels);

static ssize_t bad_completions_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	struct fifolab_dev *fdev = to_fifolab(dev);

	return sysfs_emit(buf, "%llu\n",
			  fifolab_stats(fdev, FIFOLAB_QUEUE_TX).bad +
			  fifolab_stats(fdev, FIFOLAB_QUEUE_RX).bad);
}
static DEVICE_ATTR_RO(bad_completions);

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
	&dev_attr_bad_completions.attr,
	&dev_attr_irqs.attr,
	&dev_attr_fifo_depth.attr,
	NULL,
};
ATTRIBUTE_GROUPS(fifolab);

/* ------------------------------------------------------ device bring-up */

/*
 * Reset (datasheet 3, step 2) with interrupts disabled at the source.
 * After it succeeds the device holds no request: it will not touch any
 * buffer posted before.
 */
static int fifolab_hw_reset(struct fifolab_dev *fdev)
{
	u32 count, val;
	unsigned int i;
	int ret;

	fifolab_wr32(fdev, FIFOLAB_REG_INT_ENABLE, 0);
	count = fifolab_rd32(fdev, FIFOLAB_REG_RESET_COUNT);
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++)
		fifolab_wr32(fdev, FIFOLAB_QCTL(i, FIFOLAB_QCTL_AVAIL_IDX), 0);
	fifolab_wr32(fdev, FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_RESET);
	fifolab_ring(fdev);
	ret = read_poll_timeout(fifolab_rd32, val, val != count, 1000,
				FIFOLAB_HW_TIMEOUT_US, false,
				fdev, FIFOLAB_REG_RESET_COUNT);
	fifolab_wr32(fdev, FIFOLAB_REG_CONTROL, 0);
	if (ret)
		dev_err(&fdev->pdev->dev, "device did not reset\n");
	return ret;
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

	max_segs = min_t(u32, max_segs, FIFOLAB_MAX_SEGS);
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		q->max_segs = max_segs;
		/* an unaligned buffer of n pages' bytes spans n + 1 pages */
		q->max_req = min_t(size_t, FIFOLAB_MAX_REQ,
				   (size_t)(max_segs - 1) * PAGE_SIZE);
		/* a read never gets more than the FIFO holds: pin no more */
		if (i == FIFOLAB_QUEUE_RX)
			q->max_req = min_t(size_t, q->max_req, depth);
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
	INIT_WORK(&fdev->orphan_work, fifolab_orphan_work);
	device_initialize(&fdev->dev);
	fdev->dev.release = fifolab_dev_release;

	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		q->fdev = fdev;
		q->qid = i;
		init_waitqueue_head(&q->wq);
		spin_lock_init(&q->lock);
		INIT_LIST_HEAD(&q->orphans);
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
 * remove(): no new request, device reset (it then holds none), and every
 * request still in flight completed with -ENODEV.  Returns once no request
 * exists any more, so the DMA mappings are gone before the device goes.
 */
static void fifolab_fail_all(struct fifolab_dev *fdev, bool quiesced)
{
	struct fifolab_req *req, *tmp;
	unsigned int i, d, leaked = 0;
	LIST_HEAD(orphans);

	cancel_work_sync(&fdev->orphan_work);	/* IRQs are freed: no requeue */
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		for (d = 0; d < FIFOLAB_QUEUE_SIZE; d++) {
			req = q->inflight[d];
			if (!req)
				continue;
			req->keep_pinned = !quiesced;
			leaked += !quiesced;
			fifolab_complete(q, req, 0, -ENODEV);
		}
		list_splice_tail_init(&q->orphans, &orphans);
		spin_unlock_irq(&q->lock);
		wake_up_all(&q->wq);
	}
	if (leaked)
		dev_err(&fdev->dev, "device did not reset: %u requests stay pinned\n",
			leaked);
	list_for_each_entry_safe(req, tmp, &orphans, node) {
		list_del(&req->node);
		fifolab_req_free(req);
	}
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
	bool quiesced;

	/* no new open; sysfs readers drained */
	cdev_device_del(&fdev->cdev, &fdev->dev);

	/* no new request (see fifolab_get_req()); none posted or reaped */
	WRITE_ONCE(fdev->removed, true);
	/* @removed before @nr_reqs is read; pairs with fifolab_get_req() */
	smp_mb();
	for (i = 0; i < FIFOLAB_NUM_QUEUES; i++) {
		struct fifolab_queue *q = &fdev->queue[i];

		spin_lock_irq(&q->lock);
		q->dead = true;
		spin_unlock_irq(&q->lock);
		wake_up_all(&q->wq);
	}

	quiesced = !fifolab_hw_reset(fdev);
	fifolab_free_irqs(fdev, FIFOLAB_NUM_VECTORS);
	fifolab_fail_all(fdev, quiesced);

	pci_free_irq_vectors(pdev);
	pci_clear_master(pdev);
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

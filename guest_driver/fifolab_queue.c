// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab: the queue/device contract (datasheet 1, 4, 7).
 *
 * Register access to BAR2 and the doorbell; the life of a request: pin and
 * map the caller's pages (fifolab_req_alloc()), cut them into windows of at
 * most max_segs segments, post each as a descriptor chain and ring (unless
 * the device says NO_NOTIFY), reap used entries -- checked, never trusted --
 * and complete, cancel or park what they name; unpin and free
 * (fifolab_req_free()).  The structures and their locks: fifolab.h.
 */

#include <linux/atomic.h>
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/pci.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/wait_bit.h>
#include <linux/workqueue.h>

#include "fifolab.h"

/* bytes in one window: what the device takes in one request (datasheet 5) */
#define FIFOLAB_MAX_WINDOW	FIFOLAB_MAX_REQ_BYTES

/* ---------------------------------------------------------------- BAR2 */

/* BAR2 is RAM shared with the device: plain little-endian loads and stores. */
u32 fifolab_rd32(struct fifolab_dev *fdev, unsigned int off)
{
	return le32_to_cpu(READ_ONCE(*(__le32 *)(fdev->bar2 + off)));
}

u64 fifolab_rd64(struct fifolab_dev *fdev, unsigned int off)
{
	return le64_to_cpu(READ_ONCE(*(__le64 *)(fdev->bar2 + off)));
}

void fifolab_wr32(struct fifolab_dev *fdev, unsigned int off, u32 val)
{
	WRITE_ONCE(*(__le32 *)(fdev->bar2 + off), cpu_to_le32(val));
}

/* Order every BAR2 store before the doorbell, then ring (datasheet 1). */
void fifolab_ring(struct fifolab_dev *fdev)
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
struct fifolab_req *fifolab_req_alloc(struct fifolab_queue *q,
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
void fifolab_req_free(struct fifolab_req *req)
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
bool fifolab_unpark_all_locked(struct fifolab_queue *q, int err)
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
void fifolab_complete(struct fifolab_queue *q, struct fifolab_req *req,
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
		mb();	/* AVAIL_IDX before NO_NOTIFY, see above */
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
u32 fifolab_claimable(struct fifolab_queue *q, u32 level)
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
int fifolab_req_post(struct fifolab_req *req, bool wait, bool whole)
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
bool fifolab_cancel_locked(struct fifolab_queue *q, struct fifolab_req *req)
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

/*
 * What a DONE request gives its caller: the bytes moved if any (as a pipe
 * does: a signal, a cancel or an error after some bytes ends it with the
 * count; the error stays pending for the file), else its error.
 */
long fifolab_req_result(const struct fifolab_req *req)
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

/* ---------------------------------------------------------- used ring */

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
bool fifolab_queue_irq(struct fifolab_queue *q, bool level_changed)
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

// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab: asynchronous kiocbs (libaio, io_uring's inline try).
 *
 * fifolab_aio_submit() pins and maps every byte, posts the first window
 * and returns -EIOCBQUEUED; the completion path owns the request from then
 * on (fifolab.h) and done_work completes the kiocb (fifolab_aio_finish()).
 * io_cancel(2) and async_timeout_ms cancel through the device.  done_work
 * also frees the requests their owners orphaned.
 */

#include <linux/aio.h>
#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "fifolab.h"

/* Jiffies from now until @deadline, 0 if it has passed. */
static unsigned long fifolab_until(unsigned long deadline)
{
	unsigned long now = jiffies;

	return time_after(deadline, now) ? deadline - now : 0;
}

/* Bring the async timeout forward to @deadline; never push it back. */
void fifolab_timeout_arm(struct fifolab_dev *fdev, unsigned long deadline)
{
	struct delayed_work *dw = &fdev->timeout_work;

	if (!delayed_work_pending(dw) ||
	    time_before(deadline, READ_ONCE(dw->timer.expires)))
		mod_delayed_work(system_wq, dw, fifolab_until(deadline));
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
void fifolab_done(struct fifolab_dev *fdev)
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

void fifolab_done_work(struct work_struct *work)
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
void fifolab_timeout_work(struct work_struct *work)
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
ssize_t fifolab_aio_submit(struct kiocb *iocb, struct iov_iter *it,
			   struct fifolab_queue *q, bool nowait, bool whole)
{
	unsigned int timeout = READ_ONCE(fifolab_async_timeout_ms);
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

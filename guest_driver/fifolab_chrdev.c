// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab: the character device /dev/fifolabN.
 *
 * read/write (sync, O_NONBLOCK and IOCB_NOWAIT; async kiocbs go on to
 * fifolab_aio_submit()), poll, fasync and the ioctls of
 * include/uapi/fifolab.h.  docs/driver.md says how each user-space API
 * reaches which path.
 */

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/limits.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <asm/ioctls.h>

#include <uapi/fifolab.h>

#include "fifolab.h"

/* bytes a blocking write pins at a time; an async one pins all it has */
#define FIFOLAB_SYNC_PIN	SZ_4M

/* -------------------------------------------------------- sync requests */

static bool fifolab_req_done(struct fifolab_req *req)
{
	/* DONE before moved/err; pairs with fifolab_finish_locked() */
	return smp_load_acquire(&req->state) == FIFOLAB_REQ_DONE;
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
			   msecs_to_jiffies(fifolab_cancel_timeout_ms));
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
				    head, fifolab_cancel_timeout_ms);
	return err;
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
size_t fifolab_read_max(struct fifolab_queue *q)
{
	return q->fdev->fifo_depth;
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
						msecs_to_jiffies(fifolab_stall_timeout_ms ?: 5000));
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

const struct file_operations fifolab_fops = {
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

// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab: device errors and recovery (datasheet 3, 7; docs/driver.md,
 * "Faults").
 *
 * A device error is told once to every open file (fifolab_error() and the
 * fifolab_err_*() helpers, the errseq_t pattern).  fifolab_recover() stops
 * both queues when the device can no longer be trusted with what it holds
 * (it reset itself, broke a rule or stalled; or FIFOLAB_IOC_CLEAR asks for
 * a reset), and recover_work resets it, fails what was in flight and brings
 * it up again.  The reset and enable sequences are also probe's and
 * remove()'s.
 */

#include <linux/aio.h>
#include <linux/atomic.h>
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/iopoll.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "fifolab.h"

#define FIFOLAB_HW_TIMEOUT_US	USEC_PER_SEC	/* reset, enable (datasheet 3) */

/* ------------------------------------------------------- errors, once */

/*
 * A device error that every open file must hear of once: its next read or
 * write fails with -EIO (unless it was the caller that got the error),
 * poll() shows EPOLLERR until then.  Any context.
 */
void fifolab_error(struct fifolab_dev *fdev)
{
	atomic_inc(&fdev->err_gen);
	wake_up_interruptible_poll(&fdev->poll_wq, EPOLLERR);
}

bool fifolab_err_pending(struct fifolab_file *ff)
{
	return READ_ONCE(ff->err_seen) != (unsigned int)atomic_read(&ff->fdev->err_gen);
}

/* Take @ff's pending error: true once per error, whoever asks first. */
bool fifolab_err_take(struct fifolab_file *ff)
{
	unsigned int gen = atomic_read(&ff->fdev->err_gen);
	unsigned int seen = READ_ONCE(ff->err_seen);

	return seen != gen && cmpxchg(&ff->err_seen, seen, gen) == seen;
}

/* A caller on @ff got @ret: if it is the device's error, @ff has heard. */
void fifolab_err_told(struct fifolab_file *ff, long ret)
{
	if (ret == -EIO || ret == -ETIMEDOUT)
		WRITE_ONCE(ff->err_seen, atomic_read(&ff->fdev->err_gen));
}

/* ------------------------------------------------------------ recovery */

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
bool fifolab_recover(struct fifolab_dev *fdev, int err, bool report)
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

bool fifolab_running(struct fifolab_dev *fdev)
{
	bool running;

	spin_lock_irq(&fdev->irq_lock);
	running = fdev->hw_state == FIFOLAB_HW_RUNNING;
	spin_unlock_irq(&fdev->irq_lock);
	return running;
}

/*
 * Reset (datasheet 3, step 2) with interrupts disabled at the source.
 * After it succeeds the device holds no request: it will not touch any
 * buffer posted before.  If it fails (a stalled device handles no
 * doorbell), CONTROL stays RESET, so that the device resets first thing
 * when it handles doorbells again; fdev->recover_count is what RESET_COUNT
 * was before.
 */
int fifolab_hw_reset(struct fifolab_dev *fdev)
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
int fifolab_hw_enable(struct fifolab_dev *fdev)
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
unsigned int fifolab_fail_inflight(struct fifolab_dev *fdev, int err,
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
void fifolab_recover_work(struct work_struct *work)
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

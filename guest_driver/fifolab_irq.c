// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab: the interrupt handler and the watchdog.
 *
 * Both MSI-X vectors run fifolab_handle(): ack every pending cause, notice
 * a reset the device did by itself (fifolab_recover()), reap both queues,
 * wake pollers and send SIGIO.  The watchdog does the same for a message
 * that never came, and notices a device that stalled.
 */

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/interrupt.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/poll.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "fifolab.h"

/* causes after which poll() may say EPOLLIN, EPOLLOUT */
#define FIFOLAB_INT_POLL_IN	(FIFOLAB_INT_DATA_AVAIL | FIFOLAB_INT_RX_DONE)
#define FIFOLAB_INT_POLL_OUT	(FIFOLAB_INT_SPACE_AVAIL | FIFOLAB_INT_TX_DONE)

/* How often the watchdog looks while requests are in flight. */
unsigned long fifolab_watch_period(void)
{
	return msecs_to_jiffies(max(READ_ONCE(fifolab_completion_timeout_ms), 10U));
}

/* SIGIO to the file owners that asked for it (F_SETOWN, F_SETSIG). */
void fifolab_notify(struct fifolab_dev *fdev, int band)
{
	/* a racy peek: counts the calls made while the list is non-empty */
	if (!READ_ONCE(fdev->fasync))
		return;
	atomic64_inc(&fdev->sigio_sent);
	kill_fasync(&fdev->fasync, SIGIO, band);	/* IRQ-safe */
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
		/*
		 * The handler and the watchdog can both see one reset (the
		 * cause in one, READY clear in the other): the one that
		 * starts the recovery counts it.
		 */
		if (fifolab_recover(fdev, -EIO, true)) {
			atomic64_inc(&fdev->device_resets);
			dev_warn_ratelimited(&fdev->dev,
					     "device reset or stopped itself (status %#x): recovering\n",
					     status);
		}
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
irqreturn_t fifolab_irq(int irq, void *data)
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
void fifolab_watch_work(struct work_struct *work)
{
	struct fifolab_dev *fdev = container_of(to_delayed_work(work),
						struct fifolab_dev,
						watch_work);
	unsigned int stall = READ_ONCE(fifolab_stall_timeout_ms);
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

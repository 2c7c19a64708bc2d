// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab: the counters in /sys/class/fifolab/fifolabN/, which the tests
 * read to prove which path a request took.
 *
 * Most are plain counters: a per-queue one (struct fifolab_queue_stats,
 * shown for one queue or summed over both) or an atomic64_t of struct
 * fifolab_dev.  Each is one line of a table below (the dev_ext_attribute
 * pattern, with the counter's offset instead of a pointer, since every
 * device has its own); the few that are more than a number have their own
 * show function.
 */

#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/device.h>
#include <linux/kernel.h>
#include <linux/spinlock.h>
#include <linux/stddef.h>
#include <linux/sysfs.h>

#include "fifolab.h"

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

/*
 * A counter attribute: @off is the counter's offset in struct
 * fifolab_queue_stats (@queues: the BIT()s of the queues summed) or, with
 * @queues 0, of an atomic64_t in struct fifolab_dev.
 */
struct fifolab_counter_attr {
	struct device_attribute attr;
	size_t off;
	unsigned int queues;
};

static ssize_t fifolab_counter_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	const struct fifolab_counter_attr *ca =
		container_of(attr, struct fifolab_counter_attr, attr);
	struct fifolab_dev *fdev = to_fifolab(dev);
	struct fifolab_queue_stats st;
	unsigned int qid;
	u64 sum = 0;

	if (!ca->queues)
		return sysfs_emit(buf, "%lld\n",
				  atomic64_read((atomic64_t *)((char *)fdev + ca->off)));
	for (qid = 0; qid < FIFOLAB_NUM_QUEUES; qid++) {
		if (!(ca->queues & BIT(qid)))
			continue;
		st = fifolab_stats(fdev, qid);
		sum += *(u64 *)((char *)&st + ca->off);
	}
	return sysfs_emit(buf, "%llu\n", sum);
}

#define FIFOLAB_COUNTER(_name, _off, _queues)				\
	static struct fifolab_counter_attr fifolab_attr_##_name = {	\
		.attr = __ATTR(_name, 0444, fifolab_counter_show, NULL),	\
		.off = (_off),						\
		.queues = (_queues),					\
	}

/* q->stats.@_field of the queues in @_queues (their sum) */
#define FIFOLAB_QUEUE_COUNTER(_name, _field, _queues)			\
	FIFOLAB_COUNTER(_name,						\
			offsetof(struct fifolab_queue_stats, _field), _queues)

/* fdev->@_field, an atomic64_t */
#define FIFOLAB_DEV_COUNTER(_name, _field)				\
	FIFOLAB_COUNTER(_name, offsetof(struct fifolab_dev, _field), 0)

#define FIFOLAB_TX		BIT(FIFOLAB_QUEUE_TX)
#define FIFOLAB_RX		BIT(FIFOLAB_QUEUE_RX)

FIFOLAB_QUEUE_COUNTER(tx_bytes, bytes, FIFOLAB_TX);
FIFOLAB_QUEUE_COUNTER(rx_bytes, bytes, FIFOLAB_RX);
FIFOLAB_QUEUE_COUNTER(cancels, cancels, FIFOLAB_TX | FIFOLAB_RX);
FIFOLAB_QUEUE_COUNTER(bad_completions, bad, FIFOLAB_TX | FIFOLAB_RX);
FIFOLAB_QUEUE_COUNTER(doorbells, doorbells, FIFOLAB_TX | FIFOLAB_RX);
FIFOLAB_QUEUE_COUNTER(doorbells_skipped, doorbells_skipped,
		      FIFOLAB_TX | FIFOLAB_RX);
FIFOLAB_DEV_COUNTER(async_submitted, aio.submitted);
FIFOLAB_DEV_COUNTER(async_completed, aio.completed);
FIFOLAB_DEV_COUNTER(async_cancelled, aio.cancelled);
FIFOLAB_DEV_COUNTER(async_failed, aio.failed);
FIFOLAB_DEV_COUNTER(sigio_sent, sigio_sent);
FIFOLAB_DEV_COUNTER(recoveries, recoveries);
FIFOLAB_DEV_COUNTER(device_resets, device_resets);
FIFOLAB_DEV_COUNTER(stalls, stalls);
FIFOLAB_DEV_COUNTER(lost_irqs, lost_irqs);
FIFOLAB_DEV_COUNTER(spurious_irqs, spurious_irqs);
FIFOLAB_DEV_COUNTER(clears, clears);

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

/* device errors reported to the open files (each hears of each once) */
static ssize_t errors_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	return sysfs_emit(buf, "%u\n",
			  (unsigned int)atomic_read(&to_fifolab(dev)->err_gen));
}
static DEVICE_ATTR_RO(errors);

/* 1 while the device works, 0 while a fault is being recovered from */
static ssize_t running_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%d\n", fifolab_running(to_fifolab(dev)));
}
static DEVICE_ATTR_RO(running);

static ssize_t fifo_depth_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", to_fifolab(dev)->fifo_depth);
}
static DEVICE_ATTR_RO(fifo_depth);

static struct attribute *fifolab_attrs[] = {
	&fifolab_attr_tx_bytes.attr.attr,
	&fifolab_attr_rx_bytes.attr.attr,
	&fifolab_attr_cancels.attr.attr,
	&fifolab_attr_doorbells.attr.attr,
	&fifolab_attr_doorbells_skipped.attr.attr,
	&fifolab_attr_bad_completions.attr.attr,
	&dev_attr_irqs.attr,
	&dev_attr_fifo_depth.attr,
	&fifolab_attr_async_submitted.attr.attr,
	&fifolab_attr_async_completed.attr.attr,
	&fifolab_attr_async_cancelled.attr.attr,
	&fifolab_attr_async_failed.attr.attr,
	&fifolab_attr_sigio_sent.attr.attr,
	&fifolab_attr_recoveries.attr.attr,
	&fifolab_attr_device_resets.attr.attr,
	&fifolab_attr_stalls.attr.attr,
	&fifolab_attr_lost_irqs.attr.attr,
	&fifolab_attr_spurious_irqs.attr.attr,
	&dev_attr_running.attr,
	&fifolab_attr_clears.attr.attr,
	&dev_attr_errors.attr,
	NULL,
};

static const struct attribute_group fifolab_group = {
	.attrs = fifolab_attrs,
};

/* ATTRIBUTE_GROUPS(fifolab), but probe (fifolab_main.c) needs it */
const struct attribute_group *fifolab_groups[] = {
	&fifolab_group,
	NULL,
};

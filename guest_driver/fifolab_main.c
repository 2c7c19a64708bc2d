// SPDX-License-Identifier: GPL-2.0
/*
 * fifolab - driver for the fifolab FIFO peripheral (docs/datasheet.md)
 *
 * The device sits behind QEMU's ivshmem-doorbell (1af4:1110): BAR0 holds the
 * doorbell, BAR1 the MSI-X table, BAR2 is shared RAM with the device's
 * registers and its two descriptor queues (TX = queue 0 feeds the FIFO,
 * RX = queue 1 drains it).  Each bound device gets /dev/fifolabN.
 *
 * This file: the module parameters, probe and remove, module init and
 * exit.  docs/driver.md maps the other files; fifolab.h has the structures
 * and the locking rules.
 */

#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/wait_bit.h>
#include <linux/workqueue.h>

#include "fifolab.h"

#define FIFOLAB_MAX_DEVICES	64

unsigned int fifolab_cancel_timeout_ms = 2000;
module_param_named(cancel_timeout_ms, fifolab_cancel_timeout_ms, uint, 0644);
MODULE_PARM_DESC(cancel_timeout_ms,
		 "how long a cancelled request may take to come back (ms)");

unsigned int fifolab_async_timeout_ms;
module_param_named(async_timeout_ms, fifolab_async_timeout_ms, uint, 0644);
MODULE_PARM_DESC(async_timeout_ms,
		 "cancel an async request still pending after this long (ms, 0 = never)");

unsigned int fifolab_completion_timeout_ms = 1000;
module_param_named(completion_timeout_ms, fifolab_completion_timeout_ms,
		   uint, 0644);
MODULE_PARM_DESC(completion_timeout_ms,
		 "while requests are in flight, look for completions whose interrupt was lost this often (ms, default 1000)");

unsigned int fifolab_stall_timeout_ms = 5000;
module_param_named(stall_timeout_ms, fifolab_stall_timeout_ms, uint, 0644);
MODULE_PARM_DESC(stall_timeout_ms,
		 "a device that handles no doorbell for this long with requests in flight is stalled: they fail with -ETIMEDOUT (ms, default 5000, 0 = never)");

static struct class *fifolab_class;
static dev_t fifolab_devt;
static DEFINE_IDA(fifolab_minors);

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

// SPDX-License-Identifier: GPL-2.0
/*
 * minififo - the tutorial's minimal driver for the fifolab FIFO peripheral.
 *
 * Everything a first driver needs, from docs/datasheet.md alone: find the
 * device (MAGIC in BAR2), map BAR0 (doorbell) and BAR2 (registers, queues),
 * take an MSI-X vector, reset and enable the device (datasheet 3), then do
 * one DMA round trip: post a TX descriptor pointing at a DMA buffer, wait for
 * the TX_DONE interrupt, post an RX descriptor, wait for RX_DONE, compare.
 * The result goes to the kernel log and to sysfs (round_trip).
 *
 * Deliberately missing (see guest_driver/ for all of it): a char
 * device, user buffers, several requests in flight, cancel, poll, fasync,
 * async I/O, and distrust of the device.
 */

#include <linux/completion.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/iopoll.h>
#include <linux/module.h>
#include <linux/pci.h>

#include "fifolab_hw.h"	/* the register map; reload --src provides it */

struct minififo {
	void __iomem *bar0;		/* ivshmem registers: the doorbell */
	void *bar2;			/* shared memory: our registers and queues */
	u32 peer;			/* whose doorbell to ring */
	u32 acked;			/* our copy of INT_ACKED */
	atomic_t irqs;
	struct completion done;		/* a queue completed something */
	char result[64];
};

static u32 mini_rd(struct minififo *m, unsigned int off)
{
	return le32_to_cpu(READ_ONCE(*(__le32 *)(m->bar2 + off)));
}

static void mini_wr(struct minififo *m, unsigned int off, u32 val)
{
	WRITE_ONCE(*(__le32 *)(m->bar2 + off), cpu_to_le32(val));
}

static void mini_ring(struct minififo *m)
{
	wmb();	/* BAR2 stores before the doorbell */
	writel(m->peer << 16 | FIFOLAB_DOORBELL_VECTOR,
	       m->bar0 + IVSHMEM_REG_DOORBELL);
}

/* Datasheet 2: ack first, barrier, then look at the state. */
static irqreturn_t mini_irq(int irq, void *data)
{
	struct minififo *m = data;
	u32 raised = mini_rd(m, FIFOLAB_REG_INT_RAISED);
	u32 pending = raised ^ m->acked;

	if (!pending)
		return IRQ_NONE;
	m->acked = raised;
	mini_wr(m, FIFOLAB_REG_INT_ACKED, raised);
	mb();
	atomic_inc(&m->irqs);
	if (pending & (FIFOLAB_INT_TX_DONE | FIFOLAB_INT_RX_DONE))
		complete(&m->done);
	return IRQ_HANDLED;
}

/* One request of one segment on queue @q; returns the bytes moved. */
static int mini_xfer(struct minififo *m, int q, dma_addr_t addr, u32 len)
{
	void *base = m->bar2 + FIFOLAB_QUEUE_BASE + q * FIFOLAB_QUEUE_STRIDE;
	struct fifolab_desc *desc = base + FIFOLAB_Q_DESC_OFF;
	__le16 *avail = base + FIFOLAB_Q_AVAIL_OFF;
	struct fifolab_used *used = base + FIFOLAB_Q_USED_OFF;
	u32 idx = mini_rd(m, FIFOLAB_QCTL(q, FIFOLAB_QCTL_AVAIL_IDX));
	struct fifolab_used *e;

	desc[0].addr = cpu_to_le64(addr);	/* descriptor 0 is the head */
	desc[0].len = cpu_to_le32(len);
	desc[0].flags = 0;
	desc[0].next = 0;
	avail[idx % FIFOLAB_QUEUE_SIZE] = cpu_to_le16(0);
	wmb();	/* descriptor and avail entry before AVAIL_IDX */
	reinit_completion(&m->done);
	mini_wr(m, FIFOLAB_QCTL(q, FIFOLAB_QCTL_AVAIL_IDX), idx + 1);
	mini_ring(m);

	if (!wait_for_completion_timeout(&m->done, HZ))
		return -ETIMEDOUT;
	if (mini_rd(m, FIFOLAB_QCTL(q, FIFOLAB_QCTL_USED_IDX)) != idx + 1)
		return -EIO;
	rmb();	/* USED_IDX before the entry it covers */
	e = &used[idx % FIFOLAB_QUEUE_SIZE];
	if (le32_to_cpu(e->status) != FIFOLAB_ST_OK || le32_to_cpu(e->len) > len)
		return -EIO;
	return le32_to_cpu(e->len);
}

/* Datasheet 3: reset, ack, enable the causes we use, enable. */
static int mini_bring_up(struct minififo *m)
{
	u32 count = mini_rd(m, FIFOLAB_REG_RESET_COUNT), val;
	int ret;

	mini_wr(m, FIFOLAB_QCTL(FIFOLAB_QUEUE_TX, FIFOLAB_QCTL_AVAIL_IDX), 0);
	mini_wr(m, FIFOLAB_QCTL(FIFOLAB_QUEUE_RX, FIFOLAB_QCTL_AVAIL_IDX), 0);
	mini_wr(m, FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_RESET);
	mini_ring(m);
	ret = read_poll_timeout(mini_rd, val, val != count, 1000, USEC_PER_SEC,
				false, m, FIFOLAB_REG_RESET_COUNT);
	if (ret)
		return ret;
	m->acked = mini_rd(m, FIFOLAB_REG_INT_RAISED);
	mini_wr(m, FIFOLAB_REG_INT_ACKED, m->acked);
	mini_wr(m, FIFOLAB_REG_INT_ENABLE,
		FIFOLAB_INT_TX_DONE | FIFOLAB_INT_RX_DONE);
	mini_wr(m, FIFOLAB_REG_CONTROL, FIFOLAB_CTRL_ENABLE);
	mini_ring(m);
	return read_poll_timeout(mini_rd, val, val & FIFOLAB_STS_READY, 1000,
				 USEC_PER_SEC, false, m, FIFOLAB_REG_STATUS);
}

static int mini_round_trip(struct pci_dev *pdev, struct minififo *m)
{
	static const char msg[] = "hello from minififo";
	dma_addr_t dma;
	char *buf;
	int n;

	buf = dmam_alloc_coherent(&pdev->dev, PAGE_SIZE, &dma, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, msg, sizeof(msg));
	n = mini_xfer(m, FIFOLAB_QUEUE_TX, dma, sizeof(msg));	/* into the FIFO */
	if (n != sizeof(msg))
		return n < 0 ? n : -EIO;
	n = mini_xfer(m, FIFOLAB_QUEUE_RX, dma + 2048, 2048);	/* and back out */
	if (n != sizeof(msg) || memcmp(buf + 2048, msg, sizeof(msg)))
		return n < 0 ? n : -EIO;
	return n;
}

static ssize_t round_trip_show(struct device *dev, struct device_attribute *attr,
			       char *buf)
{
	struct minififo *m = pci_get_drvdata(to_pci_dev(dev));

	return sysfs_emit(buf, "%s\n", m->result);
}
static DEVICE_ATTR_RO(round_trip);

static int mini_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct minififo *m;
	int ret;

	m = devm_kzalloc(&pdev->dev, sizeof(*m), GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	init_completion(&m->done);
	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	m->bar0 = pcim_iomap(pdev, 0, 0);
	m->bar2 = devm_memremap(&pdev->dev, pci_resource_start(pdev, 2),
				pci_resource_len(pdev, 2), MEMREMAP_WB);
	if (!m->bar0 || IS_ERR(m->bar2))
		return -ENOMEM;
	if (mini_rd(m, FIFOLAB_REG_MAGIC) != FIFOLAB_MAGIC_VALUE)
		return -ENODEV;	/* some other ivshmem user */
	m->peer = mini_rd(m, FIFOLAB_REG_DEVICE_PEER);

	pci_set_master(pdev);
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;
	ret = pci_alloc_irq_vectors(pdev, 1, FIFOLAB_NUM_VECTORS, PCI_IRQ_MSIX);
	if (ret < 0)
		return ret;
	ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, FIFOLAB_VEC_QUEUE),
			       mini_irq, 0, "minififo", m);
	if (ret)
		return ret;
	pci_set_drvdata(pdev, m);

	ret = mini_bring_up(m);
	if (ret)
		return ret;
	ret = mini_round_trip(pdev, m);
	if (ret < 0) {
		snprintf(m->result, sizeof(m->result), "failed %d", ret);
		dev_err(&pdev->dev, "DMA round trip failed: %d\n", ret);
	} else {
		snprintf(m->result, sizeof(m->result), "ok %d bytes %d interrupts",
			 ret, atomic_read(&m->irqs));
		dev_info(&pdev->dev, "DMA round trip ok: %d bytes, %d interrupts\n",
			 ret, atomic_read(&m->irqs));
	}
	return device_create_file(&pdev->dev, &dev_attr_round_trip);
}

static void mini_remove(struct pci_dev *pdev)
{
	struct minififo *m = pci_get_drvdata(pdev);

	device_remove_file(&pdev->dev, &dev_attr_round_trip);
	mini_wr(m, FIFOLAB_REG_CONTROL, 0);	/* stop processing */
	mini_ring(m);
}

static const struct pci_device_id mini_ids[] = {
	{ PCI_DEVICE(0x1af4, 0x1110) },	/* QEMU ivshmem */
	{ }
};
MODULE_DEVICE_TABLE(pci, mini_ids);

static struct pci_driver mini_driver = {
	.name = "minififo",
	.id_table = mini_ids,
	.probe = mini_probe,
	.remove = mini_remove,
};
module_pci_driver(mini_driver);

MODULE_DESCRIPTION("fifolab tutorial: a minimal driver, one DMA transfer");
MODULE_LICENSE("GPL");

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fifolab FIFO peripheral: register and queue layout in BAR2.
 *
 * The C half of one spec; the Python half is device/regs.py and the prose is
 * docs/datasheet.md.  tests/test_regs_agree.py checks the two halves agree.
 * Every register has exactly one writer (driver or device).
 */
#ifndef FIFOLAB_HW_H
#define FIFOLAB_HW_H

#define FIFOLAB_BAR2_SIZE		0x100000

#define FIFOLAB_MAGIC_VALUE		0x424C4946	/* "FILB" */
#define FIFOLAB_VERSION_VALUE		0x00010000

/* register block (u32, little-endian, unless noted) */
#define FIFOLAB_REG_MAGIC		0x000	/* RO */
#define FIFOLAB_REG_VERSION		0x004	/* RO major << 16 | minor */
#define FIFOLAB_REG_FEATURES		0x008	/* RO FIFOLAB_FEAT_* */
#define FIFOLAB_REG_DEVICE_PEER		0x00C	/* RO ivshmem peer id to ring */
#define FIFOLAB_REG_FIFO_DEPTH		0x010	/* RO bytes */
#define FIFOLAB_REG_QUEUE_SIZE		0x014	/* RO descriptors per queue */
#define FIFOLAB_REG_NUM_VECTORS		0x018	/* RO */
#define FIFOLAB_REG_MAX_SEGS		0x01C	/* RO descriptors per request */

#define FIFOLAB_REG_CONTROL		0x020	/* driver writes */
#define FIFOLAB_REG_STATUS		0x024	/* device writes */
#define FIFOLAB_REG_INT_RAISED		0x028	/* device writes: bit flips = raised */
#define FIFOLAB_REG_INT_ACKED		0x02C	/* driver writes */
#define FIFOLAB_REG_INT_ENABLE		0x030	/* driver writes */
#define FIFOLAB_REG_RX_LEVEL		0x034	/* device writes */
#define FIFOLAB_REG_TX_SPACE		0x038	/* device writes */
#define FIFOLAB_REG_ERR_CODE		0x03C	/* device writes */
#define FIFOLAB_REG_ERR_ADDR		0x040	/* device writes, u64 */
#define FIFOLAB_REG_RESET_COUNT		0x048	/* device writes */
#define FIFOLAB_REG_ERR_COUNT		0x04C	/* device writes */
#define FIFOLAB_REG_NO_NOTIFY		0x050	/* device writes: 1 = no doorbell needed */

#define FIFOLAB_REG_STAT_TX_BYTES	0x080	/* u64 */
#define FIFOLAB_REG_STAT_RX_BYTES	0x088	/* u64 */
#define FIFOLAB_REG_STAT_IRQS		0x090	/* u64 */
#define FIFOLAB_REG_STAT_DOORBELLS	0x098	/* u64 */
#define FIFOLAB_REG_STAT_COMPLETIONS	0x0A0	/* u64 */

#define FIFOLAB_QCTL_BASE		0x100
#define FIFOLAB_QCTL_STRIDE		0x10
#define FIFOLAB_QCTL_AVAIL_IDX		0x0	/* driver writes, free-running */
#define FIFOLAB_QCTL_USED_IDX		0x4	/* device writes, free-running */
#define FIFOLAB_QCTL(q, field) \
	(FIFOLAB_QCTL_BASE + (q) * FIFOLAB_QCTL_STRIDE + (field))

#define FIFOLAB_FEAT_LOOPBACK		BIT(0)
#define FIFOLAB_FEAT_NOWAIT		BIT(1)
#define FIFOLAB_FEAT_CANCEL		BIT(2)
#define FIFOLAB_FEAT_HOST_WIRE		BIT(3)
#define FIFOLAB_FEAT_NO_NOTIFY		BIT(4)

#define FIFOLAB_CTRL_ENABLE		BIT(0)
#define FIFOLAB_CTRL_RESET		BIT(1)

#define FIFOLAB_STS_READY		BIT(0)
#define FIFOLAB_STS_DMA_ERROR		BIT(1)
#define FIFOLAB_STS_RESET_DONE		BIT(2)

#define FIFOLAB_INT_RX_DONE		BIT(0)	/* vector 0 */
#define FIFOLAB_INT_TX_DONE		BIT(1)	/* vector 0 */
#define FIFOLAB_INT_DATA_AVAIL		BIT(2)	/* vector 0 */
#define FIFOLAB_INT_SPACE_AVAIL		BIT(3)	/* vector 0 */
#define FIFOLAB_INT_ERROR		BIT(4)	/* vector 1 */
#define FIFOLAB_INT_RESET		BIT(5)	/* vector 1 */
#define FIFOLAB_INT_ALL			0x3F

#define FIFOLAB_VEC_QUEUE		0
#define FIFOLAB_VEC_EVENT		1
#define FIFOLAB_NUM_VECTORS		2
#define FIFOLAB_DOORBELL_VECTOR		0

/* queues */
#define FIFOLAB_QUEUE_TX		0	/* driver -> device: write() */
#define FIFOLAB_QUEUE_RX		1	/* device -> driver: read() */
#define FIFOLAB_NUM_QUEUES		2
#define FIFOLAB_QUEUE_SIZE		1024
#define FIFOLAB_MAX_SEGS		260
#define FIFOLAB_MAX_REQ_BYTES		0x40000000	/* bytes one request may carry */
#define FIFOLAB_QUEUE_BASE		0x10000
#define FIFOLAB_QUEUE_STRIDE		0x10000
#define FIFOLAB_Q_DESC_OFF		0x0000
#define FIFOLAB_Q_AVAIL_OFF		0x4000
#define FIFOLAB_Q_USED_OFF		0x8000

/* descriptor: 16 bytes */
#define FIFOLAB_DESC_SIZE		16
#define FIFOLAB_DESC_ADDR		0
#define FIFOLAB_DESC_LEN		8
#define FIFOLAB_DESC_FLAGS		12
#define FIFOLAB_DESC_NEXT		14
#define FIFOLAB_DESC_F_NEXT		BIT(0)
#define FIFOLAB_DESC_F_NOWAIT		BIT(1)	/* head only */
#define FIFOLAB_DESC_F_CANCEL		BIT(2)	/* head only, set after posting */

/* used entry: 16 bytes */
#define FIFOLAB_USED_SIZE		16
#define FIFOLAB_USED_ID			0
#define FIFOLAB_USED_LEN		4
#define FIFOLAB_USED_STATUS		8

#define FIFOLAB_ST_OK			0
#define FIFOLAB_ST_DMA_ERROR		1
#define FIFOLAB_ST_BAD_DESC		2
#define FIFOLAB_ST_CANCELLED		3

#define FIFOLAB_ERR_NONE		0
#define FIFOLAB_ERR_DMA_RANGE		1
#define FIFOLAB_ERR_DESC_INDEX		2
#define FIFOLAB_ERR_DESC_CHAIN		3
#define FIFOLAB_ERR_DESC_LEN		4
#define FIFOLAB_ERR_REQ_LEN		5	/* segments add up to > MAX_REQ_BYTES */
#define FIFOLAB_ERR_AVAIL_IDX		6	/* AVAIL_IDX too far ahead: reset */

struct fifolab_desc {
	__le64 addr;
	__le32 len;
	__le16 flags;
	__le16 next;
};

struct fifolab_used {
	__le32 id;
	__le32 len;
	__le32 status;
	__le32 reserved;
};

/* ivshmem BAR0 registers (QEMU's, not ours) */
#define IVSHMEM_REG_INTRMASK		0x00
#define IVSHMEM_REG_INTRSTATUS		0x04
#define IVSHMEM_REG_IVPOSITION		0x08
#define IVSHMEM_REG_DOORBELL		0x0C

#endif /* FIFOLAB_HW_H */

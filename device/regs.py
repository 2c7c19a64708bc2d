"""The FIFO peripheral's register and queue layout in BAR2 -- the Python half of one spec.

The C half is ``guest_driver/fifolab_hw.h``; ``tests/test_regs_agree.py`` checks that every
constant here has the same value there.  The prose is ``docs/datasheet.md``.

BAR2 (1 MiB of shared memory) ::

    0x00000 +----------------------------+
            | register block (4 KiB)     |  identification, control/status,
            |                            |  interrupt cause/ack, levels, errors
    0x10000 +----------------------------+
            | queue 0: TX (to device)    |  desc table @ +0x0000 (QSIZE x 16 B)
            |                            |  avail ring @ +0x4000 (QSIZE x u16)
            |                            |  used ring  @ +0x8000 (QSIZE x 16 B)
    0x20000 +----------------------------+
            | queue 1: RX (from device)  |  same layout
    0x30000 +----------------------------+
            | unused                     |
    0x100000+----------------------------+

Every register has exactly one writer (driver or device), so neither side needs an atomic
read-modify-write on memory the other side writes.

The two ring entries are read and written through :data:`desc_layout` and :data:`used_layout`
(the model's queues and the tests' driver both); ``desc_offset``, ``avail_offset`` and
``used_offset`` say where an entry lies.
"""

import struct

BAR2_SIZE = 0x100000

MAGIC_VALUE = 0x424C4946          # bytes "FILB" at offset 0
VERSION_VALUE = 0x00010000        # major 1, minor 0

# ---- register block: offsets (all little-endian u32 unless noted) ----
REG_MAGIC = 0x000                 # RO  MAGIC_VALUE
REG_VERSION = 0x004               # RO  major << 16 | minor
REG_FEATURES = 0x008              # RO  FEAT_* bits
REG_DEVICE_PEER = 0x00C           # RO  ivshmem peer id of the device: ring its doorbell
REG_FIFO_DEPTH = 0x010            # RO  FIFO capacity in bytes
REG_QUEUE_SIZE = 0x014            # RO  descriptors per queue (a power of two)
REG_NUM_VECTORS = 0x018           # RO  MSI-X vectors the device raises
REG_MAX_SEGS = 0x01C              # RO  most descriptors one request may chain

REG_CONTROL = 0x020               # driver writes  CTRL_* bits
REG_STATUS = 0x024                # device writes  STS_* bits
REG_INT_RAISED = 0x028            # device writes  a cause bit flips when the cause is raised
REG_INT_ACKED = 0x02C             # driver writes  copy of INT_RAISED's bits it has handled
REG_INT_ENABLE = 0x030            # driver writes  causes the device may raise
REG_RX_LEVEL = 0x034              # device writes  bytes in the (RX) FIFO no pending read has taken
REG_TX_SPACE = 0x038              # device writes  free bytes in the (TX) FIFO
REG_ERR_CODE = 0x03C              # device writes  ERR_* of the last DMA/descriptor error
REG_ERR_ADDR = 0x040              # device writes  u64: guest address of the last error
REG_RESET_COUNT = 0x048           # device writes  completed resets since power-on
REG_ERR_COUNT = 0x04C             # device writes  errors since power-on
REG_NO_NOTIFY = 0x050             # device writes  1 while a doorbell is being handled: the
                                  #                device looks at both avail rings again
                                  #                before it stops, a post needs no doorbell

# statistics kept by the device (u64, device writes)
REG_STAT_TX_BYTES = 0x080         # bytes DMA-read from guest memory into the FIFO
REG_STAT_RX_BYTES = 0x088         # bytes DMA-written from the FIFO into guest memory
REG_STAT_IRQS = 0x090             # MSI-X messages sent
REG_STAT_DOORBELLS = 0x098        # doorbells received
REG_STAT_COMPLETIONS = 0x0A0      # used-ring entries written

# per-queue indices: QCTL_BASE + q * QCTL_STRIDE
QCTL_BASE = 0x100
QCTL_STRIDE = 0x10
QCTL_AVAIL_IDX = 0x0              # driver writes  free-running count of heads posted
QCTL_USED_IDX = 0x4               # device writes  free-running count of used entries written

# ---- bits ----
FEAT_LOOPBACK = 1 << 0            # what TX accepts, RX returns
FEAT_NOWAIT = 1 << 1              # DESC_F_NOWAIT honoured
FEAT_CANCEL = 1 << 2              # DESC_F_CANCEL honoured
FEAT_HOST_WIRE = 1 << 3           # wired to the host: TX goes out, host bytes come in via RX
FEAT_NO_NOTIFY = 1 << 4           # REG_NO_NOTIFY is kept (doorbell suppression)

CTRL_ENABLE = 1 << 0              # process queues; device answers with STS_READY
CTRL_RESET = 1 << 1               # drop all queue state; device clears it when done

STS_READY = 1 << 0                # enabled and processing
STS_DMA_ERROR = 1 << 1            # an error was reported since the last reset (sticky)
STS_RESET_DONE = 1 << 2           # a reset completed (until CTRL_ENABLE)

INT_RX_DONE = 1 << 0              # RX used entries written        (vector 0)
INT_TX_DONE = 1 << 1              # TX used entries written        (vector 0)
INT_DATA_AVAIL = 1 << 2           # RX_LEVEL grew                  (vector 0)
INT_SPACE_AVAIL = 1 << 3          # TX_SPACE grew                  (vector 0)
INT_ERROR = 1 << 4                # an error was reported          (vector 1)
INT_RESET = 1 << 5                # a reset completed              (vector 1)
INT_ALL = 0x3F

VEC_QUEUE = 0                     # vector of RX_DONE, TX_DONE, DATA_AVAIL, SPACE_AVAIL
VEC_EVENT = 1                     # vector of ERROR, RESET
NUM_VECTORS = 2
INT_VECTOR_OF = {
    INT_RX_DONE: VEC_QUEUE, INT_TX_DONE: VEC_QUEUE,
    INT_DATA_AVAIL: VEC_QUEUE, INT_SPACE_AVAIL: VEC_QUEUE,
    INT_ERROR: VEC_EVENT, INT_RESET: VEC_EVENT,
}

DOORBELL_VECTOR = 0               # the driver rings the device on this vector

# ---- queues ----
QUEUE_TX = 0                      # driver -> device: write()
QUEUE_RX = 1                      # device -> driver: read()
NUM_QUEUES = 2
QUEUE_SIZE = 1024
MAX_SEGS = 260                    # 1 MiB at any alignment needs 257 pages
MAX_REQ_BYTES = 0x40000000        # most bytes one request's segments may add up to (1 GiB)
QUEUE_BASE = 0x10000
QUEUE_STRIDE = 0x10000
Q_DESC_OFF = 0x0000               # struct desc[QUEUE_SIZE]
Q_AVAIL_OFF = 0x4000              # u16 avail[QUEUE_SIZE]: head descriptor indices
Q_USED_OFF = 0x8000               # struct used[QUEUE_SIZE]

# descriptor: u64 addr, u32 len, u16 flags, u16 next
DESC_SIZE = 16
DESC_ADDR = 0
DESC_LEN = 8
DESC_FLAGS = 12
DESC_NEXT = 14
DESC_F_NEXT = 1 << 0              # the chain continues at .next
DESC_F_NOWAIT = 1 << 1            # head only: complete at once with what can move now
DESC_F_CANCEL = 1 << 2            # head only: set by the driver after posting to cancel

# used entry: u32 id (head index), u32 len (bytes moved), u32 status, u32 reserved
USED_SIZE = 16
USED_ID = 0
USED_LEN = 4
USED_STATUS = 8

# The same two layouts as struct formats, little-endian.  (Lower-case: every upper-case name
# here is a constant of fifolab_hw.h, which tests/test_regs_agree.py holds to.)
desc_layout = struct.Struct("<QIHH")      # addr, len, flags, next
used_layout = struct.Struct("<IIII")      # id, len, status, reserved
assert desc_layout.size == DESC_SIZE and used_layout.size == USED_SIZE

ST_OK = 0
ST_DMA_ERROR = 1                  # a segment lies outside guest RAM
ST_BAD_DESC = 2                   # bad index, loop, too many segments, zero length
ST_CANCELLED = 3                  # DESC_F_CANCEL seen; len = bytes moved before it

ERR_NONE = 0
ERR_DMA_RANGE = 1
ERR_DESC_INDEX = 2
ERR_DESC_CHAIN = 3
ERR_DESC_LEN = 4
ERR_REQ_LEN = 5                   # the segments add up to more than MAX_REQ_BYTES
ERR_AVAIL_IDX = 6                 # AVAIL_IDX ahead by more than the ring can hold: needs reset


def qctl(q: int, field: int) -> int:
    """Offset of a queue's index register."""
    return QCTL_BASE + q * QCTL_STRIDE + field


def queue_base(q: int) -> int:
    return QUEUE_BASE + q * QUEUE_STRIDE


def desc_offset(q: int, idx: int) -> int:
    """Offset of descriptor ``idx`` of queue ``q`` (``idx`` < QUEUE_SIZE)."""
    return queue_base(q) + Q_DESC_OFF + idx * DESC_SIZE


def avail_offset(q: int, count: int) -> int:
    """Offset of the avail slot that the ``count``-th post (a free-running index) fills."""
    return queue_base(q) + Q_AVAIL_OFF + 2 * (count % QUEUE_SIZE)


def used_offset(q: int, count: int) -> int:
    """Offset of the used entry that the ``count``-th completion (free-running) fills."""
    return queue_base(q) + Q_USED_OFF + (count % QUEUE_SIZE) * USED_SIZE

"""One descriptor queue: its ring in BAR2, and the requests the device holds from it.

As rust-vmm's virtio-queue keeps the ring in its own type (``pop_descriptor_chain``,
``add_used``), this is the only code that reads an avail slot, a descriptor or a cancel flag and
the only code that writes a used entry or ``USED_IDX``.  What to do with a request -- move its
bytes, complete it, delay it, cancel it -- is the device's policy (:mod:`device.core`).

::

    queue q at 0x10000 + 0x10000 q        (datasheet 4, regs.py)
      +0x0000 desc[1024]    16 B   regs.desc_layout: u64 addr, u32 len, u16 flags, u16 next
      +0x4000 avail[1024]   u16    head indices, slot = post count % 1024
      +0x8000 used[1024]    16 B   regs.used_layout: u32 id, u32 len, u32 status, u32 0

    AVAIL_IDX (driver)   posts so far          new heads = AVAIL_IDX - last_avail
    last_avail           posts fetched so far
    USED_IDX (device)    used entries written  = used_idx

A request on its queue::

    avail slot --pop_chain--> pending --(moved what it will move)--> used entry (add_used)
        |                        |                              `--> delayed (slow) --> used entry
        `--> RingError           `--(DESC_F_CANCEL seen)--> used entry CANCELLED
             (used entry with its status, ERR_CODE/ERR_ADDR)

Checks, each an ``ERR_*`` the guest can read (datasheet 5): a head or ``next`` index out of
range (DESC_INDEX), more than MAX_SEGS descriptors or a loop (DESC_CHAIN), a zero length
(DESC_LEN), a segment outside guest RAM (DMA_RANGE), more than MAX_REQ_BYTES in all (REQ_LEN) --
those belong to one request; an ``AVAIL_IDX`` further ahead than the ring can hold beside the
requests the device holds (AVAIL_IDX) belongs to the queue.  Walking a chain takes one
descriptor per step from the step's :class:`Budget`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import regs
from .bar2 import U32_MASK, Bar2
from .errors import DmaRangeError
from .guestmem import GuestMemory

if TYPE_CHECKING:
    from .faults import Fault

__all__ = ["Budget", "Queue", "Request", "RingError", "AvailError", "STATUS_OF_ERR"]

# error code -> used-entry status (datasheet 5)
STATUS_OF_ERR = {
    regs.ERR_DMA_RANGE: regs.ST_DMA_ERROR,
    regs.ERR_DESC_INDEX: regs.ST_BAD_DESC,
    regs.ERR_DESC_CHAIN: regs.ST_BAD_DESC,
    regs.ERR_DESC_LEN: regs.ST_BAD_DESC,
    regs.ERR_REQ_LEN: regs.ST_BAD_DESC,
}


class RingError(Exception):
    """The guest broke a ring rule: the ``ERR_*`` code and the address (or index) that
    ``ERR_ADDR`` reports; ``head`` is the request's, None for the queue's own error."""

    def __init__(self, code: int, addr: int, head: int | None = None) -> None:
        super().__init__(code, addr)
        self.code = code
        self.addr = addr
        self.head = head


class AvailError(RingError):
    """``AVAIL_IDX`` is ``ahead`` of the fetched index by more than the ring can hold beside
    the ``held`` requests (a stale or wild index): which slots are new cannot be told."""

    def __init__(self, avail: int, ahead: int, held: int) -> None:
        super().__init__(regs.ERR_AVAIL_IDX, avail)
        self.ahead = ahead
        self.held = held


@dataclass(slots=True)
class Budget:
    """What one step may still do (datasheet 6): descriptors the queues may walk, bytes the
    data path may copy.  The device refills it at the start of every step."""

    descs: int = 0
    bytes: int = 0


@dataclass(eq=False, slots=True)
class Request:
    """A validated request the device holds until its used entry is written."""

    queue: Queue
    head: int
    segs: list          # memoryviews of guest RAM, in chain order
    total: int          # sum of segment lengths
    nowait: bool
    addr: int = 0       # guest address of the first segment (an injected DMA error's ERR_ADDR)
    moved: int = 0      # bytes moved so far (TX only ever partially)
    seg: int = 0        # TX: segment being copied
    off: int = 0        # TX: bytes of segs[seg] already copied
    flips: tuple = ()   # TX corrupt fault: bit positions in the payload to flip on the way in
    corrupt: Fault | None = None    # RX corrupt fault: flip bits once the data is written


class Queue:
    """Queue ``index`` (regs.QUEUE_TX or QUEUE_RX) of the device whose BAR2 is ``bar2``.

    ``pending``: fetched requests, in the order posted, until they have moved what they will
    move (the data path and the policy take them off).  ``delayed``: ``(due, head, moved,
    total)`` of requests whose used entry a slow fault holds back, in due order
    (:meth:`hold`, :meth:`pop_due`).  A reset empties both.
    """

    def __init__(self, index: int, bar2: Bar2, mem: GuestMemory, log: logging.Logger) -> None:
        self.index = index
        self.name = "TX" if index == regs.QUEUE_TX else "RX"     # in log lines
        self.key = self.name.lower()                              # in faults and events
        self.done_cause = regs.INT_TX_DONE if index == regs.QUEUE_TX else regs.INT_RX_DONE
        self._bar2 = bar2
        self._mem = mem
        self.log = log
        self._avail_reg = regs.qctl(index, regs.QCTL_AVAIL_IDX)
        self._used_reg = regs.qctl(index, regs.QCTL_USED_IDX)
        self.pending: deque[Request] = deque()
        self.delayed: deque[tuple[float, int, int, int]] = deque()
        self.last_avail = 0
        self.used_idx = 0

    # ---- the avail side ----

    def avail_idx(self) -> int:
        """``AVAIL_IDX`` as the driver last wrote it."""
        return self._bar2.r32(self._avail_reg)

    def posted(self) -> bool:
        """Has the driver posted since the last fetch?"""
        return self.avail_idx() != self.last_avail

    def new_heads(self) -> int:
        """How many heads were posted since the last fetch.  :class:`AvailError` if that is
        more than QUEUE_SIZE minus the requests held (each holds a descriptor until its used
        entry is written, so no driver can have posted more)."""
        avail = self.avail_idx()
        new = (avail - self.last_avail) & U32_MASK
        held = len(self.pending) + len(self.delayed)
        if new > regs.QUEUE_SIZE - held:
            raise AvailError(avail, new, held)
        return new

    def pop_chain(self, budget: Budget) -> Request:
        """Fetch the next posted head and walk its chain; :class:`RingError` (the slot is
        consumed all the same) if the chain is bad.  The caller knows a head was posted."""
        slot = self.last_avail % regs.QUEUE_SIZE
        head = self._bar2.r16(regs.avail_offset(self.index, slot))
        self.last_avail = (self.last_avail + 1) & U32_MASK
        try:
            return self._build(head, budget)
        except RingError as err:
            err.head = head
            raise

    def _build(self, head: int, budget: Budget) -> Request:
        if head >= regs.QUEUE_SIZE:
            raise RingError(regs.ERR_DESC_INDEX, head)
        debug = self.log.isEnabledFor(logging.DEBUG)
        buf = self._bar2.buf
        segs: list[memoryview] = []
        total = 0
        head_flags = 0
        first_addr = 0
        idx = head
        while True:
            if len(segs) >= regs.MAX_SEGS:
                raise RingError(regs.ERR_DESC_CHAIN, head)        # too long, or a loop
            budget.descs -= 1
            addr, length, flags, nxt = regs.desc_layout.unpack_from(
                buf, regs.desc_offset(self.index, idx))
            if debug:
                self.log.debug("%s desc %d: addr=%#x len=%d flags=%#x next=%d",
                               self.name, idx, addr, length, flags, nxt)
            if not segs:
                head_flags = flags
                first_addr = addr
            if length == 0:
                raise RingError(regs.ERR_DESC_LEN, idx)
            try:
                segs.append(self._mem.view(addr, length))
            except DmaRangeError:
                raise RingError(regs.ERR_DMA_RANGE, addr) from None
            total += length
            if total > regs.MAX_REQ_BYTES:
                raise RingError(regs.ERR_REQ_LEN, head)
            if not flags & regs.DESC_F_NEXT:
                break
            if nxt >= regs.QUEUE_SIZE:
                raise RingError(regs.ERR_DESC_INDEX, nxt)
            idx = nxt
        return Request(self, head, segs, total, bool(head_flags & regs.DESC_F_NOWAIT),
                       first_addr)

    def cancelled(self, r: Request) -> bool:
        """Does ``r``'s head carry DESC_F_CANCEL now?  (The driver sets it after posting.)"""
        off = regs.desc_offset(self.index, r.head) + regs.DESC_FLAGS
        return bool(self._bar2.r16(off) & regs.DESC_F_CANCEL)

    def take(self, pick: Callable[[Request], bool],
             handle: Callable[[Request], None]) -> None:
        """Hand each pending request that ``pick`` picks to ``handle``, in order, then drop
        them from ``pending`` (which still holds them all while ``handle`` runs)."""
        pend = self.pending
        if not pend:
            return
        keep: deque[Request] = deque()
        for r in pend:
            if pick(r):
                handle(r)
            else:
                keep.append(r)
        if len(keep) != len(pend):
            self.pending = keep

    # ---- the used side ----

    def add_used(self, head: int, length: int, status: int, rx_level: int,
                 tx_space: int) -> int:
        """Write RX_LEVEL and TX_SPACE, then the used entry, then USED_IDX: a driver that has
        seen a completion reads the levels that follow it (datasheet 2), so that it can tell
        what a request posted now would get.  Returns the entry's free-running index."""
        self._bar2.w32(regs.REG_RX_LEVEL, rx_level)
        self._bar2.w32(regs.REG_TX_SPACE, tx_space)
        used = self.used_idx
        regs.used_layout.pack_into(self._bar2.buf, regs.used_offset(self.index, used),
                                   head & U32_MASK, length & U32_MASK, status, 0)
        self.used_idx = (used + 1) & U32_MASK
        self._bar2.w32(self._used_reg, self.used_idx)
        return used

    def jump_used(self, n: int) -> int:
        """Move USED_IDX ``n`` ahead with no entries (a hostile fault); return it."""
        self.used_idx = (self.used_idx + n) & U32_MASK
        self._bar2.w32(self._used_reg, self.used_idx)
        return self.used_idx

    # ---- what it holds ----

    def hold(self, r: Request, due: float) -> None:
        """Write ``r``'s used entry at ``due`` -- or later: never ahead of one held before."""
        due = max(due, self.delayed[-1][0] if self.delayed else 0.0)
        self.delayed.append((due, r.head, r.moved, r.total))

    def next_due(self) -> float | None:
        return self.delayed[0][0] if self.delayed else None

    def pop_due(self, now: float) -> Iterator[tuple[int, int, int]]:
        """``(head, moved, total)`` of each held request due by ``now``, in order."""
        d = self.delayed
        while d and d[0][0] <= now:
            yield d.popleft()[1:]

    def held(self) -> list[int]:
        """Heads of the requests the device holds: pending, then delayed."""
        return [r.head for r in self.pending] + [d[1] for d in self.delayed]

    def describe(self) -> dict[str, Any]:
        """The queue as a monitor shows it."""
        return {"avail_idx": self.avail_idx(), "fetched": self.last_avail,
                "used_idx": self.used_idx, "pending": len(self.pending),
                "pending_heads": [r.head for r in self.pending][:32],
                "delayed": len(self.delayed)}

    def reset(self) -> int:
        """Drop every request held without a used entry, zero both indices and USED_IDX
        (datasheet 3); return how many were dropped."""
        dropped = len(self.pending) + len(self.delayed)
        self.clear()
        self._bar2.w32(self._used_reg, 0)
        return dropped

    def clear(self) -> None:
        """Forget every request and index (power-on; close: no reference into guest RAM)."""
        self.pending.clear()
        self.delayed.clear()
        self.last_avail = 0
        self.used_idx = 0

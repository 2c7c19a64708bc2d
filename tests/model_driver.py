"""A driver-side helper for the device-model tests: posts chains into a bytearray BAR2, rings
the model directly, reads used entries -- no VM, no sockets.

Guest RAM is a bytearray behind a :class:`GuestMemory` with a small ``low_limit``, so tests get
the q35 shape (low RAM, a hole, high RAM from 4 GiB) without gigabytes::

    gpa 0 .. low_limit            low RAM      (file offset == gpa)
    gpa low_limit .. 4 GiB        hole         (DMA error)
    gpa 4 GiB .. 4 GiB + rest     high RAM     (file offset low_limit + gpa - 4 GiB)
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass

from device import regs
from device.core import FifoDevice
from device.guestmem import FOUR_GIB, GuestMemory

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class Used:
    id: int
    len: int
    status: int


def sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


class Driver:
    """Plays the guest driver against a :class:`FifoDevice`."""

    def __init__(self, ram_size: int = 4 << 20, low_limit: int | None = None,
                 depth: int = 65536, enable: bool = True, int_enable: int = regs.INT_ALL,
                 host_wire: bool = False, ram=None):
        # ``ram``: a buffer of ram_size bytes to use instead of a new bytearray (an anonymous
        # mmap costs nothing for pages never touched: requests of hundreds of MiB)
        self.ram = ram if ram is not None else bytearray(ram_size)
        self.mem = GuestMemory(self.ram, ram_size, low_limit)
        self.bar2 = bytearray(regs.BAR2_SIZE)
        self.vectors: list[int] = []
        self.wakes = 0
        self.dev = FifoDevice(self.bar2, self.mem, depth, peer_id=0,
                              raise_vector=self.vectors.append, host_wire=host_wire,
                              wake_host=self._wake)
        self.dev.power_on()
        self.low_size = min(ram_size, self.mem.low_limit)
        self._init_queues()
        if enable:
            self.bring_up(int_enable)

    def _wake(self) -> None:
        self.wakes += 1

    def _init_queues(self) -> None:
        self._next = 0x1000          # bump allocator over low RAM, then high RAM
        self._free = {q: list(range(regs.QUEUE_SIZE)) for q in (0, 1)}
        self._avail = {q: 0 for q in (0, 1)}
        self._seen = {q: 0 for q in (0, 1)}
        self._chains: dict[tuple[int, int], list[int]] = {}

    # ---- registers ----
    def r32(self, off: int) -> int:
        return _U32.unpack_from(self.bar2, off)[0]

    def r64(self, off: int) -> int:
        return _U64.unpack_from(self.bar2, off)[0]

    def w32(self, off: int, value: int) -> None:
        _U32.pack_into(self.bar2, off, value)

    def ring(self) -> None:
        self.dev.doorbell()

    def ack(self) -> int:
        r = self.r32(regs.REG_INT_RAISED)
        self.w32(regs.REG_INT_ACKED, r)
        return r

    def pending_causes(self) -> int:
        return self.r32(regs.REG_INT_RAISED) ^ self.r32(regs.REG_INT_ACKED)

    def bring_up(self, int_enable: int = regs.INT_ALL) -> None:
        """Datasheet section 3."""
        assert self.r32(regs.REG_MAGIC) == regs.MAGIC_VALUE
        count = self.r32(regs.REG_RESET_COUNT)
        for q in (0, 1):
            self.w32(regs.qctl(q, regs.QCTL_AVAIL_IDX), 0)
            self._avail[q] = self._seen[q] = 0
            self._free[q] = list(range(regs.QUEUE_SIZE))
        self._chains.clear()
        self.w32(regs.REG_CONTROL, regs.CTRL_RESET)
        self.ring()
        assert self.r32(regs.REG_RESET_COUNT) == count + 1
        self.ack()
        self.w32(regs.REG_INT_ENABLE, int_enable)
        self.w32(regs.REG_CONTROL, regs.CTRL_ENABLE)
        self.ring()
        assert self.r32(regs.REG_STATUS) & regs.STS_READY
        self.vectors.clear()

    # ---- guest memory ----
    def alloc(self, n: int, align: int = 8) -> int:
        """A guest-physical buffer of n bytes (low RAM first, then high RAM)."""
        start = (self._next + align - 1) // align * align
        if start + n > self.low_size and start < FOUR_GIB:
            start = FOUR_GIB
        if start >= FOUR_GIB:
            assert start + n <= FOUR_GIB + len(self.ram) - self.low_size, "test RAM exhausted"
        self._next = start + n
        return start

    def _off(self, gpa: int) -> int:
        return gpa if gpa < FOUR_GIB else self.low_size + gpa - FOUR_GIB

    def poke(self, gpa: int, data) -> None:
        o = self._off(gpa)
        self.ram[o:o + len(data)] = data

    def peek(self, gpa: int, n: int) -> bytes:
        o = self._off(gpa)
        return bytes(self.ram[o:o + n])

    # ---- descriptors ----
    def write_desc(self, q: int, idx: int, addr: int, length: int, flags: int = 0,
                   nxt: int = 0) -> None:
        regs.desc_layout.pack_into(self.bar2, regs.desc_offset(q, idx), addr, length, flags,
                                   nxt)

    def set_flags(self, q: int, idx: int, flags: int) -> None:
        _U16.pack_into(self.bar2, regs.desc_offset(q, idx) + regs.DESC_FLAGS, flags)

    def post_head(self, q: int, head: int) -> None:
        """Put ``head`` in the avail ring and bump AVAIL_IDX (no ring)."""
        _U16.pack_into(self.bar2, regs.avail_offset(q, self._avail[q]), head)
        self._avail[q] = (self._avail[q] + 1) & 0xFFFFFFFF
        self.w32(regs.qctl(q, regs.QCTL_AVAIL_IDX), self._avail[q])

    def post(self, q: int, segs: list[tuple[int, int]], flags: int = 0,
             ring: bool = True) -> int:
        """Chain ``segs`` [(gpa, len)] from the free list, post it; return the head."""
        idxs = [self._free[q].pop(0) for _ in segs]
        for i, (gpa, n) in enumerate(segs):
            last = i == len(segs) - 1
            f = (0 if last else regs.DESC_F_NEXT) | (flags if i == 0 else 0)
            self.write_desc(q, idxs[i], gpa, n, f, 0 if last else idxs[i + 1])
        self._chains[(q, idxs[0])] = idxs
        self.post_head(q, idxs[0])
        if ring:
            self.ring()
        return idxs[0]

    def used(self, q: int) -> list[Used]:
        """New used entries since the last call; frees their descriptors."""
        out = []
        end = self.r32(regs.qctl(q, regs.QCTL_USED_IDX))
        while self._seen[q] != end:
            uid, ulen, st, _ = regs.used_layout.unpack_from(self.bar2,
                                                            regs.used_offset(q, self._seen[q]))
            out.append(Used(uid, ulen, st))
            self._free[q].extend(self._chains.pop((q, uid), []))
            self._seen[q] = (self._seen[q] + 1) & 0xFFFFFFFF
        return out

    # ---- convenience: whole buffers ----
    def tx(self, data: bytes, seg: int | None = None, flags: int = 0,
           ring: bool = True) -> int:
        """Post ``data`` for TX, split into ``seg``-byte segments; return the head."""
        gpa = self.alloc(len(data))
        self.poke(gpa, data)
        return self.post(regs.QUEUE_TX, split(gpa, len(data), seg), flags, ring)

    def rx(self, n: int, seg: int | None = None, flags: int = 0,
           ring: bool = True) -> tuple[int, int]:
        """Post an n-byte RX buffer; return (head, gpa)."""
        gpa = self.alloc(n)
        self.poke(gpa, b"\xEE" * n)
        return self.post(regs.QUEUE_RX, split(gpa, n, seg), flags, ring), gpa


def split(gpa: int, n: int, seg: int | None) -> list[tuple[int, int]]:
    """[(gpa, len)] segments of at most ``seg`` bytes, the first up to the next seg boundary
    (like a user buffer mapped page by page)."""
    if not seg:
        return [(gpa, n)]
    out = []
    end = gpa + n
    while gpa < end:
        nxt = min(end, (gpa // seg + 1) * seg)
        out.append((gpa, nxt - gpa))
        gpa = nxt
    return out


class RemoteDriver(Driver):
    """Plays the guest driver against a model in another process (or event loop), as QEMU
    would let it: ``bar2`` is the shared memory received over the ivshmem socket, ``ram`` a
    mapping of the guest RAM file (all low RAM), doorbells go through the model's eventfd.

    :meth:`ring` waits until the model has counted the doorbell (``STAT_DOORBELLS``, written
    last), so every check after it sees the doorbell's outcome.
    """

    def __init__(self, bar2, ram, ring_fd: int, enable: bool = True,
                 int_enable: int = regs.INT_ALL, timeout: float = 10.0):
        self.ram = ram
        self.bar2 = bar2
        self.mem = None
        self.dev = None
        self.vectors = []
        self.low_size = len(ram)
        self._ring_fd = ring_fd
        self._timeout = timeout
        self._rings = self.r64(regs.REG_STAT_DOORBELLS)
        self._init_queues()
        if enable:
            self.bring_up(int_enable)

    def ring(self) -> None:
        self._rings += 1
        os.eventfd_write(self._ring_fd, 1)
        self.wait(lambda: self.r64(regs.REG_STAT_DOORBELLS) >= self._rings, "doorbell")

    def wait(self, pred, what: str = "condition") -> None:
        deadline = time.monotonic() + self._timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.0005)

    def wait_used(self, q: int, n: int = 1) -> list[Used]:
        """Wait for ``n`` new used entries on queue ``q``; return them."""
        got: list[Used] = []

        def more() -> bool:
            got.extend(self.used(q))
            return len(got) >= n
        self.wait(more, f"{n} used entries on queue {q}")
        return got

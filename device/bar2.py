"""BAR2 as the model touches it: registers read and written in single stores, and the fence.

BAR2 is memory the guest's vCPUs read and write while the model runs (see the threading note in
:mod:`device.core`).  Two rules follow, and this module is where both live:

* a register is written with **one** store of its width.  ``struct.pack_into`` zeroes its target
  before it packs (CPython's ``s_pack_internal``), so a register written that way would read 0
  for a moment -- for as long as the model's thread is preempted in between.  Hence the typed
  ``memoryview`` casts below: one 4- or 8-byte store per register.
* where the datasheet asks the device for a full barrier (doorbell suppression: withdraw
  ``NO_NOTIFY``, then re-read ``AVAIL_IDX``), the model calls :func:`fence`.
"""

from __future__ import annotations

import struct
import threading

__all__ = ["Bar2", "U32_MASK", "U64_MASK", "fence"]

U32_MASK = 0xFFFF_FFFF
U64_MASK = 0xFFFF_FFFF_FFFF_FFFF
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_FENCE = threading.Lock()


def fence() -> None:
    """A full memory barrier: this thread's earlier stores to shared memory are visible before
    its later loads from it (the device's half of an ``mb()`` pair with the driver).

    Python has no barrier primitive.  Acquiring a lock is an atomic read-modify-write (``lock
    cmpxchg`` on x86, where the lab runs), which orders a store before a later load -- plain
    Python has no other way to ask for that.
    """
    with _FENCE:
        pass


class Bar2:
    """Little-endian register access straight on the shared buffer ``buf``.

    ``buf`` itself stays available for the rings (``regs.desc_layout`` and friends), which the
    driver owns while the device reads them, and the device writes only in whole entries.
    """

    def __init__(self, buf) -> None:
        self.buf = buf
        self._u32 = memoryview(buf).cast("B").cast("I")
        self._u64 = memoryview(buf).cast("B").cast("Q")

    def r16(self, off: int) -> int:
        return _U16.unpack_from(self.buf, off)[0]

    def r32(self, off: int) -> int:
        return _U32.unpack_from(self.buf, off)[0]

    def r64(self, off: int) -> int:
        return _U64.unpack_from(self.buf, off)[0]

    def w32(self, off: int, value: int) -> None:
        self._u32[off >> 2] = value & U32_MASK          # one 4-byte store (off % 4 == 0)

    def w64(self, off: int, value: int) -> None:
        self._u64[off >> 3] = value & U64_MASK          # one 8-byte store (off % 8 == 0)

    def release(self) -> None:
        """Drop the typed views (so that the mapping under ``buf`` can close)."""
        self._u32.release()
        self._u64.release()

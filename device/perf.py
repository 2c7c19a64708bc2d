"""Copy-rate ceilings for ``fifolab bench``: how fast bytes can move, before any device logic.

* :func:`memcpy_rate` -- the host C library's ``memmove`` between two mappings (through
  ``ctypes``: one call per block, so the Python overhead is one call per block too);
* :func:`model_copy_rate` -- the device model's own way of moving payload: a memoryview slice
  assignment from one mapping into another, as :mod:`device.core` copies between guest RAM
  and its FIFO;
* :func:`model_fifo_rate` -- the model's loopback data path: every byte goes into a
  :class:`~device.fifo.ByteFifo` and out again (two copies), in blocks of the FIFO's depth.

Each copies ``size`` bytes in ``block``-byte pieces between anonymous shared mappings, repeated
``reps`` times, and returns the median rate in MB/s (10^6 bytes per second).  The mappings are
touched first, so page faults are not timed.
"""

from __future__ import annotations

import ctypes
import mmap
import statistics
import time

from .fifo import ByteFifo

__all__ = ["memcpy_rate", "model_copy_rate", "model_fifo_rate"]


def _mappings(size: int) -> tuple[mmap.mmap, mmap.mmap]:
    maps = []
    for fill in (0xA5, 0x5A):
        m = mmap.mmap(-1, size)
        m.write(bytes([fill]) * size)
        maps.append(m)
    return maps[0], maps[1]


def _median_rate(size: int, reps: int, once) -> float:
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        once()
        rates.append(size / (time.perf_counter() - t) / 1e6)
    return statistics.median(rates)


def memcpy_rate(size: int = 64 << 20, block: int = 1 << 20, reps: int = 5) -> float:
    src, dst = _mappings(size)
    s = ctypes.addressof(ctypes.c_char.from_buffer(src))
    d = ctypes.addressof(ctypes.c_char.from_buffer(dst))

    def once() -> None:
        for off in range(0, size, block):
            ctypes.memmove(d + off, s + off, block)

    try:
        return _median_rate(size, reps, once)
    finally:
        # ctypes' exports must be gone before the mappings close
        del s, d
        src.close()
        dst.close()


def model_copy_rate(size: int = 64 << 20, block: int = 1 << 20, reps: int = 5) -> float:
    src, dst = _mappings(size)
    sv, dv = memoryview(src), memoryview(dst)

    def once() -> None:
        for off in range(0, size, block):
            dv[off:off + block] = sv[off:off + block]

    try:
        return _median_rate(size, reps, once)
    finally:
        sv.release()
        dv.release()
        src.close()
        dst.close()


def model_fifo_rate(size: int = 64 << 20, depth: int = 65536, reps: int = 5) -> float:
    src, dst = _mappings(size)
    sv, dv = memoryview(src), memoryview(dst)
    fifo = ByteFifo(depth)

    def once() -> None:
        for off in range(0, size, depth):
            fifo.put(sv[off:off + depth])
            fifo.get_into(dv[off:off + depth])

    try:
        return _median_rate(size, reps, once)
    finally:
        fifo.close()
        sv.release()
        dv.release()
        src.close()
        dst.close()

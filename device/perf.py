"""Copy-rate ceilings for ``fifolab bench``: how fast bytes can move, before any device logic.

* :func:`memcpy_rate` -- the host C library's ``memmove`` between two mappings (through
  ``ctypes``: one call per block, so the Python overhead is one call per block too);
* :func:`model_copy_rate` -- the device model's own way of moving payload: a memoryview slice
  assignment from one mapping into another, as :mod:`device.datapath` copies between guest RAM
  and its FIFO (or, cut-through, between two guest buffers);
* :func:`model_fifo_rate` -- the model's loopback data path through its FIFO: every byte goes
  into a :class:`~device.fifo.ByteFifo` and out again (two copies), in blocks of the FIFO's
  depth.

Each copies ``size`` bytes in ``block``-byte pieces between anonymous shared mappings, repeated
``reps`` times, and returns the median rate in MB/s (10^6 bytes per second).  The mappings are
touched first, so page faults are not timed.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import statistics
import time
from collections.abc import Callable, Iterator

from .fifo import ByteFifo

__all__ = ["memcpy_rate", "model_copy_rate", "model_fifo_rate"]


@contextlib.contextmanager
def _mappings(size: int) -> Iterator[tuple[memoryview, memoryview]]:
    """Two touched mappings of ``size`` bytes, as memoryviews (source, destination)."""
    maps = []
    for fill in (0xA5, 0x5A):
        m = mmap.mmap(-1, size)
        m.write(bytes([fill]) * size)
        maps.append(m)
    views = [memoryview(m) for m in maps]
    try:
        yield views[0], views[1]
    finally:
        for v in views:
            v.release()
        for m in maps:
            m.close()


def _median_rate(size: int, reps: int, once: Callable[[], None]) -> float:
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        once()
        rates.append(size / (time.perf_counter() - t) / 1e6)
    return statistics.median(rates)


def memcpy_rate(size: int = 64 << 20, block: int = 1 << 20, reps: int = 5) -> float:
    with _mappings(size) as (sv, dv):
        buf_s = (ctypes.c_char * size).from_buffer(sv)
        buf_d = (ctypes.c_char * size).from_buffer(dv)
        s, d = ctypes.addressof(buf_s), ctypes.addressof(buf_d)

        def once() -> None:
            for off in range(0, size, block):
                ctypes.memmove(d + off, s + off, block)

        try:
            return _median_rate(size, reps, once)
        finally:
            del buf_s, buf_d            # ctypes' exports, before the views are released


def model_copy_rate(size: int = 64 << 20, block: int = 1 << 20, reps: int = 5) -> float:
    with _mappings(size) as (sv, dv):
        def once() -> None:
            for off in range(0, size, block):
                dv[off:off + block] = sv[off:off + block]

        return _median_rate(size, reps, once)


def model_fifo_rate(size: int = 64 << 20, depth: int = 65536, reps: int = 5) -> float:
    fifo = ByteFifo(depth)
    try:
        with _mappings(size) as (sv, dv):
            def once() -> None:
                for off in range(0, size, depth):
                    fifo.put(sv[off:off + depth])
                    fifo.get_into(dv[off:off + depth])

            return _median_rate(size, reps, once)
    finally:
        fifo.close()

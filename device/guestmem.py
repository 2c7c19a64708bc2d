"""Guest RAM as the device sees it: guest-physical address -> memoryview of the RAM file.

QEMU's ``memory-backend-file,share=on`` puts the guest's RAM in a file that this process maps
too.  On q35 the RAM is split around the PCI hole below 4 GiB::

    guest-physical                                 RAM file offset
    0x0000_0000 +--------------------------+       0
                | low RAM                  |       == guest-physical address
    low_limit   +--------------------------+       low_size = min(ram_size, low_limit)
                | PCI hole (no RAM: DMA    |
                | here is an error)        |
    4 GiB       +--------------------------+
                | high RAM (if ram_size >  |       low_size + (gpa - 4 GiB)
                | low_limit)               |
    4 GiB +     +--------------------------+       ram_size
    ram_size - low_size

``low_limit`` on q35 is 2 GiB when ``ram_size >= 0xB0000000`` (2.75 GiB), else 2.75 GiB.

:class:`GuestMemory` hands out memoryview slices of the file mapping; payload moves by slice
assignment, never through ``bytes`` copies.  A range that is not wholly inside one region
raises :class:`DmaRangeError`.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from .errors import ConfigError, DmaRangeError

__all__ = ["GuestMemory", "Region", "q35_low_limit", "open_ram_file", "DmaRangeError"]

FOUR_GIB = 1 << 32


def q35_low_limit(ram_size: int) -> int:
    """Top of low RAM on QEMU's q35 machine (``pc_q35_init``'s ``lowmem``)."""
    return 0x80000000 if ram_size >= 0xB0000000 else 0xB0000000


@dataclass(frozen=True)
class Region:
    """Guest-physical ``[start, end)`` backed by the file at ``offset``."""

    start: int
    end: int
    offset: int


class GuestMemory:
    """Guest RAM over ``buf`` (an mmap of the RAM file, or a bytearray in tests).

    ``ram_size`` defaults to ``len(buf)``; ``low_limit`` defaults to q35's.  Tests pass a small
    ``low_limit`` to get a PCI hole and high RAM without gigabytes of buffer.
    """

    def __init__(self, buf, ram_size: int | None = None, low_limit: int | None = None) -> None:
        self._mv = memoryview(buf).cast("B")
        buf_len = len(self._mv)
        if ram_size is None:
            ram_size = buf_len
        if ram_size <= 0 or ram_size > buf_len:
            self._mv.release()
            raise ValueError(f"ram_size {ram_size} does not fit the {buf_len}-byte buffer")
        if low_limit is None:
            low_limit = q35_low_limit(ram_size)
        low = min(ram_size, low_limit)
        regions = [Region(0, low, 0)]
        if ram_size > low:
            regions.append(Region(FOUR_GIB, FOUR_GIB + ram_size - low, low))
        self.ram_size = ram_size
        self.low_limit = low_limit
        self.regions: tuple[Region, ...] = tuple(regions)

    def view(self, gpa: int, length: int) -> memoryview:
        """The ``length`` bytes at guest-physical ``gpa``; raises :class:`DmaRangeError`."""
        if length >= 0:
            for r in self.regions:
                if r.start <= gpa and gpa + length <= r.end:
                    off = r.offset + gpa - r.start
                    return self._mv[off:off + length]
        raise DmaRangeError(gpa, length)

    def check(self, gpa: int, length: int) -> None:
        """Raise :class:`DmaRangeError` unless the range is wholly inside one region."""
        self.view(gpa, length).release()

    def contains(self, gpa: int, length: int) -> bool:
        try:
            self.check(gpa, length)
        except DmaRangeError:
            return False
        return True

    def close(self) -> None:
        """Drop this object's export of the buffer (slices handed out must be gone too)."""
        self._mv.release()


def open_ram_file(path: str, ram_size: int) -> mmap.mmap:
    """Map the guest RAM file shared, read-write.  :class:`ConfigError` if it cannot work."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise ConfigError(f"guest RAM file {path!r} does not exist (create it with "
                          f"'truncate -s {ram_size} {path}' before starting the model)") from err
    except OSError as err:
        raise ConfigError(f"cannot open guest RAM file {path!r}: {err.strerror}") from err
    try:
        size = os.fstat(fd).st_size
        if size < ram_size:
            raise ConfigError(f"guest RAM file {path!r} has {size} bytes, less than "
                              f"--ram-size {ram_size}")
        try:
            return mmap.mmap(fd, ram_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as err:      # ValueError: an empty file or size 0
            raise ConfigError(f"cannot map guest RAM file {path!r}: "
                              f"{getattr(err, 'strerror', None) or err}") from err
    finally:
        os.close(fd)

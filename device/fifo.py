"""The device's byte FIFO: a bounded ring buffer moved by memoryview slices.

::

    buf  [.......XXXXXXXXXXXXX..........]      X = bytes held (level)
                 ^head        ^tail = (head + level) % depth

    wrapped:
    buf  [XXXX.................XXXXXXXXX]
             ^tail             ^head

``put`` and ``get_into`` copy at most two slices each (the run up to the end of the buffer and
the run from its start); there is no per-byte loop.  ``peek`` + ``skip`` let a consumer (the
host wire's socket) send straight from the buffer and remove only what was taken.
"""

from __future__ import annotations

__all__ = ["ByteFifo", "DEFAULT_DEPTH"]

DEFAULT_DEPTH = 65536


class ByteFifo:
    """A bounded FIFO of bytes, ``depth`` bytes deep."""

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth <= 0:
            raise ValueError(f"FIFO depth must be positive, not {depth}")
        self.depth = depth
        self._buf = bytearray(depth)
        self._mv = memoryview(self._buf)
        self._head = 0
        self.level = 0

    @property
    def space(self) -> int:
        """Free bytes."""
        return self.depth - self.level

    def clear(self) -> None:
        self._head = 0
        self.level = 0

    def put(self, src: memoryview) -> int:
        """Append as much of ``src`` as fits; return how many bytes were taken."""
        n = min(len(src), self.depth - self.level)
        if n <= 0:
            return 0
        tail = (self._head + self.level) % self.depth
        first = min(n, self.depth - tail)
        self._mv[tail:tail + first] = src[:first]
        if n > first:
            self._mv[:n - first] = src[first:n]
        self.level += n
        return n

    def get_into(self, dst: memoryview) -> int:
        """Remove up to ``len(dst)`` bytes into ``dst``; return how many were moved."""
        n = min(len(dst), self.level)
        if n <= 0:
            return 0
        head = self._head
        first = min(n, self.depth - head)
        dst[:first] = self._mv[head:head + first]
        if n > first:
            dst[first:n] = self._mv[:n - first]
        self._head = (head + n) % self.depth
        self.level -= n
        return n

    def peek(self, n: int | None = None) -> memoryview:
        """A read-only view of the oldest bytes (at most ``n``), the run up to the buffer's end.

        Empty when the FIFO is.  Valid until the next ``put``/``skip``/``get_into``: release it
        (or let it go) before then.  More may follow from the buffer's start: peek again.
        """
        run = min(self.level, self.depth - self._head)
        if n is not None:
            run = min(run, n)
        return self._mv[self._head:self._head + run].toreadonly()

    def skip(self, n: int) -> int:
        """Remove up to ``n`` of the oldest bytes without copying; return how many."""
        n = max(0, min(n, self.level))
        self._head = (self._head + n) % self.depth
        self.level -= n
        return n

    def close(self) -> None:
        self._mv.release()

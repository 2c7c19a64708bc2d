"""Data movement: bytes between the requests at the front of the queues and the FIFO(s).

::

    loopback:  TX pending --pump_tx--> [ FIFO ] --pump_rx--> RX pending
                   `------------- cut-through -------------'   (FIFO empty: one copy, not two)
    wired:     TX pending --pump_tx--> [ TX FIFO ]   (the host empties it)
               (the host fills it)     [ RX FIFO ] --pump_rx--> RX pending

A TX request fills the FIFO as space allows and is done once all its bytes are in; an RX
request is done as soon as the FIFO holds a byte, taking ``min(level, its length)``; requests
are served in the order posted, and a NOWAIT request is done with what could move now.  A
request that has moved what it will move goes to ``done`` (the device's policy: complete it
now or later).  In wired mode the host's bytes come and go through :meth:`DataPath.fill_rx`
and :meth:`DataPath.drain_tx` (or the FIFO's ``peek``/``skip``), serving requests on the way.  Every copy comes out of the step's :class:`~device.queue.Budget`; an RX request
already started finishes whole (at most FIFO_DEPTH more).
"""

from __future__ import annotations

from collections.abc import Callable

from .fifo import ByteFifo
from .inject import flipped
from .queue import Budget, Queue, Request

__all__ = ["DataPath"]


class DataPath:
    """Moves the bytes of ``tx``'s and ``rx``'s pending requests through the FIFOs (one and
    the same in loopback, where ``cut_through`` is allowed).  ``corrupt_rx(r)`` applies an RX
    corrupt fault once ``r``'s data is in guest memory.  ``tx_bytes``/``rx_bytes`` count what
    was copied from and to guest memory since power-on (STAT_TX_BYTES, STAT_RX_BYTES)."""

    def __init__(self, tx: Queue, rx: Queue, tx_fifo: ByteFifo, rx_fifo: ByteFifo,
                 budget: Budget, done: Callable[[Request], None],
                 corrupt_rx: Callable[[Request], None]) -> None:
        self._tx = tx
        self._rx = rx
        self._tx_fifo = tx_fifo
        self._rx_fifo = rx_fifo
        self._budget = budget
        self._done = done
        self._corrupt_rx = corrupt_rx
        self._cut_allowed = tx_fifo is rx_fifo
        self.tx_bytes = 0
        self.rx_bytes = 0

    def clear(self) -> None:
        self.tx_bytes = self.rx_bytes = 0

    def pump(self) -> None:
        """Move until nothing moves or the step's bytes are spent."""
        while self._budget.bytes > 0 and (self._cut_through() | self.pump_tx() | self.pump_rx()):
            pass

    def fill_rx(self, src: memoryview) -> int:
        """Host bytes into the RX FIFO, as many as fit, serving pending RX requests as they
        arrive (which frees room); return how many were taken."""
        taken = 0
        while taken < len(src):
            n = self._rx_fifo.put(src[taken:])
            taken += n
            if not self.pump_rx() and not n:
                break
        return taken

    def drain_tx(self, out: memoryview, refill: bool) -> int:
        """Up to ``len(out)`` TX FIFO bytes into ``out``, the FIFO refilled from waiting TX
        requests as it empties if ``refill``; return how many."""
        got = 0
        while got < len(out):
            n = self._tx_fifo.get_into(out[got:])
            got += n
            if not (refill and self.pump_tx()) and not n:
                break
        return got

    @staticmethod
    def _cut_ok(r: Request) -> bool:
        """May ``r`` move by cut-through?  Not with NOWAIT or a corrupt fault attached."""
        return not (r.nowait or r.flips or r.corrupt is not None)

    def pump_tx(self) -> bool:
        """Move TX heads into the FIFO; True if anything moved or completed."""
        pend = self._tx.pending
        fifo = self._tx_fifo
        budget = self._budget
        progress = False
        while pend and budget.bytes > 0:
            r = pend[0]
            while r.seg < len(r.segs) and fifo.space and budget.bytes > 0:
                seg = r.segs[r.seg]
                src = seg[r.off:r.off + min(fifo.space, budget.bytes)]
                if r.flips:
                    src = flipped(src, r.moved, r.flips)
                n = fifo.put(src)
                budget.bytes -= n
                r.off += n
                r.moved += n
                self.tx_bytes += n
                progress = True
                if r.off == len(seg):
                    r.seg += 1
                    r.off = 0
            if r.moved < r.total and (not r.nowait or budget.bytes <= 0):
                break       # waits for space (or the next step); the requests behind it wait
            pend.popleft()
            self._done(r)
            progress = True
        return progress

    def pump_rx(self) -> bool:
        """Serve RX heads from the FIFO; True if anything moved or completed."""
        pend = self._rx.pending
        fifo = self._rx_fifo
        progress = False
        while pend and self._budget.bytes > 0:
            r = pend[0]
            if not fifo.level and not r.nowait:
                break       # waits for data
            for seg in r.segs:              # at most FIFO_DEPTH: one request finishes whole
                if not fifo.level:
                    break
                r.moved += fifo.get_into(seg)
            self._budget.bytes -= r.moved
            self.rx_bytes += r.moved
            pend.popleft()
            if r.corrupt is not None:
                self._corrupt_rx(r)
            self._done(r)
            progress = True
        return progress

    def _cut_through(self) -> bool:
        """Loopback, FIFO empty, a TX and an RX request waiting: copy from the writer's buffer
        straight into the reader's -- one copy instead of two (in and out of the FIFO).  The
        reader gets what it would have got through the FIFO (the writer's next bytes, up to
        its length, at least one), the writer completes when all its bytes are taken; only
        the copy is saved.  Requests with a fault attached or NOWAIT take the FIFO path."""
        if not self._cut_allowed or self._tx_fifo.level:
            return False
        tx, rx = self._tx.pending, self._rx.pending
        budget = self._budget
        ok = self._cut_ok
        progress = False
        while tx and rx and ok(tx[0]) and ok(rx[0]) and budget.bytes > 0:
            r = rx.popleft()
            got = 0
            for dst in r.segs:                      # fill r from successive writers
                off = 0
                while off < len(dst) and tx and ok(tx[0]) and budget.bytes > 0:
                    t = tx[0]
                    src = t.segs[t.seg]
                    n = min(len(dst) - off, len(src) - t.off, budget.bytes)
                    budget.bytes -= n
                    dst[off:off + n] = src[t.off:t.off + n]
                    off += n
                    t.off += n
                    t.moved += n
                    if t.off == len(src):
                        t.seg += 1
                        t.off = 0
                    if t.moved == t.total:
                        tx.popleft()
                        self._done(t)
                got += off
                if off < len(dst):
                    break                           # no writer left, or the step's bound
            r.moved = got
            self.tx_bytes += got
            self.rx_bytes += got
            self._done(r)
            progress = True
        return progress

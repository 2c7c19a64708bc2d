"""The host's end of a wired device (feature ``HOST_WIRE``): what the host wire calls.

::

    guest TX requests --> [ TX FIFO ] --tx_peek()/tx_commit(n), read_into(buf)--> the host
    the host --write(data)--> [ RX FIFO ] --> guest RX requests

    RX_LEVEL = RX FIFO level, TX_SPACE = TX FIFO space; each FIFO is FIFO_DEPTH deep

A byte stream with flow control and no loss: :meth:`HostPort.write` takes only what fits (0
while the device is not READY, so a bring-up reset cannot eat host bytes) and
:meth:`HostPort.tx_commit` removes only what the host took.  Each call that moves bytes is a
step of the device, as a doorbell is: it serves the guest's requests on the way (RX requests
complete as host bytes arrive, TX requests refill the TX FIFO as the host drains it) and its
end raises the causes it produced (RX_DONE/DATA_AVAIL after a write, TX_DONE/SPACE_AVAIL after
a read).  While the device is stalled nothing moves.  Called by :mod:`device.wire` (through
the ``host_*`` methods of :class:`~device.core.FifoDevice`), never by the guest.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from .datapath import DataPath
from .fifo import ByteFifo

__all__ = ["HostPort"]


class HostPort:
    """The host end of ``tx_fifo`` and ``rx_fifo``.  Of its device it needs a ``step()``
    context, ``pump()`` (move what can move now) and whether it is ``ready()`` (READY) and
    ``stalled()``.  ``bytes_in``/``bytes_out`` count host bytes since power-on."""

    def __init__(self, tx_fifo: ByteFifo, rx_fifo: ByteFifo, data: DataPath, *,
                 step: Callable[[], AbstractContextManager[None]], pump: Callable[[], object],
                 ready: Callable[[], bool], stalled: Callable[[], bool]) -> None:
        self._tx_fifo = tx_fifo
        self._rx_fifo = rx_fifo
        self._data = data
        self._step = step
        self._pump = pump
        self._ready = ready
        self._stalled = stalled
        self.bytes_in = 0           # host -> RX FIFO
        self.bytes_out = 0          # TX FIFO -> host

    def clear(self) -> None:
        self.bytes_in = self.bytes_out = 0

    def rx_space(self) -> int:
        """Bytes :meth:`write` will take now: the RX FIFO's space, 0 unless READY."""
        return self._rx_fifo.space if self._ready() and not self._stalled() else 0

    def tx_pending(self) -> int:
        """Bytes in the TX FIFO waiting for the host (0 while stalled: nothing moves)."""
        return 0 if self._stalled() else self._tx_fifo.level

    def write(self, data) -> int:
        """Host bytes into the RX FIFO: take as many as fit (pending RX requests are served as
        they arrive, freeing space); return how many were taken -- 0 when full or not READY.
        """
        if not self._ready() or self._stalled():
            return 0
        with memoryview(data).cast("B") as src, self._step():
            taken = self._data.fill_rx(src)
            self._pump()
            self.bytes_in += taken
        return taken

    def tx_peek(self, n: int | None = None) -> memoryview:
        """A read-only view of the oldest TX FIFO bytes (one contiguous run, maybe shorter than
        :meth:`tx_pending`); send from it, then :meth:`tx_commit` what was sent.  Valid until
        the next call into the device.
        """
        return self._tx_fifo.peek(n)

    def tx_commit(self, n: int) -> int:
        """The host took the ``n`` oldest TX FIFO bytes: remove them, let waiting TX requests
        refill the FIFO, raise TX_DONE/SPACE_AVAIL.  Returns how many were removed.
        """
        if self._stalled():
            return 0
        with self._step():
            n = self._tx_fifo.skip(n)
            self.bytes_out += n
            if self._ready():
                self._pump()
        return n

    def read_into(self, dst) -> int:
        """Move up to ``len(dst)`` TX FIFO bytes into ``dst`` (refilled from waiting TX
        requests as it empties); return how many.  :meth:`tx_commit` for a copy.
        """
        if self._stalled():
            return 0
        with memoryview(dst).cast("B") as out, self._step():
            got = self._data.drain_tx(out, refill=self._ready())
            if self._ready():
                self._pump()
            self.bytes_out += got
        return got

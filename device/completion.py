"""How a request that is done gets its used entry: now, or later and in order, or as a fault
would have it.

The policy (:mod:`device.core`) decides *that* a request is done -- it moved what it will
move, it was cancelled, it failed; this decides *when and how* its used entry is written::

    done(r) --DONE hook (slow: a due time)--+--> due, or its queue holds delayed ones
       |                                    |      --> queue.hold(r, due): never ahead of one
       |                                    |          held before; written by complete_due()
       |                                    `--> now
    cancel(r), fail (len 0, the error's status) ---> complete(queue, head, len, status)
                                                       --USED hook (hostile: long, unknown-id,
                                                         duplicate, index)--> write_used()
    write_used: queue.add_used (RX_LEVEL/TX_SPACE, the entry, USED_IDX), STAT_COMPLETIONS,
                RX_DONE/TX_DONE (and with coalescing off a message at once)

A bad chain (``total`` None) bypasses the USED hook: a hostile entry needs a request's length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from . import regs
from .inject import Injector
from .interrupts import Interrupts
from .queue import Queue, Request

__all__ = ["Completer"]


class Completer:
    """Used entries for the requests of ``queues``.  ``levels()`` gives (RX_LEVEL, TX_SPACE) as
    they are now; ``clock()`` the time a delayed entry is due against."""

    def __init__(self, queues: Sequence[Queue], levels: Callable[[], tuple[int, int]],
                 irq: Interrupts, inject: Injector, clock: Callable[[], float],
                 log: logging.Logger) -> None:
        self._queues = queues
        self._levels = levels
        self._irq = irq
        self._inject = inject
        self._clock = clock
        self.log = log
        self.completions = 0        # STAT_COMPLETIONS: used entries written since power-on

    def clear(self) -> None:
        self.completions = 0

    def done(self, r: Request) -> None:
        """``r`` moved what it will move: its entry now, or later (DONE hook: slow), never
        ahead of a delayed request on its queue."""
        due = self._inject.due(r)
        if due is None and not r.queue.delayed:
            self.complete(r.queue, r.head, r.moved, regs.ST_OK, r.total)
        else:
            r.queue.hold(r, due if due is not None else self._clock())

    def cancel(self, r: Request) -> None:
        """``r``'s head carries DESC_F_CANCEL: CANCELLED, with what it moved."""
        self.complete(r.queue, r.head, r.moved, regs.ST_CANCELLED, r.total)

    def complete_due(self) -> None:
        """Write the delayed entries that are due, in order per queue."""
        if not any(queue.delayed for queue in self._queues):
            return
        now = self._clock()
        for queue in self._queues:
            for head, moved, total in queue.pop_due(now):
                self.complete(queue, head, moved, regs.ST_OK, total)

    def next_due(self) -> float | None:
        """When the earliest delayed entry is due (None: none is held)."""
        # ignored: a queue that holds entries has a next_due(), a float, not None
        return min((queue.next_due() for queue in self._queues  # type: ignore[type-var]
                    if queue.delayed), default=None)

    def complete(self, queue: Queue, head: int, length: int, status: int,
                 total: int | None = None) -> None:
        """Complete a request (USED hook: hostile); ``total`` is None for a bad chain."""
        if total is not None and self._inject.used(queue, head, length, status, total):
            return
        self.write_used(queue, head, length, status)

    def write_used(self, queue: Queue, head: int, length: int, status: int) -> None:
        """One used entry, as given (the levels first: :meth:`~device.queue.Queue.add_used`)."""
        used = queue.add_used(head, length, status, *self._levels())
        self.completions += 1
        self._irq.entry_written(queue.done_cause)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s used #%d: id=%d len=%d status=%d", queue.name, used, head,
                           length, status)

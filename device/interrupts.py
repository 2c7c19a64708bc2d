"""The device's half of the interrupt rule (datasheet 2): which causes become MSI-X messages.

::

    a step collects causes -----------------------------.
      (used entries: RX_DONE/TX_DONE, levels grew:       |
       DATA_AVAIL/SPACE_AVAIL, ERROR, RESET)             v
                                                  flush():  new = causes & INT_ENABLE & ~pending
    pending = INT_RAISED ^ INT_ACKED                        INT_RAISED ^= new
    (INT_ACKED, INT_ENABLE: the driver's)                   each vector of `new` once --VECTOR hook
                                                            (lost-irq: not sent)--> send(vector)

Coalescing (on by default) is the rule itself: no message for a cause still pending, one per
vector per step.  Off (an operator setting, to measure what coalescing saves), every used entry
sends a queue-vector message as it is written, and every cause raised gets one at the end of
the step whether pending or not (a pending cause's bit is not flipped again: that would
withdraw it).  Spurious messages (a fault) carry nothing: INT_RAISED stays.

Every message sent counts in ``messages`` (STAT_IRQS), lost ones too: they were sent, and lost
on the way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import regs
from .bar2 import Bar2

__all__ = ["Interrupts"]

# the causes vector 0 carries (coalescing off sends it per used entry instead)
_QUEUE_VECTOR_CAUSES = sum(bit for bit, v in regs.INT_VECTOR_OF.items() if v == regs.VEC_QUEUE)


class Interrupts:
    """INT_RAISED, the causes a step collects, and the messages sent through ``send(vector)``;
    ``lost(vector)`` is the VECTOR fault hook (True: the message does not go out)."""

    def __init__(self, bar2: Bar2, send: Callable[[int], None], lost: Callable[[int], bool],
                 log: logging.Logger) -> None:
        self._bar2 = bar2
        self._send = send
        self._lost = lost
        self.log = log
        self.coalesce = True        # operator setting: survives power-on
        self.raised = 0             # INT_RAISED as the device wrote it
        self.messages = 0           # STAT_IRQS: messages sent since power-on
        self._causes = 0            # collected in this step
        self._entry_msgs = 0        # per-entry messages sent in this step (coalescing off)

    def clear(self) -> None:
        """Power-on: nothing raised, nothing sent, nothing collected."""
        self.raised = 0
        self.messages = 0
        self._causes = 0

    def begin(self) -> None:
        """A step starts: nothing collected yet."""
        self._causes = 0
        self._entry_msgs = 0

    def collect(self, causes: int) -> None:
        """Raise ``causes`` at the end of this step (:meth:`flush`)."""
        self._causes |= causes

    def entry_written(self, cause: int) -> None:
        """A used entry was written on the queue whose cause is ``cause``: collect it, and
        with coalescing off send the queue vector now (if the cause is enabled)."""
        self._causes |= cause
        if not self.coalesce and self._bar2.r32(regs.REG_INT_ENABLE) & cause:
            self._entry_msgs += 1
            self.messages += 1
            self._send(regs.VEC_QUEUE)

    def flush(self) -> None:
        """Raise the causes collected that are enabled and not pending; send each vector once.

        A cause is pending while its bit differs between INT_RAISED and INT_ACKED.  Raising
        flips the bit in INT_RAISED (the device's register) before the vector goes out.
        """
        causes = self._causes
        acked = self._bar2.r32(regs.REG_INT_ACKED)
        enable = self._bar2.r32(regs.REG_INT_ENABLE)
        pending = self.raised ^ acked
        new = causes & enable & ~pending & regs.INT_ALL
        send = new
        if not self.coalesce:
            send = causes & enable & regs.INT_ALL
            if self._entry_msgs:
                send &= ~_QUEUE_VECTOR_CAUSES
        if new:
            self.raised ^= new
            self._bar2.w32(regs.REG_INT_RAISED, self.raised)
        if not send:
            if causes and self.log.isEnabledFor(logging.DEBUG):
                self.log.debug("causes %#x not raised (enable %#x, pending %#x)", causes,
                               enable, pending)
            return
        vectors = sorted({v for bit, v in regs.INT_VECTOR_OF.items() if send & bit})
        self.messages += len(vectors)
        self._bar2.w64(regs.REG_STAT_IRQS, self.messages)
        for v in vectors:
            if self._lost(v):
                continue        # lost on the way
            self.log.debug("raise vector %d (causes %#x, INT_RAISED %#x)", v, new, self.raised)
            self._send(v)

    def spurious(self, vector: int, count: int = 1) -> int:
        """Send ``vector`` ``count`` times with nothing to report (INT_RAISED stays)."""
        if not 0 <= vector < regs.NUM_VECTORS:
            raise ValueError(f"no vector {vector}")
        for _ in range(count):
            self.messages += 1
            self._bar2.w64(regs.REG_STAT_IRQS, self.messages)
            self.log.debug("spurious vector %d", vector)
            self._send(vector)
        return count

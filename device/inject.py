"""Fault injection at work: what each armed fault (``device/faults.py``) does to the device.

The device asks its :class:`Injector` at five hook points and carries on as told; the injector
acts only through the few device paths it was given (:class:`Effects`), so an injected DMA
error is reported and completed exactly as a real one::

    hook      asked by the device                     kinds       answer
    DOORBELL  doorbell(): start, before CONTROL       reset,      -- (a device reset, a
                                                      spurious     spurious message, now)
    FETCH     fetched(r): r passed validation         dma-error,  True: r was completed
                                                      corrupt      (corrupt marks r instead)
    DONE      due(r): r moved what it will move       slow        when its used entry is due
    USED      used(entry): before a used entry        hostile     True: entries were written
    VECTOR    lost(v): before an MSI-X message        lost-irq    True: not sent

A handler gets the fault that fired and the hook's subject; an answer other than None decides
the outcome and ends the hook (the remaining faults are not drawn).  Each firing is logged and
reported as a ``FAULT_FIRED`` event.  Corrupt faults act on the data path: TX bits flip as
the payload enters the FIFO (:func:`flipped`), RX bits once the data is in guest memory
(:meth:`Injector.corrupt_rx`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import regs
from .faults import Fault, FaultSet, Hook, Kind
from .queue import Queue, Request

__all__ = ["Effects", "Injector", "HOSTILE_LONG_EXTRA", "flipped"]

HOSTILE_LONG_EXTRA = 4096       # a "long" hostile completion reports this many bytes too many


@dataclass(frozen=True)
class Effects:
    """What a fault may do to the device: its own paths, nothing else."""

    clock: Callable[[], float]                          # monotonic seconds
    emit: Callable[[str, dict], None]                   # a monitor event
    reset: Callable[[], None]                           # a device-initiated reset, in the step
    spurious: Callable[[int], Any]                      # a message with nothing to report
    fail: Callable[[Request], None]                     # complete r with an injected DMA error
    write_used: Callable[[Queue, int, int, int], None]  # (queue, id, len, status), as given


class Injector:
    """The armed ``faults`` of one device, applied through ``effects``."""

    def __init__(self, faults: FaultSet, effects: Effects, log: logging.Logger) -> None:
        self.faults = faults
        self._fx = effects
        self.log = log

    # ---- the hook points ----

    def doorbell(self) -> None:
        if self.faults.armed_at(Hook.DOORBELL):
            self._hook(Hook.DOORBELL, None)

    def fetched(self, r: Request) -> bool:
        return (self.faults.armed_at(Hook.FETCH)
                and bool(self._hook(Hook.FETCH, r, queue=r.queue.key)))

    def due(self, r: Request) -> float | None:
        if not self.faults.armed_at(Hook.DONE):
            return None
        return self._hook(Hook.DONE, r, queue=r.queue.key)

    def used(self, queue: Queue, head: int, length: int, status: int, total: int) -> bool:
        return (self.faults.armed_at(Hook.USED)
                and bool(self._hook(Hook.USED, (queue, head, length, status, total),
                                    queue=queue.key)))

    def lost(self, vector: int) -> bool:
        return (self.faults.armed_at(Hook.VECTOR)
                and bool(self._hook(Hook.VECTOR, vector, vector=vector)))

    def _hook(self, hook: Hook, subject: Any, **ctx: Any) -> Any:
        for f in self.faults.fire(hook, **ctx):
            result = self._HANDLERS[f.kind](self, f, subject)
            if result is not None:
                return result
        return None

    def _fired(self, f: Fault, **details: Any) -> None:
        self.log.info("fault %d (%s) fired: %s", f.id, f.kind.value,
                      " ".join(f"{k}={v}" for k, v in details.items()) or "-")
        self._fx.emit("FAULT_FIRED", {"id": f.id, "kind": f.kind.value,
                                      "remaining": f.remaining, **details})

    # ---- what each kind does ----

    def _reset(self, f: Fault, _: None) -> None:
        self._fired(f)
        self._fx.reset()

    def _spurious(self, f: Fault, _: None) -> None:
        vector = f.params["vector"] or 0
        self._fired(f, vector=vector)
        self._fx.spurious(vector)

    def _dma_error(self, f: Fault, r: Request) -> bool:
        self._fired(f, queue=r.queue.key, head=r.head, addr=r.addr)
        self._fx.fail(r)
        return True

    def _corrupt(self, f: Fault, r: Request) -> None:
        if r.queue.index == regs.QUEUE_RX:
            r.corrupt = f           # the bits are chosen once the data is known
            return
        r.flips = _pick_bits(f, r.total)
        self._fired(f, queue="tx", head=r.head, bits=list(r.flips))

    def corrupt_rx(self, r: Request) -> None:
        """Flip the bits of ``r``'s corrupt fault in the data it wrote to guest memory."""
        f, r.corrupt = r.corrupt, None
        assert f is not None                    # called for a request with a corrupt fault
        bits = _pick_bits(f, r.moved)
        off = 0
        for seg in r.segs:
            for pos in bits:
                i = (pos >> 3) - off
                if 0 <= i < len(seg):
                    seg[i] ^= 1 << (pos & 7)
            off += len(seg)
        self._fired(f, queue="rx", head=r.head, bits=list(bits))

    def _slow(self, f: Fault, r: Request) -> float:
        delay = f.params["latency_us"] * 1e-6 + r.moved * f.params["per_byte_ns"] * 1e-9
        self._fired(f, queue=r.queue.key, head=r.head, delay_us=round(delay * 1e6))
        return self._fx.clock() + delay

    def _hostile(self, f: Fault, entry: tuple) -> bool:
        queue, head, length, status, total = entry
        kind = f.params["kind"]
        details: dict[str, Any] = {"queue": queue.key, "head": head, "hostile": kind}
        write = self._fx.write_used
        if kind == "long":
            length = total + HOSTILE_LONG_EXTRA
            details["len"] = length
        elif kind == "unknown-id":
            busy = {head, *queue.held()}
            free = [i for i in range(regs.QUEUE_SIZE) if i not in busy]
            bogus = f.rng.choice(free) if free else regs.QUEUE_SIZE     # all busy: out of range
            details["id"] = bogus
            write(queue, bogus, length, status)
        elif kind == "duplicate":
            write(queue, head, length, status)
        write(queue, head, length, status)
        if kind == "index":
            details["used_idx"] = queue.jump_used(regs.QUEUE_SIZE + 1)
        self._fired(f, **details)
        return True

    def _lost_irq(self, f: Fault, vector: int) -> bool:
        self._fired(f, vector=vector)
        return True

    _HANDLERS: dict[Kind, Callable[[Injector, Fault, Any], Any]] = {
        Kind.RESET: _reset,
        Kind.SPURIOUS_IRQ: _spurious,
        Kind.DMA_ERROR: _dma_error,
        Kind.CORRUPT: _corrupt,
        Kind.SLOW: _slow,
        Kind.HOSTILE: _hostile,
        Kind.LOST_IRQ: _lost_irq,
    }


def _pick_bits(f: Fault, nbytes: int) -> tuple[int, ...]:
    """``f.params["bits"]`` distinct bit positions in an ``nbytes`` payload, from ``f.rng``."""
    n = min(f.params["bits"], nbytes * 8)
    return tuple(sorted(f.rng.sample(range(nbytes * 8), n))) if n else ()


def flipped(chunk: memoryview, start: int, flips: tuple[int, ...]) -> memoryview:
    """A copy of ``chunk`` (payload bytes ``start ..``) with the ``flips`` in it flipped."""
    buf = bytearray(chunk)
    for pos in flips:
        i = (pos >> 3) - start
        if 0 <= i < len(buf):
            buf[i] ^= 1 << (pos & 7)
    return memoryview(buf)

"""The FIFO peripheral's policy: what a doorbell, a tick, a host call or an operator does.

No sockets, no file descriptors: a device sees ``bar2`` (a buffer of :data:`regs.BAR2_SIZE`
bytes: the ivshmem shared memory, a ``bytearray`` in tests), guest RAM (``mem``, a
:class:`~device.guestmem.GuestMemory`), ``raise_vector(v)`` to send MSI-X vector ``v``, and
optionally ``clock()``, ``schedule(when)`` (call :meth:`~FifoDevice.tick` then) and ``emit(name,
data)`` (a monitor event).

**Threads: none.**  The model runs on one asyncio event loop; every call into a device (a
doorbell, a tick, a host-wire or monitor call) runs to its end before the next, and none awaits.
The only concurrency is the guest's vCPUs, which read and write BAR2 and guest RAM through
shared memory while a step runs: hence registers written in single stores and the one memory
fence the datasheet asks for (both in :mod:`device.bar2`).  Everything in BAR2 is written by an
untrusted guest: a malformed index, chain, length or address becomes an error the guest can
read, never an exception out of :meth:`~FifoDevice.doorbell`.

The device is made of::

    queue.Queue (x2)       the rings: fetch and validate chains, cancel flags, used entries
    datapath.DataPath      bytes between requests and the FIFO(s) (fifo.ByteFifo), cut-through
    interrupts.Interrupts  INT_RAISED/INT_ACKED/INT_ENABLE, coalescing, MSI-X messages
    inject.Injector        the armed faults, asked at five hook points
    hostport.HostPort      wired: the host's end of the two FIFOs (``host_*``)
    completion.Completer   used entries: now or when due (slow), through the USED hook
    FifoDevice (here)      the steps, CONTROL and resets, what completes when, errors, registers

One doorbell, in order::

    count it (STAT_DOORBELLS)
    CONTROL:  RESET set  -> reset (drop requests, empty FIFO, USED_IDX=0, RESET_DONE, raise RESET)
              ENABLE set -> READY            ENABLE clear -> stop, clear READY
    if enabled:
      fetch    new heads from each avail ring; validate each chain; bad ones complete at once
               with an error status, good ones join the queue's pending list (in order); an
               AVAIL_IDX ahead by more than the ring holds: error AVAIL_IDX, stop (needs reset)
      cancel   re-read every pending head's flags; CANCEL -> complete CANCELLED, len = moved
      pump     until nothing moves: TX head fills the FIFO, completes when all its bytes are in;
               RX head completes as soon as the FIFO holds a byte, taking min(level, len)
      nowait   a NOWAIT request still pending completes now with what it moved (maybe 0)
    publish  RX_LEVEL, TX_SPACE, STATUS, counters
    raise    causes collected on the way (DATA_AVAIL if RX_LEVEL ends higher than it was after
             CONTROL was handled, SPACE_AVAIL likewise for TX_SPACE), per the
             INT_RAISED/INT_ACKED/INT_ENABLE rule

Every step (a doorbell, a tick, a host call, an operator's reset) runs in ``with
self._step():``: a full :class:`~device.queue.Budget` at its start -- STEP_DESCS descriptors
walked, STEP_BYTES copied (datasheet 6) -- and the publish and raise above at its end.  A step
that reaches a bound sets ``_more``, and the one timer (``schedule``) brings a tick at once to
carry on -- after the event loop has served everyone else.  Delayed completions (``slow``) are
written by the first step that finds them due, in order per queue.

A NOWAIT request behind a waiting one on the same queue completes at the doorbell that sees it,
ahead of the waiting one, with ``len = 0`` -- "now" wins over "in order".  (Behind a waiting TX
the FIFO is full; behind a waiting RX it is empty: the data outcome is the one in-order service
would give.)

A device-initiated reset (a fault, or :meth:`~FifoDevice.device_reset`) is the section 3 reset
plus one rule: the device stays not READY (``CONTROL.ENABLE`` is ignored) until the driver
performs a reset itself, so that a driver that has not noticed cannot post into rings the device
has forgotten.  A stalled device (:meth:`~FifoDevice.stall`) counts doorbells up and handles
them at :meth:`~FifoDevice.resume`; its host wire moves nothing meanwhile.  Wired, after every
doorbell the core calls ``wake_host()``: the transport looks at the host end again.

Events (``emit``): ``FAULT_FIRED``, ``DMA_ERROR``, ``DEVICE_RESET``, ``STATE_CHANGE`` -- see
``docs/faults.md``.  The transport adds the ``device`` index.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import regs
from .bar2 import U32_MASK, Bar2, fence
from .completion import Completer
from .datapath import DataPath
from .faults import FaultSet
from .fifo import DEFAULT_DEPTH, ByteFifo
from .guestmem import GuestMemory
from .hostport import HostPort
from .inject import Effects, Injector
from .interrupts import Interrupts
from .queue import STATUS_OF_ERR, AvailError, Budget, Queue, Request, RingError
from .ratelimit import LogLimiter

__all__ = ["FifoDevice", "FEATURES", "WIRED_FEATURES", "STEP_BYTES", "STEP_DESCS"]

FEATURES = regs.FEAT_LOOPBACK | regs.FEAT_NOWAIT | regs.FEAT_CANCEL | regs.FEAT_NO_NOTIFY
WIRED_FEATURES = regs.FEAT_HOST_WIRE | regs.FEAT_NOWAIT | regs.FEAT_CANCEL | regs.FEAT_NO_NOTIFY
# Doorbell suppression: rounds of "look at the avail rings again" one doorbell may run.
MAX_RECHECKS = 8
# The work of one step (a doorbell, a tick, a host call) is bounded whatever the guest posts
# (datasheet 6): a step stops fetching once it has walked STEP_DESCS descriptors and stops
# moving data once it has copied STEP_BYTES (an RX request already started finishes, at most
# FIFO_DEPTH more); a tick on the next turn of the event loop carries on.  So the monitor, the
# wire and the other devices are served in between, and a hostile guest slows its own device.
STEP_BYTES = 16 << 20
STEP_DESCS = 8192
_STAT_REGS = {"tx_bytes": regs.REG_STAT_TX_BYTES, "rx_bytes": regs.REG_STAT_RX_BYTES,
              "irqs": regs.REG_STAT_IRQS, "doorbells": regs.REG_STAT_DOORBELLS,
              "completions": regs.REG_STAT_COMPLETIONS}
_SNAPSHOT_REGS = ("CONTROL", "STATUS", "INT_RAISED", "INT_ACKED", "INT_ENABLE", "RX_LEVEL",
                  "TX_SPACE", "ERR_CODE", "RESET_COUNT", "ERR_COUNT", "FEATURES", "FIFO_DEPTH")
_nowait = operator.attrgetter("nowait")


class FifoDevice:
    """One FIFO peripheral.  See the module docstring for what a doorbell does."""

    def __init__(self, bar2, mem: GuestMemory, fifo_depth: int = DEFAULT_DEPTH,
                 peer_id: int = 0, raise_vector: Callable[[int], None] | None = None,
                 logger: logging.Logger | None = None, host_wire: bool = False,
                 wake_host: Callable[[], None] | None = None,
                 faults: FaultSet | None = None, clock: Callable[[], float] | None = None,
                 schedule: Callable[[float], None] | None = None,
                 emit: Callable[[str, dict], None] | None = None) -> None:
        if len(bar2) < regs.BAR2_SIZE:
            raise ValueError(f"BAR2 buffer has {len(bar2)} bytes, needs {regs.BAR2_SIZE}")
        if not 0 < fifo_depth <= U32_MASK:
            raise ValueError(f"FIFO depth {fifo_depth} does not fit the FIFO_DEPTH register")
        self._bar2 = Bar2(bar2)
        self.host_wire = host_wire
        # loopback: one FIFO, TX fills it and RX drains it; wired: guest->host, host->guest
        self._tx_fifo = ByteFifo(fifo_depth)
        self._rx_fifo = ByteFifo(fifo_depth) if host_wire else self._tx_fifo
        self.features = WIRED_FEATURES if host_wire else FEATURES
        self.wake_host = wake_host
        self.peer_id = peer_id
        self.log = logger or logging.getLogger("fifolab.device")
        self._limiter = LogLimiter(self.log)       # lines a guest can repeat at will
        self.clock = clock or time.monotonic
        self.schedule = schedule            # (when) -> call tick() then; None: nobody will
        self.emit = emit or (lambda name, data: None)
        # The parts (module docstring); what they need of the device is handed to them here,
        # clock and emit through lambdas: tests replace them after construction.
        self._queues = (Queue(regs.QUEUE_TX, self._bar2, mem, self.log),
                        Queue(regs.QUEUE_RX, self._bar2, mem, self.log))
        self._inject = Injector(faults if faults is not None else FaultSet(), Effects(
            clock=lambda: self.clock(), emit=lambda name, data: self.emit(name, data),
            reset=lambda: self._reset("device"), spurious=self.send_spurious,
            fail=self._fail_injected, write_used=lambda *entry: self._end.write_used(*entry)),
            self.log)
        self._irq = Interrupts(self._bar2, raise_vector or (lambda v: None), self._inject.lost,
                               self.log)
        self._end = Completer(self._queues, lambda: (self._rx_fifo.level, self._tx_fifo.space),
                              self._irq, self._inject, lambda: self.clock(), self.log)
        self._budget = Budget()
        self._data = DataPath(*self._queues, self._tx_fifo, self._rx_fifo, self._budget,
                              self._end.done, self._inject.corrupt_rx)
        self._host = HostPort(self._tx_fifo, self._rx_fifo, self._data, step=self._step,
                              pump=self._pump, ready=lambda: self._enabled,
                              stalled=lambda: self._stalled)
        self._stalled = False               # operator state: survives power_on
        self._stalled_rings = 0
        self._wakeup_at: float | None = None
        self._last_state: tuple | None = None
        self._more = False          # a step stopped at a bound: a tick carries on (now)
        self._mark = (0, 0)         # (RX_LEVEL, TX_SPACE) the step's end compares against
        self._clear_state()

    # ---- life cycle ----

    def _clear_state(self) -> None:
        for queue in self._queues:
            queue.clear()
        self._tx_fifo.clear()
        self._rx_fifo.clear()
        self._enabled = False
        self._need_reset = False    # after a device-initiated reset, until the driver's reset
        self._stalled_rings = 0
        self._status = 0
        self._reset_count = 0
        self._err_count = 0
        self._doorbells = 0
        self._end.clear()
        self._irq.clear()
        self._data.clear()
        self._host.clear()

    def power_on(self) -> None:
        """Zero BAR2 and the device state, then write the identification registers."""
        self._clear_state()
        self._bar2.buf[0:regs.BAR2_SIZE] = bytes(regs.BAR2_SIZE)
        for reg, value in ((regs.REG_MAGIC, regs.MAGIC_VALUE),
                           (regs.REG_VERSION, regs.VERSION_VALUE),
                           (regs.REG_FEATURES, self.features),
                           (regs.REG_DEVICE_PEER, self.peer_id),
                           (regs.REG_FIFO_DEPTH, self._tx_fifo.depth),
                           (regs.REG_QUEUE_SIZE, regs.QUEUE_SIZE),
                           (regs.REG_NUM_VECTORS, regs.NUM_VECTORS),
                           (regs.REG_MAX_SEGS, regs.MAX_SEGS)):
            self._bar2.w32(reg, value)
        self._publish()
        self.log.debug("power on: depth %d, peer %d, %s", self._tx_fifo.depth, self.peer_id,
                       "wired" if self.host_wire else "loopback")
        self._state_changed()

    def close(self) -> None:
        """Drop every reference into guest RAM and BAR2 (so their mappings can close)."""
        for queue in self._queues:
            queue.clear()
        self._tx_fifo.close()
        if self._rx_fifo is not self._tx_fifo:
            self._rx_fifo.close()
        self._bar2.release()

    # ---- steps ----

    def doorbell(self, rings: int = 1) -> None:
        """Process everything the guest posted; ``rings`` doorbells are counted."""
        if self._stalled:
            self._stalled_rings += rings
            return
        self._doorbells += rings
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("doorbell x%d: CONTROL=%#x AVAIL_IDX=%d/%d", rings,
                           self._bar2.r32(regs.REG_CONTROL),
                           *(queue.avail_idx() for queue in self._queues))
        with self._step():
            self._bar2.w32(regs.REG_NO_NOTIFY, 1)
            self._inject.doorbell()
            self._control()
            self._mark_levels()
            self._service()
        self._wake_host()

    def tick(self) -> None:
        """Carry on where a step stopped at a bound, take posts that came without a doorbell,
        write the delayed used entries that are due (``schedule``'s callback)."""
        self._wakeup_at = None
        if self._stalled:
            return
        with self._step():
            more, self._more = self._more, False
            work = self._enabled and (more or self._posted())
            if work:
                self._bar2.w32(regs.REG_NO_NOTIFY, 1)
                self._service()
        if work:
            self._wake_host()

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        """One step: the budget full and nothing collected at its start, the levels marked;
        at its end (:meth:`_finish`) the due completions, the publish and the raise.  (A model
        bug that raises skips the end: nothing half done is published as done.)"""
        self._irq.begin()
        self._budget.descs = STEP_DESCS
        self._budget.bytes = STEP_BYTES
        self._mark_levels()
        yield
        self._finish()

    def _mark_levels(self) -> None:
        """DATA_AVAIL and SPACE_AVAIL are raised if the levels end the step above these."""
        self._mark = (self._rx_fifo.level, self._tx_fifo.space)

    def _service(self) -> None:
        """Fetch, cancel, pump, answer NOWAIT -- and again while the driver keeps posting.

        Doorbell suppression: REG_NO_NOTIFY is 1 from the doorbell's start; a driver that sees
        it after publishing AVAIL_IDX (and a fence) does not ring.  So before stopping, the
        device withdraws it and looks at the avail rings once more: the driver publishes,
        fences, reads NO_NOTIFY; with a fence on both sides, either it reads 0 and rings, or
        this look sees its post.  At most MAX_RECHECKS rounds, and within the step's bounds
        (STEP_BYTES, STEP_DESCS); then ``_more`` asks for a tick to come back for the rest, so
        a driver that never stops posting (or posts without bound) cannot hold the model in
        one step.
        """
        self._more = False
        for _ in range(MAX_RECHECKS):
            before = [queue.last_avail for queue in self._queues]
            for queue in self._queues:
                if self._enabled:           # an AVAIL_IDX error stops the device: no more
                    self._fetch(queue)
            if self._enabled:
                for queue in self._queues:
                    queue.take(queue.cancelled, self._end.cancel)
                if self._pump():            # else NOWAIT requests get their turn next step
                    for queue in self._queues:
                        queue.take(_nowait, self._end.done)
            self._bar2.w32(regs.REG_NO_NOTIFY, 0)
            fence()
            if self._more:
                return          # a bound was reached: the tick carries on
            if (not (self._enabled and self._posted())
                    or [queue.last_avail for queue in self._queues] == before):
                return          # nothing new (or nothing fetchable: the next doorbell says)
            self._bar2.w32(regs.REG_NO_NOTIFY, 1)
        self._bar2.w32(regs.REG_NO_NOTIFY, 0)
        self._more = True

    def _posted(self) -> bool:
        """Has the driver posted on any queue since the last fetch?"""
        return any(queue.posted() for queue in self._queues)

    def _pump(self) -> bool:
        """Move data until nothing moves; False (and ``_more``) if the step's bytes ran out."""
        self._data.pump()
        if self._budget.bytes <= 0:
            self._more = True
            return False
        return True

    def _finish(self) -> None:
        """Write due delayed completions; add DATA_AVAIL/SPACE_AVAIL if the levels grew since
        the mark; publish; raise; report a state change; ask for a wake-up if one is needed."""
        if self._enabled:
            self._end.complete_due()
        level0, space0 = self._mark
        if self._rx_fifo.level > level0:
            self._irq.collect(regs.INT_DATA_AVAIL)
        if self._tx_fifo.space > space0:
            self._irq.collect(regs.INT_SPACE_AVAIL)
        self._publish()
        self._irq.flush()
        self._state_changed()
        self._want_wakeup()

    def _want_wakeup(self) -> None:
        """Ask ``schedule`` for a :meth:`tick` when the earliest delayed completion is due, or
        at once if a step stopped at a bound (one timer serves both)."""
        dues = [self.clock()] if self._more else []
        due = self._end.next_due() if self._enabled else None   # disabled: written later
        if due is not None:
            dues.append(due)
        if not dues:
            self._wakeup_at = None
            return
        due = min(dues)
        if self._wakeup_at is not None and self._wakeup_at <= due:
            return              # a tick no later than that is already asked for
        self._wakeup_at = due
        if self.schedule is not None:
            self.schedule(due)

    def _wake_host(self) -> None:
        if self.host_wire and self.wake_host is not None:
            self.wake_host()

    def _state_changed(self) -> None:
        """Emit STATE_CHANGE if ready/stalled/need-reset/state changed since the last one."""
        now = (self.state, self._enabled, self._stalled, self._need_reset)
        if now != self._last_state:
            self._last_state = now
            self.emit("STATE_CHANGE", dict(zip(("state", "ready", "stalled", "need_reset"),
                                               now, strict=True)))

    # ---- CONTROL and resets ----

    def _control(self) -> None:
        ctrl = self._bar2.r32(regs.REG_CONTROL)
        if ctrl & regs.CTRL_RESET:
            self._reset("driver")
        elif ctrl & regs.CTRL_ENABLE and self._need_reset:
            self.log.debug("ENABLE ignored: the device reset itself, the driver must reset it")
        elif ctrl & regs.CTRL_ENABLE:
            if not self._enabled:
                self.log.debug("enabled")
            self._enabled = True
            self._status = (self._status | regs.STS_READY) & ~regs.STS_RESET_DONE
        else:
            if self._enabled:
                self.log.debug("disabled")
            self._enabled = False
            self._status &= ~regs.STS_READY

    def _reset(self, initiator: str) -> None:
        """Drop every pending (and delayed) request uncompleted, empty the FIFO, zero
        USED_IDX.  ``initiator``: driver (CONTROL.RESET) or device (a fault)."""
        dropped = sum(queue.reset() for queue in self._queues)
        self._tx_fifo.clear()
        self._rx_fifo.clear()
        self._enabled = False
        self._status = regs.STS_RESET_DONE
        self._reset_count += 1
        self._need_reset = initiator == "device"
        self._irq.collect(regs.INT_RESET)
        log = self.log.info if initiator == "device" else self.log.debug
        log("reset #%d by the %s (%d requests dropped)", self._reset_count, initiator, dropped)
        self.emit("DEVICE_RESET", {"initiator": initiator, "dropped": dropped,
                                   "reset_count": self._reset_count})

    # ---- fetching, and the guest's errors ----

    def _fetch(self, queue: Queue) -> None:
        """New heads -> requests on ``queue``'s pending list; a bad chain completes at once."""
        try:
            new = queue.new_heads()
        except AvailError as err:
            self._avail_error(queue, err)
            return
        for _ in range(new):
            if self._budget.descs <= 0:
                self._more = True       # the step's bound: the rest on the next tick
                return
            try:
                r = queue.pop_chain(self._budget)
            except RingError as err:
                assert err.head is not None     # pop_chain sets the request's head
                self._fail(queue, err.head, err)
                continue
            if not self._inject.fetched(r):     # else a fault completed it
                queue.pending.append(r)

    def _avail_error(self, queue: Queue, err: AvailError) -> None:
        """Which slots are new cannot be told, so none is fetched -- nothing replayed -- and
        the device stops until the driver resets it (datasheet 5)."""
        self._report(queue, None, err)
        self._limiter.warning("avail", "%s: AVAIL_IDX %d is %d ahead of the device, which "
                              "holds %d requests: stopped until a reset", queue.name,
                              err.addr, err.ahead, err.held)
        self._enabled = False
        self._need_reset = True
        self._status &= ~regs.STS_READY

    def _fail(self, queue: Queue, head: int, err: RingError, injected: bool = False) -> None:
        """Report a bad request (datasheet section 5) and complete it with its status."""
        self._report(queue, head, err, injected)
        self._end.complete(queue, head, 0, STATUS_OF_ERR[err.code])

    def _fail_injected(self, r: Request) -> None:
        self._fail(r.queue, r.head, RingError(regs.ERR_DMA_RANGE, r.addr), injected=True)

    def _report(self, queue: Queue, head: int | None, err: RingError,
                injected: bool = False) -> None:
        """ERR_CODE, ERR_ADDR, STATUS.DMA_ERROR, ERR_COUNT, the ERROR cause, the event."""
        self._bar2.w32(regs.REG_ERR_CODE, err.code)
        self._bar2.w64(regs.REG_ERR_ADDR, err.addr)
        self._status |= regs.STS_DMA_ERROR
        self._err_count += 1
        self._irq.collect(regs.INT_ERROR)
        self.log.debug("%s head %s: error code %d at %#x%s", queue.name, head, err.code,
                       err.addr, " (injected)" if injected else "")
        self.emit("DMA_ERROR", {"queue": queue.key, "head": head, "addr": err.addr,
                                "code": err.code, "injected": injected})

    # ---- registers ----

    def _statistics(self) -> dict[str, int]:
        return {"tx_bytes": self._data.tx_bytes, "rx_bytes": self._data.rx_bytes,
                "irqs": self._irq.messages, "doorbells": self._doorbells,
                "completions": self._end.completions}

    def _publish(self) -> None:
        """Write the device-owned level, status, cause and counter registers -- every step,
        so that what a guest scribbled over one of them lasts until the next step at most
        (a stray INT_RAISED bit would otherwise read as a cause never raised)."""
        for reg, value in ((regs.REG_INT_RAISED, self._irq.raised),
                           (regs.REG_STATUS, self._status),
                           (regs.REG_RX_LEVEL, self._rx_fifo.level),
                           (regs.REG_TX_SPACE, self._tx_fifo.space),
                           (regs.REG_RESET_COUNT, self._reset_count),
                           (regs.REG_ERR_COUNT, self._err_count)):
            self._bar2.w32(reg, value)
        for name, value in self._statistics().items():
            self._bar2.w64(_STAT_REGS[name], value)

    # ---- operator actions (fault injection outside a doorbell) ----

    def stall(self) -> bool:
        """Stop processing: doorbells are counted up, not handled, until :meth:`resume`.
        False if already stalled."""
        if self._stalled:
            return False
        self._stalled = True
        self.log.info("stalled")
        self._state_changed()
        return True

    def resume(self) -> int:
        """Process the doorbells that came while stalled (as one); return how many came."""
        if not self._stalled:
            return 0
        self._stalled = False
        rings, self._stalled_rings = self._stalled_rings, 0
        self.log.info("resumed (%d doorbells while stalled)", rings)
        if rings:
            self.doorbell(rings)
        else:
            self.tick()
            self._wake_host()
        self._state_changed()
        return rings

    def device_reset(self) -> None:
        """A device-initiated reset, now (see the module docstring)."""
        with self._step():
            self._reset("device")
            self._mark_levels()
        self._wake_host()

    def send_spurious(self, vector: int, count: int = 1) -> int:
        """Send MSI-X ``vector`` ``count`` times with nothing to report (INT_RAISED stays)."""
        return self._irq.spurious(vector, count)

    # ---- the host wire (wired devices only): device/hostport.py ----

    def _wire(self) -> HostPort:
        if not self.host_wire:
            raise RuntimeError("host wire call on a loopback device")
        return self._host

    @property
    def host_bytes_in(self) -> int:
        return self._host.bytes_in

    @property
    def host_bytes_out(self) -> int:
        return self._host.bytes_out

    def host_rx_space(self) -> int:
        return self._wire().rx_space()

    def host_tx_pending(self) -> int:
        return self._wire().tx_pending()

    def host_write(self, data) -> int:
        return self._wire().write(data)

    def host_tx_peek(self, n: int | None = None) -> memoryview:
        return self._wire().tx_peek(n)

    def host_tx_commit(self, n: int) -> int:
        return self._wire().tx_commit(n)

    def host_read_into(self, dst) -> int:
        return self._wire().read_into(dst)

    # ---- introspection for tests, logs and the monitor ----

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def fifo_depth(self) -> int:
        """Capacity of the FIFO (of each FIFO when wired)."""
        return self._tx_fifo.depth

    @property
    def fifo_level(self) -> int:
        """Bytes RX requests can take (the one FIFO in loopback, the RX FIFO when wired)."""
        return self._rx_fifo.level

    @property
    def tx_fifo_level(self) -> int:
        """Bytes TX requests put in that nobody took yet (== fifo_level in loopback)."""
        return self._tx_fifo.level

    def pending(self, q: int) -> list[int]:
        """Head indices of the requests pending on queue ``q``, in order."""
        return [r.head for r in self._queues[q].pending]

    def delayed(self, q: int) -> list[int]:
        """Head indices of the requests on queue ``q`` whose completion a slow fault delays."""
        return [head for _, head, _, _ in self._queues[q].delayed]

    @property
    def faults(self) -> FaultSet:
        """The faults armed on this device (``device/faults.py``)."""
        return self._inject.faults

    @property
    def coalesce(self) -> bool:
        """Interrupt coalescing (datasheet 2); off: a message per used entry (an operator
        setting, to measure what coalescing saves)."""
        return self._irq.coalesce

    @coalesce.setter
    def coalesce(self, on: bool) -> None:
        self._irq.coalesce = on

    @property
    def stalled(self) -> bool:
        return self._stalled

    @property
    def need_reset(self) -> bool:
        """A device-initiated reset happened and the driver has not reset the device yet."""
        return self._need_reset

    @property
    def state(self) -> str:
        """need-reset | ready | reset-done | off (stalling is reported apart)."""
        if self._need_reset:
            return "need-reset"
        if self._enabled:
            return "ready"
        return "reset-done" if self._status & regs.STS_RESET_DONE else "off"

    def snapshot(self) -> dict[str, Any]:
        """Everything a monitor shows: registers, FIFOs, queues, statistics, faults."""
        reg = {name: self._bar2.r32(getattr(regs, "REG_" + name)) for name in _SNAPSHOT_REGS}
        reg["ERR_ADDR"] = self._bar2.r64(regs.REG_ERR_ADDR)
        return {
            "mode": "wired" if self.host_wire else "loopback",
            "state": self.state, "ready": self._enabled, "stalled": self._stalled,
            "need_reset": self._need_reset, "stalled_doorbells": self._stalled_rings,
            "registers": reg,
            "fifo": {"depth": self._tx_fifo.depth, "rx_level": self._rx_fifo.level,
                     "tx_level": self._tx_fifo.level},
            "queues": {queue.key: queue.describe() for queue in self._queues},
            "statistics": self._statistics(),
            "host": {"bytes_in": self._host.bytes_in, "bytes_out": self._host.bytes_out},
            "faults": self.faults.describe(),
        }

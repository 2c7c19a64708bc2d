"""The FIFO peripheral's behaviour: registers, queues, FIFO, DMA and interrupt rules.

This module never touches a socket or a file descriptor.  It sees:

* ``bar2`` -- a writable buffer of :data:`regs.BAR2_SIZE` bytes (the ivshmem shared memory in
  production, a ``bytearray`` in tests) holding the register block and the two queues;
* ``mem`` -- a :class:`~device.guestmem.GuestMemory` for DMA;
* ``raise_vector(v)`` -- a callable that sends MSI-X vector ``v`` to the guest;
* optionally ``clock()`` (monotonic seconds), ``schedule(when)`` (call :meth:`~FifoDevice.tick`
  at ``clock() >= when``) and ``emit(name, data)`` (a monitor event) -- for fault injection.

The transport calls :meth:`FifoDevice.doorbell` whenever the guest rings.  Everything in BAR2
is written by an untrusted guest: a malformed index, chain, length or address becomes an error
status in a used entry, never an exception out of :meth:`~FifoDevice.doorbell`.

BAR2 (see ``docs/datasheet.md`` and ``device/regs.py``)::

    0x00000  register block      MAGIC .. STAT_COMPLETIONS, AVAIL_IDX[q]/USED_IDX[q] @ 0x100+16q
    0x10000  queue 0 (TX)        +0x0000 desc[1024] | +0x4000 avail u16[1024] | +0x8000 used[1024]
    0x20000  queue 1 (RX)        same layout

    descriptor (16 B)                     used entry (16 B)
    +0  u64 addr   guest-physical         +0  u32 id      head index
    +8  u32 len    > 0                    +4  u32 len     bytes moved
    +12 u16 flags  NEXT|NOWAIT|CANCEL     +8  u32 status  OK|DMA_ERROR|BAD_DESC|CANCELLED
    +14 u16 next                          +12 u32 reserved

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

Every step (a doorbell, a tick, a host call) is bounded: STEP_DESCS descriptors walked,
STEP_BYTES copied (datasheet 6).  A step that reaches a bound sets ``_more``, and the one timer
(``schedule``) brings a tick at once to carry on -- after the event loop has served everyone
else.

A NOWAIT request behind a waiting one on the same queue completes at the doorbell that sees it,
ahead of the waiting one, with ``len = 0`` -- "now" wins over "in order".  (Behind a waiting TX
the FIFO is full; behind a waiting RX it is empty: the data outcome is the one in-order service
would give.)

Loopback or wired (``host_wire=True``, feature ``HOST_WIRE``)::

    loopback:  TX requests --> [ FIFO ] --> RX requests           one FIFO, both registers
    wired:     TX requests --> [ TX FIFO ] --> host_tx_peek/host_tx_commit, host_read_into
               host_write  --> [ RX FIFO ] --> RX requests
               RX_LEVEL = RX FIFO level, TX_SPACE = TX FIFO space; each FIFO is FIFO_DEPTH deep

The host side is a byte stream with flow control and no loss: :meth:`~FifoDevice.host_write`
takes only what fits (0 while the device is not READY, so a bring-up reset cannot eat host
bytes) and :meth:`~FifoDevice.host_tx_commit` removes only what the host took.  Each host call
runs the pump as a doorbell does (pending RX requests complete, waiting TX requests refill the
TX FIFO) and raises the causes it produced (``RX_DONE``/``DATA_AVAIL`` after a host write,
``TX_DONE``/``SPACE_AVAIL`` after a host read).  After every doorbell of a wired device the core
calls ``wake_host()``: the transport then re-reads :meth:`~FifoDevice.host_rx_space` and
:meth:`~FifoDevice.host_tx_pending` to resume reading or writing its socket.  A reset (and a
power-on) empties both FIFOs, as it empties the one FIFO in loopback.

Fault injection (``device/faults.py``, ``docs/faults.md``): :attr:`FifoDevice.faults` holds the
armed faults; the core asks it at five hook points and applies what fires through its own
paths (:data:`FifoDevice._INJECT` maps each kind to its handler)::

    doorbell()  -> DOORBELL hook (reset, spurious-irq) -> CONTROL -> fetch:
    _fetch      -> _build ok -> FETCH hook (dma-error -> _fail; corrupt marks the request)
    _pump_*     -> request moved its bytes -> _done -> DONE hook (slow -> _delayed[q])
    _complete   -> USED hook (hostile: long, unknown-id, duplicate, index) -> _write_used
    _raise      -> per vector: VECTOR hook (lost-irq: INT_RAISED flips, message not sent)

Operator actions, outside any doorbell: :meth:`~FifoDevice.stall` / :meth:`~FifoDevice.resume`
(doorbells are counted up and processed at resume; host-wire calls move nothing),
:meth:`~FifoDevice.device_reset`, :meth:`~FifoDevice.send_spurious`.

A device-initiated reset is the section 3 reset plus one rule: the device stays not READY
(``CONTROL.ENABLE`` is ignored) until the driver performs a reset itself, so that a driver
that has not noticed cannot post into rings the device has forgotten.

Delayed completions (``slow``) keep each queue's order: a request behind a delayed one on the
same queue is delayed at least as long.  Their used entries are written when :meth:`tick`
(or any later call) finds them due; a reset drops them like pending requests.

Events (``emit``): ``FAULT_FIRED``, ``DMA_ERROR``, ``DEVICE_RESET``, ``STATE_CHANGE`` -- see
``docs/faults.md``.  The transport adds the ``device`` index.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from . import regs
from .errors import DmaRangeError
from .faults import Fault, FaultSet, Hook, Kind
from .fifo import DEFAULT_DEPTH, ByteFifo
from .guestmem import GuestMemory
from .ratelimit import LogLimiter

__all__ = ["FifoDevice", "FEATURES", "WIRED_FEATURES"]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DESC = struct.Struct("<QIHH")        # addr, len, flags, next
_USED = struct.Struct("<IIII")        # id, len, status, reserved
U32_MASK = 0xFFFF_FFFF
U64_MASK = 0xFFFF_FFFF_FFFF_FFFF

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
# A full memory barrier: acquiring a lock is an atomic read-modify-write (lock cmpxchg on x86),
# which orders a store before a later load -- plain Python has no other way to ask for that.
_FENCE = threading.Lock()
QUEUES = (regs.QUEUE_TX, regs.QUEUE_RX)

# error code -> used-entry status (datasheet section 5)
_STATUS_OF_ERR = {
    regs.ERR_DMA_RANGE: regs.ST_DMA_ERROR,
    regs.ERR_DESC_INDEX: regs.ST_BAD_DESC,
    regs.ERR_DESC_CHAIN: regs.ST_BAD_DESC,
    regs.ERR_DESC_LEN: regs.ST_BAD_DESC,
    regs.ERR_REQ_LEN: regs.ST_BAD_DESC,
}
# queue -> cause raised when it gets used entries
_DONE_CAUSE = {regs.QUEUE_TX: regs.INT_TX_DONE, regs.QUEUE_RX: regs.INT_RX_DONE}
_QUEUE_NAME = {regs.QUEUE_TX: "TX", regs.QUEUE_RX: "RX"}
_QNAME = {regs.QUEUE_TX: "tx", regs.QUEUE_RX: "rx"}      # in faults and events
# the causes vector 0 carries (coalescing off sends it per used entry instead)
_QUEUE_VECTOR_CAUSES = sum(bit for bit, v in regs.INT_VECTOR_OF.items() if v == regs.VEC_QUEUE)
HOSTILE_LONG_EXTRA = 4096       # a "long" hostile completion reports this many bytes too many
_STATS = (regs.REG_STAT_TX_BYTES, regs.REG_STAT_RX_BYTES, regs.REG_STAT_IRQS,
          regs.REG_STAT_DOORBELLS, regs.REG_STAT_COMPLETIONS)


class _ChainError(Exception):
    """A request failed validation: ERR_* code and the address (or index) to report."""

    def __init__(self, code: int, addr: int) -> None:
        super().__init__(code, addr)
        self.code = code
        self.addr = addr


@dataclass(eq=False, slots=True)
class Request:
    """A validated request the device holds until its used entry is written."""

    queue: int
    head: int
    segs: list          # memoryviews of guest RAM, in chain order
    total: int          # sum of segment lengths
    nowait: bool
    addr: int = 0       # guest address of the first segment (an injected DMA error's ERR_ADDR)
    moved: int = 0      # bytes moved so far (TX only ever partially)
    seg: int = 0        # TX: segment being copied
    off: int = 0        # TX: bytes of segs[seg] already copied
    flips: tuple = ()   # TX corrupt fault: bit positions in the payload to flip on the way in
    corrupt: Fault | None = None    # RX corrupt fault: flip bits once the data is written


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
        self._bar2 = bar2
        # Registers are written through these typed views: one store per register.  The
        # guest reads them at any moment, and struct.pack_into zeroes its target before it
        # packs (CPython's s_pack_internal), so a register written that way reads 0 for a
        # moment -- for as long as the model's thread is preempted in between.
        self._bar2_u32 = memoryview(bar2).cast("B").cast("I")
        self._bar2_u64 = memoryview(bar2).cast("B").cast("Q")
        self._mem = mem
        self.host_wire = host_wire
        # loopback: one FIFO, TX fills it and RX drains it; wired: guest->host, host->guest
        self._tx_fifo = ByteFifo(fifo_depth)
        self._rx_fifo = ByteFifo(fifo_depth) if host_wire else self._tx_fifo
        self.features = WIRED_FEATURES if host_wire else FEATURES
        self.wake_host = wake_host
        self.peer_id = peer_id
        self._raise_vector = raise_vector or (lambda v: None)
        self.log = logger or logging.getLogger("fifolab.device")
        self._limiter = LogLimiter(self.log)       # lines a guest can repeat at will
        self.faults = faults if faults is not None else FaultSet()
        self.clock = clock or time.monotonic
        self.schedule = schedule            # (when) -> call tick() then; None: nobody will
        self.emit = emit or (lambda name, data: None)
        self._stalled = False               # operator state: survives power_on
        # Batched, coalesced interrupts (datasheet 2): one message per step, none while the
        # cause is still pending.  Off (an operator setting, to measure what that saves): a
        # message right after every used entry, as a device without either would send.
        self.coalesce = True
        self._entry_msgs = 0
        self._stalled_rings = 0
        self._wakeup_at: float | None = None
        self._last_state: tuple | None = None
        self._more = False          # a step stopped at a bound: a tick carries on (now)
        self._bytes_left = STEP_BYTES
        self._descs_left = STEP_DESCS
        self._clear_state()

    # ---- register access (little-endian, straight on the shared buffer) ----

    def _r32(self, off: int) -> int:
        return _U32.unpack_from(self._bar2, off)[0]

    def _w32(self, off: int, value: int) -> None:
        self._bar2_u32[off >> 2] = value & U32_MASK        # one 4-byte store (off % 4 == 0)

    def _w64(self, off: int, value: int) -> None:
        self._bar2_u64[off >> 3] = value & U64_MASK        # one 8-byte store (off % 8 == 0)

    # ---- life cycle ----

    def _clear_state(self) -> None:
        self._pending = {q: deque() for q in QUEUES}
        self._last_avail = {q: 0 for q in QUEUES}
        self._used_idx = {q: 0 for q in QUEUES}
        self._tx_fifo.clear()
        self._rx_fifo.clear()
        self._delayed = {q: deque() for q in QUEUES}   # (due, head, moved, total), due order
        self._enabled = False
        self._need_reset = False    # after a device-initiated reset, until the driver's reset
        self._stalled_rings = 0
        self._status = 0
        self._int_raised = 0
        self._reset_count = 0
        self._err_count = 0
        self._stats = dict.fromkeys(_STATS, 0)
        self._causes = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self.host_bytes_in = 0      # host -> RX FIFO since power-on (wired)
        self.host_bytes_out = 0     # TX FIFO -> host since power-on (wired)

    def power_on(self) -> None:
        """Zero BAR2 and the device state, then write the identification registers."""
        self._clear_state()
        self._bar2[0:regs.BAR2_SIZE] = bytes(regs.BAR2_SIZE)
        for reg, value in ((regs.REG_MAGIC, regs.MAGIC_VALUE),
                           (regs.REG_VERSION, regs.VERSION_VALUE),
                           (regs.REG_FEATURES, self.features),
                           (regs.REG_DEVICE_PEER, self.peer_id),
                           (regs.REG_FIFO_DEPTH, self._tx_fifo.depth),
                           (regs.REG_QUEUE_SIZE, regs.QUEUE_SIZE),
                           (regs.REG_NUM_VECTORS, regs.NUM_VECTORS),
                           (regs.REG_MAX_SEGS, regs.MAX_SEGS)):
            self._w32(reg, value)
        self._publish()
        self.log.debug("power on: depth %d, peer %d, %s", self._tx_fifo.depth, self.peer_id,
                       "wired" if self.host_wire else "loopback")
        self._state_changed()

    def close(self) -> None:
        """Drop every reference into guest RAM and BAR2 (so their mappings can close)."""
        for pend in self._pending.values():
            pend.clear()
        for d in self._delayed.values():
            d.clear()
        self._tx_fifo.close()
        if self._rx_fifo is not self._tx_fifo:
            self._rx_fifo.close()
        self._bar2_u32.release()
        self._bar2_u64.release()

    # ---- introspection for tests and logs ----

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
        return [r.head for r in self._pending[q]]

    def delayed(self, q: int) -> list[int]:
        """Head indices of the requests on queue ``q`` whose completion a slow fault delays."""
        return [head for _, head, _, _ in self._delayed[q]]

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
        reg = {name: self._r32(off) for name, off in (
            ("CONTROL", regs.REG_CONTROL), ("STATUS", regs.REG_STATUS),
            ("INT_RAISED", regs.REG_INT_RAISED), ("INT_ACKED", regs.REG_INT_ACKED),
            ("INT_ENABLE", regs.REG_INT_ENABLE), ("RX_LEVEL", regs.REG_RX_LEVEL),
            ("TX_SPACE", regs.REG_TX_SPACE), ("ERR_CODE", regs.REG_ERR_CODE),
            ("RESET_COUNT", regs.REG_RESET_COUNT), ("ERR_COUNT", regs.REG_ERR_COUNT),
            ("FEATURES", regs.REG_FEATURES), ("FIFO_DEPTH", regs.REG_FIFO_DEPTH))}
        reg["ERR_ADDR"] = _U64.unpack_from(self._bar2, regs.REG_ERR_ADDR)[0]
        queues = {}
        for q in QUEUES:
            queues[_QNAME[q]] = {
                "avail_idx": self._r32(regs.qctl(q, regs.QCTL_AVAIL_IDX)),
                "fetched": self._last_avail[q],
                "used_idx": self._used_idx[q],
                "pending": len(self._pending[q]),
                "pending_heads": self.pending(q)[:32],
                "delayed": len(self._delayed[q]),
            }
        names = {regs.REG_STAT_TX_BYTES: "tx_bytes", regs.REG_STAT_RX_BYTES: "rx_bytes",
                 regs.REG_STAT_IRQS: "irqs", regs.REG_STAT_DOORBELLS: "doorbells",
                 regs.REG_STAT_COMPLETIONS: "completions"}
        return {
            "mode": "wired" if self.host_wire else "loopback",
            "state": self.state, "ready": self._enabled, "stalled": self._stalled,
            "need_reset": self._need_reset, "stalled_doorbells": self._stalled_rings,
            "registers": reg,
            "fifo": {"depth": self._tx_fifo.depth, "rx_level": self._rx_fifo.level,
                     "tx_level": self._tx_fifo.level},
            "queues": queues,
            "statistics": {names[r]: v for r, v in self._stats.items()},
            "host": {"bytes_in": self.host_bytes_in, "bytes_out": self.host_bytes_out},
            "faults": self.faults.describe(),
        }

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
        self._begin()
        self._reset("device")
        self._finish(self._levels())
        self._wake_host()

    def send_spurious(self, vector: int, count: int = 1) -> int:
        """Send MSI-X ``vector`` ``count`` times with nothing to report (INT_RAISED stays)."""
        if not 0 <= vector < regs.NUM_VECTORS:
            raise ValueError(f"no vector {vector}")
        for _ in range(count):
            self._stats[regs.REG_STAT_IRQS] += 1
            self._w64(regs.REG_STAT_IRQS, self._stats[regs.REG_STAT_IRQS])
            self.log.debug("spurious vector %d", vector)
            self._raise_vector(vector)
        return count

    def tick(self) -> None:
        """Write the delayed used entries that are due (``schedule``'s callback)."""
        self._wakeup_at = None
        if self._stalled:
            return
        self._begin()
        mark = self._levels()
        more, self._more = self._more, False
        work = self._enabled and (more or self._posted())
        if work:                # a step stopped at a bound, or posts came without a doorbell
            self._w32(regs.REG_NO_NOTIFY, 1)
            self._service()
        self._finish(mark)
        if work:
            self._wake_host()

    # ---- the doorbell ----

    def doorbell(self, rings: int = 1) -> None:
        """Process everything the guest posted; ``rings`` doorbells are counted."""
        if self._stalled:
            self._stalled_rings += rings
            return
        self._stats[regs.REG_STAT_DOORBELLS] += rings
        debug = self.log.isEnabledFor(logging.DEBUG)
        if debug:
            self.log.debug("doorbell x%d: CONTROL=%#x AVAIL_IDX=%d/%d", rings,
                           self._r32(regs.REG_CONTROL),
                           self._r32(regs.qctl(regs.QUEUE_TX, regs.QCTL_AVAIL_IDX)),
                           self._r32(regs.qctl(regs.QUEUE_RX, regs.QCTL_AVAIL_IDX)))
        self._begin()
        self._w32(regs.REG_NO_NOTIFY, 1)
        if self.faults.armed_at(Hook.DOORBELL):
            self._hook(Hook.DOORBELL, None)
        self._control()
        mark = self._levels()
        self._service()
        self._finish(mark)
        self._wake_host()

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
            before = dict(self._last_avail)
            if self._enabled:
                for q in QUEUES:
                    self._fetch(q)
                for q in QUEUES:
                    self._cancel(q)
                self._pump()
                if self._bytes_left > 0:    # else NOWAIT requests get their turn next step
                    for q in QUEUES:
                        self._complete_nowait(q)
            self._w32(regs.REG_NO_NOTIFY, 0)
            with _FENCE:
                pass
            if self._more:
                return          # a bound was reached: the tick carries on
            if not (self._enabled and self._posted()) or self._last_avail == before:
                return          # nothing new (or nothing fetchable: the next doorbell says)
            self._w32(regs.REG_NO_NOTIFY, 1)
        self._w32(regs.REG_NO_NOTIFY, 0)
        self._more = True

    def _posted(self) -> bool:
        """Has the driver posted on any queue since the last fetch?"""
        return any(self._r32(regs.qctl(q, regs.QCTL_AVAIL_IDX)) != self._last_avail[q]
                   for q in QUEUES)

    def _begin(self) -> None:
        """Start a step (doorbell, host call, tick): nothing collected yet, the bounds full."""
        self._causes = 0
        self._bytes_in = self._bytes_out = 0
        self._entry_msgs = 0
        self._bytes_left = STEP_BYTES
        self._descs_left = STEP_DESCS

    def _wake_host(self) -> None:
        if self.host_wire and self.wake_host is not None:
            self.wake_host()

    def _levels(self) -> tuple[int, int]:
        """(RX_LEVEL, TX_SPACE) now: what :meth:`_finish` compares against."""
        return self._rx_fifo.level, self._tx_fifo.space

    def _pump(self) -> None:
        while self._bytes_left > 0 and (self._cut_through() | self._pump_tx() | self._pump_rx()):
            pass
        if self._bytes_left <= 0:
            self._more = True

    def _cut_through(self) -> bool:
        """Loopback, FIFO empty, a TX and an RX request waiting: copy from the writer's buffer
        straight into the reader's -- one copy instead of two (in and out of the FIFO).  The
        reader gets what it would have got through the FIFO (the writer's next bytes, up to
        its length, at least one), the writer completes when all its bytes are taken; only
        the copy is saved.  Requests with a fault attached or NOWAIT take the FIFO path."""
        if self.host_wire or self._tx_fifo.level:
            return False
        tx, rx = self._pending[regs.QUEUE_TX], self._pending[regs.QUEUE_RX]
        progress = False
        while tx and rx and self._cut_ok(tx[0]) and self._cut_ok(rx[0]) and self._bytes_left > 0:
            r = rx.popleft()
            got = 0
            for dst in r.segs:                      # fill r from successive writers
                off = 0
                while off < len(dst) and tx and self._cut_ok(tx[0]) and self._bytes_left > 0:
                    t = tx[0]
                    src = t.segs[t.seg]
                    n = min(len(dst) - off, len(src) - t.off, self._bytes_left)
                    self._bytes_left -= n
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
            self._bytes_in += got
            self._bytes_out += got
            self._done(r)
            progress = True
        return progress

    def _finish(self, mark: tuple[int, int]) -> None:
        """Write due delayed completions; add DATA_AVAIL/SPACE_AVAIL if the levels grew since
        ``mark``; publish; raise; report a state change; ask for a wake-up if one is needed."""
        if self._enabled:
            self._complete_due()
        level0, space0 = mark
        if self._rx_fifo.level > level0:
            self._causes |= regs.INT_DATA_AVAIL
        if self._tx_fifo.space > space0:
            self._causes |= regs.INT_SPACE_AVAIL
        self._publish()
        self._raise(self._causes)
        self._state_changed()
        self._want_wakeup()

    def _state_changed(self) -> None:
        """Emit STATE_CHANGE if ready/stalled/need-reset/state changed since the last one."""
        now = (self.state, self._enabled, self._stalled, self._need_reset)
        if now != self._last_state:
            self._last_state = now
            self.emit("STATE_CHANGE", dict(zip(("state", "ready", "stalled", "need_reset"),
                                               now)))

    # ---- the host wire (wired devices only) ----
    #
    # Called by the transport, never by the guest.  Each call is a small doorbell-like step:
    # move bytes, pump the queues, publish, raise.  Nothing is dropped: a call takes only what
    # fits and reports how much it took.

    def _need_wire(self) -> None:
        if not self.host_wire:
            raise RuntimeError("host wire call on a loopback device")

    def host_rx_space(self) -> int:
        """Bytes :meth:`host_write` will take now: the RX FIFO's space, 0 unless READY."""
        self._need_wire()
        return self._rx_fifo.space if self._enabled and not self._stalled else 0

    def host_tx_pending(self) -> int:
        """Bytes in the TX FIFO waiting for the host (0 while stalled: nothing moves)."""
        self._need_wire()
        return 0 if self._stalled else self._tx_fifo.level

    def host_write(self, data) -> int:
        """Host bytes into the RX FIFO: take as many as fit (pending RX requests are served as
        they arrive, freeing space); return how many were taken -- 0 when full or not READY.
        """
        self._need_wire()
        if not self._enabled or self._stalled:
            return 0
        src = memoryview(data).cast("B")
        self._begin()
        mark = self._levels()
        taken = 0
        try:
            while taken < len(src):
                n = self._rx_fifo.put(src[taken:])
                taken += n
                if not self._pump_rx() and not n:
                    break
            self._pump()
        finally:
            src.release()
        self.host_bytes_in += taken
        self._finish(mark)
        return taken

    def host_tx_peek(self, n: int | None = None) -> memoryview:
        """A read-only view of the oldest TX FIFO bytes (one contiguous run, maybe shorter than
        :meth:`host_tx_pending`); send from it, then :meth:`host_tx_commit` what was sent.
        Valid until the next call into the device.
        """
        self._need_wire()
        return self._tx_fifo.peek(n)

    def host_tx_commit(self, n: int) -> int:
        """The host took the ``n`` oldest TX FIFO bytes: remove them, let waiting TX requests
        refill the FIFO, raise TX_DONE/SPACE_AVAIL.  Returns how many were removed.
        """
        self._need_wire()
        if self._stalled:
            return 0
        self._begin()
        mark = self._levels()
        n = self._tx_fifo.skip(n)
        self.host_bytes_out += n
        if self._enabled:
            self._pump()
        self._finish(mark)
        return n

    def host_read_into(self, dst) -> int:
        """Move up to ``len(dst)`` TX FIFO bytes into ``dst`` (refilled from waiting TX
        requests as it empties); return how many.  :meth:`host_tx_commit` for a copy.
        """
        self._need_wire()
        if self._stalled:
            return 0
        out = memoryview(dst).cast("B")
        self._begin()
        mark = self._levels()
        got = 0
        try:
            while got < len(out):
                n = self._tx_fifo.get_into(out[got:])
                got += n
                if not (self._enabled and self._pump_tx()) and not n:
                    break
            if self._enabled:
                self._pump()
        finally:
            out.release()
        self.host_bytes_out += got
        self._finish(mark)
        return got

    def _control(self) -> None:
        ctrl = self._r32(regs.REG_CONTROL)
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
        dropped = 0
        for q in QUEUES:
            dropped += len(self._pending[q]) + len(self._delayed[q])
            self._pending[q].clear()
            self._delayed[q].clear()
            self._last_avail[q] = 0
            self._used_idx[q] = 0
            self._w32(regs.qctl(q, regs.QCTL_USED_IDX), 0)
        self._tx_fifo.clear()
        self._rx_fifo.clear()
        self._enabled = False
        self._status = regs.STS_RESET_DONE
        self._reset_count += 1
        self._need_reset = initiator == "device"
        self._causes |= regs.INT_RESET
        log = self.log.info if initiator == "device" else self.log.debug
        log("reset #%d by the %s (%d requests dropped)", self._reset_count, initiator, dropped)
        self.emit("DEVICE_RESET", {"initiator": initiator, "dropped": dropped,
                                   "reset_count": self._reset_count})

    # ---- fetching and validating requests ----

    def _fetch(self, q: int) -> None:
        avail = self._r32(regs.qctl(q, regs.QCTL_AVAIL_IDX))
        new = (avail - self._last_avail[q]) & U32_MASK
        if not new:
            return
        pend = self._pending[q]
        # Each request holds a descriptor until its used entry is written, so a driver can
        # have posted at most QUEUE_SIZE minus the requests the device still holds.
        room = regs.QUEUE_SIZE - len(pend) - len(self._delayed[q])
        if new > room:
            self._avail_error(q, avail, new, room)
            return
        ring = regs.queue_base(q) + regs.Q_AVAIL_OFF
        for _ in range(new):
            if self._descs_left <= 0:
                self._more = True       # the step's bound: the rest on the next tick
                return
            slot = self._last_avail[q] % regs.QUEUE_SIZE
            head = _U16.unpack_from(self._bar2, ring + 2 * slot)[0]
            self._last_avail[q] = (self._last_avail[q] + 1) & U32_MASK
            try:
                r = self._build(q, head)
            except _ChainError as err:
                self._fail(q, head, err)
                continue
            if self.faults.armed_at(Hook.FETCH) and self._hook(Hook.FETCH, r, queue=_QNAME[q]):
                continue        # a fault completed it
            pend.append(r)

    def _avail_error(self, q: int, avail: int, new: int, room: int) -> None:
        """AVAIL_IDX claims more posts than the ring can hold beside the requests the device
        holds (a stale or wild index).  Which slots are new cannot be told, so none is fetched
        -- nothing replayed -- and the device stops until the driver resets it (datasheet 5)."""
        self._report(q, None, _ChainError(regs.ERR_AVAIL_IDX, avail))
        self._limiter.warning("avail", "%s: AVAIL_IDX %d is %d ahead of the device, which "
                              "holds %d requests: stopped until a reset", _QUEUE_NAME[q],
                              avail, new, regs.QUEUE_SIZE - room)
        self._enabled = False
        self._need_reset = True
        self._status &= ~regs.STS_READY

    def _build(self, q: int, head: int) -> Request:
        """Walk and check the chain at ``head``; raise :class:`_ChainError` if it is bad."""
        if head >= regs.QUEUE_SIZE:
            raise _ChainError(regs.ERR_DESC_INDEX, head)
        table = regs.queue_base(q) + regs.Q_DESC_OFF
        debug = self.log.isEnabledFor(logging.DEBUG)
        segs: list[memoryview] = []
        total = 0
        head_flags = 0
        first_addr = 0
        idx = head
        while True:
            if len(segs) >= regs.MAX_SEGS:
                raise _ChainError(regs.ERR_DESC_CHAIN, head)      # too long, or a loop
            self._descs_left -= 1
            addr, length, flags, nxt = _DESC.unpack_from(self._bar2, table + idx * regs.DESC_SIZE)
            if debug:
                self.log.debug("%s desc %d: addr=%#x len=%d flags=%#x next=%d",
                               _QUEUE_NAME[q], idx, addr, length, flags, nxt)
            if not segs:
                head_flags = flags
                first_addr = addr
            if length == 0:
                raise _ChainError(regs.ERR_DESC_LEN, idx)
            try:
                segs.append(self._mem.view(addr, length))
            except DmaRangeError:
                raise _ChainError(regs.ERR_DMA_RANGE, addr) from None
            total += length
            if total > regs.MAX_REQ_BYTES:
                raise _ChainError(regs.ERR_REQ_LEN, head)
            if not flags & regs.DESC_F_NEXT:
                break
            if nxt >= regs.QUEUE_SIZE:
                raise _ChainError(regs.ERR_DESC_INDEX, nxt)
            idx = nxt
        return Request(q, head, segs, total, bool(head_flags & regs.DESC_F_NOWAIT),
                       first_addr)

    def _fail(self, q: int, head: int, err: _ChainError, injected: bool = False) -> None:
        """Report a bad request (datasheet section 5) and complete it with its status."""
        self._report(q, head, err, injected)
        self._complete(q, head, 0, _STATUS_OF_ERR[err.code])

    def _report(self, q: int, head: int | None, err: _ChainError,
                injected: bool = False) -> None:
        """ERR_CODE, ERR_ADDR, STATUS.DMA_ERROR, ERR_COUNT, the ERROR cause, the event."""
        self._w32(regs.REG_ERR_CODE, err.code)
        self._w64(regs.REG_ERR_ADDR, err.addr)
        self._status |= regs.STS_DMA_ERROR
        self._err_count += 1
        self._causes |= regs.INT_ERROR
        self.log.debug("%s head %s: error code %d at %#x%s", _QUEUE_NAME[q], head, err.code,
                       err.addr, " (injected)" if injected else "")
        self.emit("DMA_ERROR", {"queue": _QNAME[q], "head": head, "addr": err.addr,
                                "code": err.code, "injected": injected})

    # ---- completing ----

    def _done(self, r: Request) -> None:
        """``r`` moved what it will move: complete it now, or later (DONE hook: slow), never
        ahead of a delayed request on its queue."""
        q = r.queue
        due = None
        if self.faults.armed_at(Hook.DONE):
            due = self._hook(Hook.DONE, r, queue=_QNAME[q])
        delayed = self._delayed[q]
        if due is None and not delayed:
            self._complete(q, r.head, r.moved, regs.ST_OK, r.total)
            return
        due = max(due if due is not None else self.clock(), delayed[-1][0] if delayed else 0.0)
        delayed.append((due, r.head, r.moved, r.total))

    def _complete_due(self) -> None:
        if not (self._delayed[regs.QUEUE_TX] or self._delayed[regs.QUEUE_RX]):
            return
        now = self.clock()
        for q in QUEUES:
            d = self._delayed[q]
            while d and d[0][0] <= now:
                _, head, moved, total = d.popleft()
                self._complete(q, head, moved, regs.ST_OK, total)

    def _want_wakeup(self) -> None:
        """Ask ``schedule`` for a :meth:`tick` when the earliest delayed completion is due, or
        at once if a step stopped at a bound (one timer serves both)."""
        dues = [d[0][0] for d in self._delayed.values() if d]
        if self._more:
            dues.append(self.clock())
        if not dues:
            self._wakeup_at = None
            return
        due = min(dues)
        if self._wakeup_at is not None and self._wakeup_at <= due:
            return              # a tick no later than that is already asked for
        self._wakeup_at = due
        if self.schedule is not None:
            self.schedule(due)

    def _complete(self, q: int, head: int, length: int, status: int,
                  total: int | None = None) -> None:
        """Complete a request (USED hook: hostile); ``total`` is None for a bad chain."""
        if (total is not None and self.faults.armed_at(Hook.USED)
                and self._hook(Hook.USED, (q, head, length, status, total), queue=_QNAME[q])):
            return
        self._write_used(q, head, length, status)

    def _write_used(self, q: int, head: int, length: int, status: int) -> None:
        """Write RX_LEVEL and TX_SPACE, then the used entry, then USED_IDX: a driver that has
        seen a completion reads the levels that follow it (datasheet 2), so that it can tell
        what a request posted now would get."""
        self._w32(regs.REG_RX_LEVEL, self._rx_fifo.level)
        self._w32(regs.REG_TX_SPACE, self._tx_fifo.space)
        used = self._used_idx[q]
        off = regs.queue_base(q) + regs.Q_USED_OFF + (used % regs.QUEUE_SIZE) * regs.USED_SIZE
        _USED.pack_into(self._bar2, off, head & U32_MASK, length & U32_MASK, status, 0)
        self._used_idx[q] = used = (used + 1) & U32_MASK
        self._w32(regs.qctl(q, regs.QCTL_USED_IDX), used)
        self._stats[regs.REG_STAT_COMPLETIONS] += 1
        self._causes |= _DONE_CAUSE[q]
        if not self.coalesce and self._r32(regs.REG_INT_ENABLE) & _DONE_CAUSE[q]:
            self._entry_msgs += 1
            self._stats[regs.REG_STAT_IRQS] += 1
            self._raise_vector(regs.VEC_QUEUE)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s used #%d: id=%d len=%d status=%d", _QUEUE_NAME[q], used - 1,
                           head, length, status)

    def _cancel(self, q: int) -> None:
        """Complete every pending request whose head now carries DESC_F_CANCEL."""
        pend = self._pending[q]
        if not pend:
            return
        table = regs.queue_base(q) + regs.Q_DESC_OFF + regs.DESC_FLAGS
        keep: deque[Request] = deque()
        for r in pend:
            flags = _U16.unpack_from(self._bar2, table + r.head * regs.DESC_SIZE)[0]
            if flags & regs.DESC_F_CANCEL:
                self._complete(q, r.head, r.moved, regs.ST_CANCELLED, r.total)
            else:
                keep.append(r)
        if len(keep) != len(pend):
            self._pending[q] = keep

    def _complete_nowait(self, q: int) -> None:
        """Complete NOWAIT requests still pending (behind a waiting one) with what moved."""
        pend = self._pending[q]
        if not any(r.nowait for r in pend):
            return
        keep: deque[Request] = deque()
        for r in pend:
            if r.nowait:
                self._done(r)
            else:
                keep.append(r)
        self._pending[q] = keep

    # ---- moving data ----

    @staticmethod
    def _cut_ok(r: Request) -> bool:
        """May ``r`` move by cut-through?  Not with NOWAIT or a corrupt fault attached."""
        return not (r.nowait or r.flips or r.corrupt is not None)

    def _pump_tx(self) -> bool:
        """Move TX heads into the FIFO; True if anything moved or completed."""
        pend = self._pending[regs.QUEUE_TX]
        fifo = self._tx_fifo
        progress = False
        while pend and self._bytes_left > 0:
            r = pend[0]
            while r.seg < len(r.segs) and fifo.space and self._bytes_left > 0:
                seg = r.segs[r.seg]
                src = seg[r.off:r.off + min(fifo.space, self._bytes_left)]
                if r.flips:
                    src = _flipped(src, r.moved, r.flips)
                n = fifo.put(src)
                self._bytes_left -= n
                r.off += n
                r.moved += n
                self._bytes_in += n
                progress = True
                if r.off == len(seg):
                    r.seg += 1
                    r.off = 0
            if r.moved < r.total and (not r.nowait or self._bytes_left <= 0):
                break       # waits for space (or the next step); the requests behind it wait
            pend.popleft()
            self._done(r)
            progress = True
        return progress

    def _pump_rx(self) -> bool:
        """Serve RX heads from the FIFO; True if anything moved or completed."""
        pend = self._pending[regs.QUEUE_RX]
        fifo = self._rx_fifo
        progress = False
        while pend and self._bytes_left > 0:
            r = pend[0]
            if not fifo.level and not r.nowait:
                break       # waits for data
            for seg in r.segs:              # at most FIFO_DEPTH: one request finishes whole
                if not fifo.level:
                    break
                r.moved += fifo.get_into(seg)
            self._bytes_left -= r.moved
            self._bytes_out += r.moved
            pend.popleft()
            if r.corrupt is not None:
                self._corrupt_rx(r)
            self._done(r)
            progress = True
        return progress

    # ---- registers and interrupts ----

    def _publish(self) -> None:
        """Write the device-owned level, status and counter registers."""
        self._stats[regs.REG_STAT_TX_BYTES] += self._bytes_in
        self._stats[regs.REG_STAT_RX_BYTES] += self._bytes_out
        self._bytes_in = self._bytes_out = 0
        for reg, value in ((regs.REG_STATUS, self._status),
                           (regs.REG_RX_LEVEL, self._rx_fifo.level),
                           (regs.REG_TX_SPACE, self._tx_fifo.space),
                           (regs.REG_RESET_COUNT, self._reset_count),
                           (regs.REG_ERR_COUNT, self._err_count)):
            self._w32(reg, value)
        for reg, value in self._stats.items():
            self._w64(reg, value)

    def _raise(self, causes: int) -> None:
        """Raise ``causes`` that are enabled and not pending; send each vector once.

        A cause is pending while its bit differs between INT_RAISED and INT_ACKED.  Raising
        flips the bit in INT_RAISED (the device's register) before the vector goes out.
        """
        acked = self._r32(regs.REG_INT_ACKED)
        enable = self._r32(regs.REG_INT_ENABLE)
        pending = self._int_raised ^ acked
        new = causes & enable & ~pending & regs.INT_ALL
        send = new
        if not self.coalesce:
            # every cause raised gets a message, pending or not (a pending cause's bit is not
            # flipped again: that would withdraw it); the queue vector went per used entry
            send = causes & enable & regs.INT_ALL
            if self._entry_msgs:
                send &= ~_QUEUE_VECTOR_CAUSES
        if new:
            self._int_raised ^= new
            self._w32(regs.REG_INT_RAISED, self._int_raised)
        if not send:
            if causes and self.log.isEnabledFor(logging.DEBUG):
                self.log.debug("causes %#x not raised (enable %#x, pending %#x)", causes,
                               enable, pending)
            return
        vectors = sorted({v for bit, v in regs.INT_VECTOR_OF.items() if send & bit})
        self._stats[regs.REG_STAT_IRQS] += len(vectors)
        self._w64(regs.REG_STAT_IRQS, self._stats[regs.REG_STAT_IRQS])
        for v in vectors:
            if self.faults.armed_at(Hook.VECTOR) and self._hook(Hook.VECTOR, v, vector=v):
                continue        # lost on the way
            self.log.debug("raise vector %d (causes %#x, INT_RAISED %#x)", v, new,
                           self._int_raised)
            self._raise_vector(v)

    # ---- fault injection: hook points and what each kind does there ----
    #
    # A handler gets the fault that fired and the hook's subject; a result other than None
    # decides the outcome and ends the hook (the remaining faults are not drawn):
    #   DOORBELL (None)      -> None
    #   FETCH    (Request)   -> True: the request was completed by the fault
    #   DONE     (Request)   -> due time of its used entry
    #   USED     (q, head, len, status, total) -> True: the entries were written by the fault
    #   VECTOR   (vector)    -> True: the message is not sent

    def _hook(self, hook: Hook, subject: Any, **ctx: Any) -> Any:
        for f in self.faults.fire(hook, **ctx):
            result = self._INJECT[f.kind](self, f, subject)
            if result is not None:
                return result
        return None

    def _fired(self, f: Fault, **details: Any) -> None:
        self.log.info("fault %d (%s) fired: %s", f.id, f.kind.value,
                      " ".join(f"{k}={v}" for k, v in details.items()) or "-")
        self.emit("FAULT_FIRED", {"id": f.id, "kind": f.kind.value,
                                  "remaining": f.remaining, **details})

    def _inject_reset(self, f: Fault, _: None) -> None:
        self._fired(f)
        self._reset("device")

    def _inject_spurious(self, f: Fault, _: None) -> None:
        vector = f.params["vector"] or 0
        self._fired(f, vector=vector)
        self.send_spurious(vector)

    def _inject_dma_error(self, f: Fault, r: Request) -> bool:
        self._fired(f, queue=_QNAME[r.queue], head=r.head, addr=r.addr)
        self._fail(r.queue, r.head, _ChainError(regs.ERR_DMA_RANGE, r.addr), injected=True)
        return True

    def _inject_corrupt(self, f: Fault, r: Request) -> None:
        if r.queue == regs.QUEUE_RX:
            r.corrupt = f           # the bits are chosen once the data is known
            return
        r.flips = _pick_bits(f, r.total)
        self._fired(f, queue="tx", head=r.head, bits=list(r.flips))

    def _corrupt_rx(self, r: Request) -> None:
        f, r.corrupt = r.corrupt, None
        bits = _pick_bits(f, r.moved)
        off = 0
        for seg in r.segs:
            for pos in bits:
                i = (pos >> 3) - off
                if 0 <= i < len(seg):
                    seg[i] ^= 1 << (pos & 7)
            off += len(seg)
        self._fired(f, queue="rx", head=r.head, bits=list(bits))

    def _inject_slow(self, f: Fault, r: Request) -> float:
        delay = f.params["latency_us"] * 1e-6 + r.moved * f.params["per_byte_ns"] * 1e-9
        self._fired(f, queue=_QNAME[r.queue], head=r.head, delay_us=round(delay * 1e6))
        return self.clock() + delay

    def _inject_hostile(self, f: Fault, entry: tuple) -> bool:
        q, head, length, status, total = entry
        kind = f.params["kind"]
        details: dict[str, Any] = {"queue": _QNAME[q], "head": head, "hostile": kind}
        if kind == "long":
            length = total + HOSTILE_LONG_EXTRA
            details["len"] = length
        elif kind == "unknown-id":
            busy = {head, *self.pending(q), *self.delayed(q)}
            free = [i for i in range(regs.QUEUE_SIZE) if i not in busy]
            bogus = f.rng.choice(free) if free else regs.QUEUE_SIZE     # all busy: out of range
            details["id"] = bogus
            self._write_used(q, bogus, length, status)
        elif kind == "duplicate":
            self._write_used(q, head, length, status)
        self._write_used(q, head, length, status)
        if kind == "index":
            self._used_idx[q] = (self._used_idx[q] + regs.QUEUE_SIZE + 1) & U32_MASK
            self._w32(regs.qctl(q, regs.QCTL_USED_IDX), self._used_idx[q])
            details["used_idx"] = self._used_idx[q]
        self._fired(f, **details)
        return True

    def _inject_lost_irq(self, f: Fault, vector: int) -> bool:
        self._fired(f, vector=vector)
        return True

    _INJECT: dict[Kind, Callable[["FifoDevice", Fault, Any], Any]] = {
        Kind.RESET: _inject_reset,
        Kind.SPURIOUS_IRQ: _inject_spurious,
        Kind.DMA_ERROR: _inject_dma_error,
        Kind.CORRUPT: _inject_corrupt,
        Kind.SLOW: _inject_slow,
        Kind.HOSTILE: _inject_hostile,
        Kind.LOST_IRQ: _inject_lost_irq,
    }


def _pick_bits(f: Fault, nbytes: int) -> tuple[int, ...]:
    """``f.params["bits"]`` distinct bit positions in an ``nbytes`` payload, from ``f.rng``."""
    n = min(f.params["bits"], nbytes * 8)
    return tuple(sorted(f.rng.sample(range(nbytes * 8), n))) if n else ()


def _flipped(chunk: memoryview, start: int, flips: tuple[int, ...]) -> memoryview:
    """A copy of ``chunk`` (payload bytes ``start ..``) with the ``flips`` in it flipped."""
    buf = bytearray(chunk)
    for pos in flips:
        i = (pos >> 3) - start
        if 0 <= i < len(buf):
            buf[i] ^= 1 << (pos & 7)
    return memoryview(buf)

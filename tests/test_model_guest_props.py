"""Property-based tests of the device model's guest interface (Hypothesis; issue 13, item 4a).

A :class:`~hypothesis.stateful.RuleBasedStateMachine` plays a hostile guest against a
:class:`~device.core.FifoDevice` over a bytearray BAR2 and a small guest RAM (low RAM, the PCI
hole, high RAM from 4 GiB, and a canary past the end of RAM): it writes random and adversarial
descriptors (addresses in and out of RAM, lengths 0/1/huge, NEXT/NOWAIT/CANCEL, next in and out
of range, loops, chains of MAX_SEGS +- 1 naming the same RAM), avail slots, AVAIL_IDX moved by
small or huge amounts (the u32 wraps), CONTROL, INT_ACKED, INT_ENABLE; it rings, advances a
fake clock and ticks when the device asked (one timer, replaced by each ``schedule`` call, as
``device/service.py`` keeps it), arms ``slow`` and other faults (never ``hostile``: that one
breaks the used-entry rules on purpose), calls the host wire in wired mode -- and posts good
requests too, so that real traffic flows.

After every device step (doorbell, tick, host call) it checks, from the outside::

    no exception out of doorbell()/tick()/host calls       (Hypothesis fails the rule)
    every DMA view inside guest RAM (the test's own map of it) and as long as asked for; the
      canary past RAM untouched; BAR2 written only where the device owns it
    RX_LEVEL, TX_SPACE in [0, FIFO_DEPTH] (loopback: adding up to FIFO_DEPTH); NO_NOTIFY 0
    used entries only for heads the device fetched since the last reset (read from the avail
      slots the step consumed), one per fetch; an out-of-range head comes back as given, with
      BAD_DESC (datasheet 5); an error entry has len 0
    USED_IDX advanced by exactly the entries written (a poisoned used ring; STAT_COMPLETIONS)
    the requests held (pending + delayed) are exactly those fetched and not completed --
      nothing dropped silently -- and at most QUEUE_SIZE per queue
    a step copies at most STEP_BYTES + FIFO_DEPTH bytes each way and walks at most
      STEP_DESCS + MAX_SEGS descriptors (DMA views counted; chains fetched walked again)
    an error (ERR_COUNT grew) has an ERR_CODE the datasheet lists, STATUS.DMA_ERROR set, ERROR
      raised unless masked or pending; an error entry is counted; no error: no ERROR cause,
      STATUS.DMA_ERROR unchanged (a reset clears it)
    AVAIL_IDX further ahead of the last fetch than QUEUE_SIZE minus the requests held: at a
      doorbell of a READY device, error AVAIL_IDX (ERR_ADDR = the index, READY clear,
      need-reset); nothing of that ring fetched; the device stops there (nothing fetched,
      moved or completed after it) and until the driver resets it (ENABLE ignored); no such
      error otherwise
    delayed completions of a READY device have a tick asked for; a tick that moved nothing
      asks for no other at once (no busy loop)

Every example ends with ``settle`` (a rule too): tick as asked, then ring and do it again; a
READY device that stops asking has written every delayed completion, fetched every post it was
rung for, and left nothing that could move (a write waits only for space, a read only for data).

An example is loopback or wired, has a FIFO of 1, 3, 64 or 4096 bytes, a driver that brings the
device up again whenever a doorbell leaves it not READY (or not), and maybe a slow fault from
the start.  RAM is 1 MiB (768 KiB low, 256 KiB high): chains of MAX_SEGS segments naming the
same RAM reach the step bounds.

The request-total limit (MAX_REQ_BYTES, 1 GiB) needs segments of 256 MiB: a property of its own
over an anonymous mapping (pages never touched cost nothing).

FIFOLAB_PROPS_EXAMPLES=<n> runs more examples (default: a quick pass for CI).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from device import core, regs
from device.core import FifoDevice
from device.faults import Kind
from device.guestmem import FOUR_GIB, GuestMemory

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
QUEUES = (TX, RX)
QS = regs.QUEUE_SIZE
U32 = 0xFFFF_FFFF
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DESC = regs.desc_layout      # the one home of the entry layouts
_USED = regs.used_layout

# guest RAM: low RAM [0, LOW), the hole, high RAM [4 GiB, 4 GiB + HIGH); a canary after it in
# the buffer that no DMA may reach
RAM_SIZE = 1 << 20
LOW = 0xC0000
HIGH = RAM_SIZE - LOW
CANARY = b"\x5A" * 4096
POISON = b"\xA5" * regs.USED_SIZE           # an id no head can have (heads are u16)
RING_BYTES = QS * regs.USED_SIZE

STEP_BYTES = core.STEP_BYTES
STEP_DESCS = core.STEP_DESCS
EXAMPLES = int(os.environ.get("FIFOLAB_PROPS_EXAMPLES", "0"))


def datasheet_error_codes() -> set[int]:
    """The ERR_CODE values the datasheet's section 5 table lists."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "datasheet.md").read_text()
    section = text.split("## 5.", 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in re.findall(r"^\|\s*(\d+)\s+`[A-Z_]+`", section, re.M)}


ERR_CODES = datasheet_error_codes()
STATUSES = {regs.ST_OK, regs.ST_DMA_ERROR, regs.ST_BAD_DESC, regs.ST_CANCELLED}
ERROR_STATUSES = {regs.ST_DMA_ERROR, regs.ST_BAD_DESC}


class RecordingMemory(GuestMemory):
    """GuestMemory that counts the views the device asks for and records any that is not
    inside RAM by the test's own map of it (not GuestMemory's code), or shorter than asked
    (a slice past the buffer's end)."""

    def __init__(self, buf, ram_size, low_limit):
        super().__init__(buf, ram_size, low_limit)
        self.low = min(ram_size, low_limit)
        self.high = ram_size - self.low
        self.calls = 0
        self.bad: list[tuple[int, int, int]] = []

    def in_ram(self, gpa: int, length: int) -> bool:
        return (0 <= gpa and gpa + length <= self.low) or (
            FOUR_GIB <= gpa and gpa + length <= FOUR_GIB + self.high)

    def view(self, gpa, length):
        self.calls += 1
        mv = super().view(gpa, length)          # DmaRangeError: the device's to handle
        if not self.in_ram(gpa, length) or len(mv) != length:
            self.bad.append((gpa, length, len(mv)))
        return mv


def device_owned() -> list[tuple[int, int]]:
    """BAR2 ranges the device writes after power-on."""
    out = [(regs.REG_STATUS, regs.REG_INT_RAISED + 4),
           (regs.REG_RX_LEVEL, regs.REG_NO_NOTIFY + 4),
           (regs.REG_STAT_TX_BYTES, regs.REG_STAT_COMPLETIONS + 8)]
    for q in QUEUES:
        used_idx = regs.qctl(q, regs.QCTL_USED_IDX)
        out.append((used_idx, used_idx + 4))
        ring = regs.queue_base(q) + regs.Q_USED_OFF
        out.append((ring, ring + RING_BYTES))
    return sorted(out)


def complement(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` minus the sorted ``ranges``."""
    out, pos = [], start
    for a, b in ranges:
        if a > pos:
            out.append((pos, min(a, end)))
        pos = max(pos, b)
    if pos < end:
        out.append((pos, end))
    return [(a, b) for a, b in out if a < b]


# BAR2 that only the driver writes: the register block's driver registers (the identification
# registers are written at power-on only), the descriptor tables and avail rings -- compared
# before and after each step; the rest (unused) stays zero
DEVICE_OWNED = device_owned()
DRIVER_OWNED = complement(DEVICE_OWNED, 0, 0x1000)
for _q in QUEUES:
    DRIVER_OWNED += [(regs.queue_base(_q) + regs.Q_DESC_OFF,
                      regs.queue_base(_q) + regs.Q_AVAIL_OFF + 2 * QS)]
UNUSED = complement(sorted(DEVICE_OWNED + DRIVER_OWNED), 0, regs.BAR2_SIZE)


@dataclass
class Regs:
    """What a step is judged by: registers, and the device's fetch index and held requests."""

    avail: tuple
    used: tuple
    fetched: tuple
    held: tuple                 # Counter of heads pending + delayed, per queue
    control: int
    status: int
    raised: int
    acked: int
    enable: int
    rx_level: int
    tx_space: int
    err_code: int
    err_addr: int
    reset_count: int
    err_count: int
    no_notify: int
    tx_bytes: int
    rx_bytes: int
    completions: int
    need_reset: bool
    enabled: bool


@dataclass
class Step:
    """One step of the device, as seen from outside: before and after, and what it did."""

    kind: str                   # doorbell | tick | host
    pre: Regs
    post: Regs
    fetched: dict = field(default_factory=dict)     # queue -> requests fetched
    entries: dict = field(default_factory=lambda: {q: [] for q in QUEUES})  # (id, len, status)
    walked: int = 0                                 # descriptors of the chains fetched

    @property
    def reset(self) -> bool:
        return self.post.reset_count != self.pre.reset_count

    @property
    def n_used(self) -> int:
        return sum(len(e) for e in self.entries.values())

    @property
    def err_entries(self) -> int:
        return sum(st in ERROR_STATUSES for e in self.entries.values() for _, _, st in e)

    @property
    def errs(self) -> int:
        return (self.post.err_count - self.pre.err_count) & U32

    @property
    def dtx(self) -> int:
        return self.post.tx_bytes - self.pre.tx_bytes

    @property
    def drx(self) -> int:
        return self.post.rx_bytes - self.pre.rx_bytes


def brief(x, n: int = 8) -> str:
    """A short repr of a long list or mapping (of lists), for assertion messages."""
    if isinstance(x, dict):
        text = ", ".join(f"{k!r}: {brief(v, n) if isinstance(v, list) else repr(v)}"
                         for k, v in list(x.items())[:n])
        return "{" + text + (f", ... {len(x)} keys" if len(x) > n else "") + "}"
    items = list(x)
    text = repr(items[:n])
    return text if len(items) <= n else f"{text[:-1]}, ... {len(items)} in all]"


class Guest:
    """A FifoDevice with a bytearray BAR2, recording guest RAM, a fake clock and one timer."""

    def __init__(self, wired: bool = False, depth: int = 64, ram=None, ram_size: int = RAM_SIZE,
                 low_limit: int = LOW) -> None:
        self.ram = ram if ram is not None else bytearray(ram_size) + CANARY
        self.ram_size = ram_size
        self.mem = RecordingMemory(self.ram, ram_size, low_limit)
        self.bar2 = bytearray(regs.BAR2_SIZE)
        self.now = 1000.0
        self.timer: float | None = None
        self.vectors: list[int] = []
        self.dev = FifoDevice(self.bar2, self.mem, depth, raise_vector=self.vectors.append,
                              host_wire=wired, clock=lambda: self.now, schedule=self._schedule)
        self.dev.power_on()
        self.depth = depth

    def _schedule(self, when: float) -> None:
        self.timer = when       # one timer, replaced by each request (device/service.py)

    def close(self) -> None:
        self.dev.close()
        self.mem.close()

    def r32(self, off: int) -> int:
        return _U32.unpack_from(self.bar2, off)[0]

    def r64(self, off: int) -> int:
        return _U64.unpack_from(self.bar2, off)[0]

    def w32(self, off: int, value: int) -> None:
        _U32.pack_into(self.bar2, off, value & U32)

    def write_desc(self, q, idx, addr, length, flags, nxt) -> None:
        _DESC.pack_into(self.bar2, regs.queue_base(q) + regs.Q_DESC_OFF + idx * regs.DESC_SIZE,
                        addr, length, flags, nxt)

    def desc(self, q: int, idx: int) -> tuple[int, int, int, int]:
        return _DESC.unpack_from(self.bar2, regs.queue_base(q) + regs.Q_DESC_OFF +
                                 idx * regs.DESC_SIZE)

    def avail_slot(self, q: int, i: int) -> int:
        return _U16.unpack_from(self.bar2, regs.queue_base(q) + regs.Q_AVAIL_OFF +
                                2 * (i % QS))[0]

    def set_avail_slot(self, q: int, i: int, head: int) -> None:
        _U16.pack_into(self.bar2, regs.queue_base(q) + regs.Q_AVAIL_OFF + 2 * (i % QS), head)

    def avail_idx(self, q: int) -> int:
        return self.r32(regs.qctl(q, regs.QCTL_AVAIL_IDX))

    def post(self, q: int, heads: list[int]) -> None:
        """Heads into the avail ring at AVAIL_IDX, then AVAIL_IDX += len(heads)."""
        idx = self.avail_idx(q)
        ring = regs.queue_base(q) + regs.Q_AVAIL_OFF
        for i in range(0, len(heads), QS):          # at most a ring's worth at a time
            chunk = heads[i:i + QS]
            slot = (idx + i) % QS
            first = chunk[:QS - slot]
            struct.pack_into(f"<{len(first)}H", self.bar2, ring + 2 * slot, *first)
            rest = chunk[QS - slot:]
            struct.pack_into(f"<{len(rest)}H", self.bar2, ring, *rest)
        self.w32(regs.qctl(q, regs.QCTL_AVAIL_IDX), idx + len(heads))

    def regs(self) -> Regs:
        snap = self.dev.snapshot()["queues"]
        return Regs(
            avail=tuple(self.avail_idx(q) for q in QUEUES),
            used=tuple(self.r32(regs.qctl(q, regs.QCTL_USED_IDX)) for q in QUEUES),
            fetched=tuple(snap[n]["fetched"] for n in ("tx", "rx")),
            held=tuple(Counter(self.dev.pending(q)) + Counter(self.dev.delayed(q))
                       for q in QUEUES),
            control=self.r32(regs.REG_CONTROL), status=self.r32(regs.REG_STATUS),
            raised=self.r32(regs.REG_INT_RAISED), acked=self.r32(regs.REG_INT_ACKED),
            enable=self.r32(regs.REG_INT_ENABLE), rx_level=self.r32(regs.REG_RX_LEVEL),
            tx_space=self.r32(regs.REG_TX_SPACE), err_code=self.r32(regs.REG_ERR_CODE),
            err_addr=self.r64(regs.REG_ERR_ADDR), reset_count=self.r32(regs.REG_RESET_COUNT),
            err_count=self.r32(regs.REG_ERR_COUNT), no_notify=self.r32(regs.REG_NO_NOTIFY),
            tx_bytes=self.r64(regs.REG_STAT_TX_BYTES), rx_bytes=self.r64(regs.REG_STAT_RX_BYTES),
            completions=self.r64(regs.REG_STAT_COMPLETIONS),
            need_reset=self.dev.need_reset, enabled=self.dev.enabled)

    def chain_descs(self, q: int, head: int) -> int:
        """Descriptors a device walks to validate the chain at ``head`` (datasheet 5)."""
        if head >= QS:
            return 0
        n = total = 0
        idx = head
        while n < regs.MAX_SEGS:
            addr, length, flags, nxt = self.desc(q, idx)
            n += 1
            total += length
            if (not length or not self.mem.in_ram(addr, length) or total > regs.MAX_REQ_BYTES
                    or not flags & regs.DESC_F_NEXT or nxt >= QS):
                break
            idx = nxt
        return n


# ---- strategies ----

queues = st.sampled_from(QUEUES)
indices = st.one_of(st.integers(0, 7), st.integers(0, QS - 1), st.just(QS - 1))
heads = st.one_of(indices, st.sampled_from([QS, QS + 1, 0xFFFF]))
EDGE_ADDRS = [0, 1, LOW - 1, LOW - 4096, LOW, FOUR_GIB - 1, FOUR_GIB, FOUR_GIB + HIGH - 4096,
              FOUR_GIB + HIGH - 1, FOUR_GIB + HIGH, RAM_SIZE, 1 << 63, (1 << 64) - 1,
              (1 << 64) - 4096]
addrs = st.one_of(st.integers(0, LOW - 1), st.integers(FOUR_GIB, FOUR_GIB + HIGH - 1),
                  st.sampled_from(EDGE_ADDRS), st.integers(0, (1 << 64) - 1))
lengths = st.one_of(st.sampled_from([0, 1, 2, 4096, HIGH, LOW, RAM_SIZE, 1 << 28, 1 << 31, U32]),
                    st.integers(1, 8192), st.integers(0, U32))
flag_values = st.one_of(st.integers(0, 7), st.integers(0, 0xFFFF))
deltas = st.one_of(st.integers(1, 3), st.integers(1, 3),
                   st.sampled_from([U32, U32 - 1, QS - 1, QS, QS + 1, 2000, 1 << 31,
                                    (1 << 32) - QS]),
                   st.integers(0, U32))
u32s = st.integers(0, U32)
# (addr, len) pairs: anything, or at a RAM region's edge, 0-2 bytes past it
REGIONS = [(0, LOW), (FOUR_GIB, FOUR_GIB + HIGH)]


def edge_segment(region: tuple[int, int], n: int, by: int, at_end: bool) -> tuple[int, int]:
    """``n`` bytes ending at ``region``'s end plus ``by`` (or starting ``by`` before it)."""
    return ((region[1] - n + by if at_end else region[0] - by) % (1 << 64), n)


segments = st.one_of(
    st.tuples(addrs, lengths),
    st.builds(edge_segment, st.sampled_from(REGIONS), st.integers(1, 8192), st.integers(0, 2),
              st.booleans()))


class GuestInterface(RuleBasedStateMachine):
    """A hostile guest (and a well-behaved one) against one device; checks every step."""

    def __init__(self) -> None:
        super().__init__()
        self.g: Guest | None = None
        self.steps_ok = True
        self.recovers = False
        self.rung_avail = (0, 0)                # AVAIL_IDX at the last doorbell

    # ---- set-up ----

    @initialize(wired=st.booleans(), depth=st.sampled_from([1, 3, 64, 4096]),
                recovers=st.booleans(), slow=st.booleans())
    def power_on(self, wired, depth, recovers, slow):
        """``recovers``: the driver brings the device up again after every doorbell that
        leaves it not READY (as the reference driver does) -- or only when a rule says.
        ``slow``: a slow fault on half the completions from the start."""
        self.g = Guest(wired, depth)
        if slow:
            self.g.dev.faults.arm(Kind.SLOW, latency_us=1000, count=0, probability=0.5,
                                  seed=depth)
        self.outstanding = {q: Counter() for q in QUEUES}   # fetched, not yet completed
        self.next_desc = 0                                  # the good posters' descriptors
        self.recovers = False
        self.bring_up()
        self.recovers = recovers

    def teardown(self) -> None:
        """Every example ends with :meth:`settle` -- unless a rule failed (Hypothesis calls
        this on the way out of the failure, which must stay the one reported)."""
        if self.g is None:
            return
        try:
            if self.steps_ok and sys.exc_info()[0] is None:
                self.settle()
        finally:
            self.g.close()

    # ---- the device's steps, each checked ----

    def step(self, kind: str, fn, *args):
        g = self.g
        pre = g.regs()
        for q in QUEUES:
            ring = regs.queue_base(q) + regs.Q_USED_OFF
            g.bar2[ring:ring + RING_BYTES] = POISON * QS
        driver_bytes = [bytes(g.bar2[a:b]) for a, b in DRIVER_OWNED]
        g.mem.calls = 0
        g.mem.bad.clear()
        self.steps_ok = False
        result = fn(*args)
        self.check(kind, pre, driver_bytes)
        self.steps_ok = True
        return result

    def check(self, kind: str, pre: Regs, driver_bytes: list[bytes]) -> None:
        g = self.g
        s = Step(kind, pre, g.regs())
        self.check_memory(driver_bytes)
        self.check_levels(s)
        for q in QUEUES:
            self.check_queue(s, q)
        self.check_bounds(s)
        self.check_errors(s)
        self.check_avail_error(s)
        self.check_wakeups(s)
        assert set(g.vectors) <= {regs.VEC_QUEUE, regs.VEC_EVENT}

    def check_memory(self, driver_bytes: list[bytes]) -> None:
        """DMA only inside RAM; BAR2 written only where the device owns it."""
        g = self.g
        assert g.mem.bad == [], f"DMA outside RAM (gpa, len, view len): {g.mem.bad}"
        assert g.ram[g.ram_size:] == CANARY, "the device wrote past the end of guest RAM"
        for (a, b), was in zip(DRIVER_OWNED, driver_bytes, strict=True):
            assert g.bar2[a:b] == was, f"the device wrote BAR2 {a:#x}..{b:#x} (driver's)"
        for a, b in UNUSED:
            assert g.bar2.count(0, a, b) == b - a, f"the device wrote BAR2 {a:#x}..{b:#x}"

    def check_levels(self, s: Step) -> None:
        depth, post = self.g.depth, s.post
        assert 0 <= post.rx_level <= depth, f"RX_LEVEL {post.rx_level}, depth {depth}"
        assert 0 <= post.tx_space <= depth, f"TX_SPACE {post.tx_space}, depth {depth}"
        if not self.g.dev.host_wire:
            assert post.rx_level + post.tx_space == depth, (post.rx_level, post.tx_space)
        assert post.no_notify == 0, "NO_NOTIFY left set after a step"

    def check_queue(self, s: Step, q: int) -> None:
        """Fetched heads (the avail slots the step consumed), used entries (the poisoned ring
        shows which were written), and the requests held, against each other."""
        g, pre, post = self.g, s.pre, s.post
        outstanding = self.outstanding[q]
        if s.reset:
            outstanding.clear()
        f0 = 0 if s.reset else pre.fetched[q]
        nf = s.fetched[q] = (post.fetched[q] - f0) & U32
        assert nf <= QS, f"queue {q}: fetched {f0} -> {post.fetched[q]} in one step"
        new_heads = [g.avail_slot(q, f0 + i) for i in range(nf)]
        s.walked += sum(g.chain_descs(q, h) for h in new_heads)
        outstanding.update(new_heads)

        u0 = 0 if s.reset else pre.used[q]
        nu = (post.used[q] - u0) & U32
        assert nu <= QS, f"queue {q}: USED_IDX {u0} -> {post.used[q]} in one step"
        ring = regs.queue_base(q) + regs.Q_USED_OFF
        written = set()
        if g.bar2[ring:ring + RING_BYTES] != POISON * QS:
            written = {i for i in range(QS) if g.bar2[ring + 16 * i:ring + 16 * i + 16] != POISON}
        assert written == {(u0 + i) % QS for i in range(nu)}, \
            f"queue {q}: used slots {brief(sorted(written))} written, USED_IDX {u0} -> " \
            f"{post.used[q]}"
        for i in range(nu):
            uid, ulen, status, _ = _USED.unpack_from(g.bar2, ring + (u0 + i) % QS * 16)
            assert outstanding[uid] > 0, f"queue {q}: a used entry for head {uid}, not a " \
                f"request fetched and in flight ({brief(outstanding)})"
            outstanding[uid] -= 1
            s.entries[q].append((uid, ulen, status))
            assert status in STATUSES, f"used entry status {status}"
            if uid >= QS:
                assert status == regs.ST_BAD_DESC, f"head {uid} out of range, status {status}"
            if status in ERROR_STATUSES:
                assert ulen == 0, f"an error entry reports {ulen} bytes moved"
        self.outstanding[q] = outstanding = +outstanding
        held = post.held[q]
        assert sum(held.values()) <= QS, f"queue {q}: the device holds {sum(held.values())}"
        assert held == outstanding, f"queue {q}: the device holds {brief(held)}, fetched and " \
            f"not completed: {brief(outstanding)}"
        if s.reset:
            assert nf == nu == 0, "fetched or completed after a reset, in the same step"

    def check_bounds(self, s: Step) -> None:
        """Datasheet 6: the work of one step."""
        depth = self.g.depth
        assert s.n_used == s.post.completions - s.pre.completions, \
            f"USED_IDX moved by {s.n_used}, STAT_COMPLETIONS by " \
            f"{s.post.completions - s.pre.completions}"
        assert 0 <= s.dtx <= STEP_BYTES + depth, f"{s.kind}: {s.dtx} bytes into the FIFO"
        assert 0 <= s.drx <= STEP_BYTES + depth, f"{s.kind}: {s.drx} bytes out to the guest"
        views = self.g.mem.calls
        assert views <= STEP_DESCS + regs.MAX_SEGS, f"{s.kind}: {views} DMA views"
        assert s.walked <= STEP_DESCS + regs.MAX_SEGS, f"{s.kind}: {s.walked} descriptors"

    def check_errors(self, s: Step) -> None:
        """Datasheet 5: an error is counted, coded, sticky in STATUS and raised."""
        pre, post = s.pre, s.post
        assert s.errs >= s.err_entries, f"{s.err_entries} error entries, ERR_COUNT +{s.errs}"
        raised = post.raised ^ pre.raised
        if s.errs:
            assert post.err_code in ERR_CODES, f"ERR_CODE {post.err_code} not in the datasheet"
            assert post.status & regs.STS_DMA_ERROR, "an error without STATUS.DMA_ERROR"
            if pre.enable & regs.INT_ERROR and not (pre.raised ^ pre.acked) & regs.INT_ERROR:
                assert raised & regs.INT_ERROR, "an error, and ERROR not raised"
        else:
            assert not raised & regs.INT_ERROR, "ERROR raised with no error reported"
            want = 0 if s.reset else pre.status & regs.STS_DMA_ERROR
            assert post.status & regs.STS_DMA_ERROR == want, "STATUS.DMA_ERROR changed"

    def check_avail_error(self, s: Step) -> None:
        """Datasheets 4 and 5: AVAIL_IDX further ahead than the ring holds beside the requests
        held is error 6 at a doorbell of a READY device; nothing of that ring is fetched, the
        device stops there and completes nothing until the driver resets it."""
        pre, post = s.pre, s.post
        over = [q for q in QUEUES
                if (pre.avail[q] - pre.fetched[q]) & U32 > QS - sum(pre.held[q].values())]
        for q in over:
            assert s.fetched[q] == 0, f"queue {q}: fetched from a ring whose AVAIL_IDX " \
                f"{pre.avail[q]} is too far ahead of {pre.fetched[q]}"
        avail_errors = s.errs - s.err_entries          # errors with no used entry
        if avail_errors:
            assert over and avail_errors <= len(over), \
                f"{avail_errors} errors without a used entry; rings too far ahead: {over}"
            assert post.need_reset and not post.status & regs.STS_READY
            # fetching (TX, then RX) is a step's first work: after the error nothing is
            # fetched, moved or completed -- with RX over, TX's fetch came first, and only its
            # bad chains completed (at once)
            assert s.dtx == s.drx == 0, f"{s.dtx}/{s.drx} bytes moved at an AVAIL_IDX error"
            if TX in over:
                assert not any(s.entries.values()) and not s.fetched[RX], \
                    f"stopped by the TX AVAIL_IDX error, then fetched {s.fetched[RX]} RX " \
                    f"requests and completed {brief(s.entries)}"
            else:
                assert not s.entries[RX] and all(
                    e[2] in ERROR_STATUSES for e in s.entries[TX]), \
                    f"stopped by the RX AVAIL_IDX error, then completed {brief(s.entries)}"
        if pre.need_reset and not s.reset:
            assert not s.n_used and not any(s.fetched.values()), \
                f"a device that needs a reset fetched {s.fetched}, completed {brief(s.entries)}"
        if post.need_reset and not s.reset:
            assert not post.status & regs.STS_READY, "READY while it needs a reset"
        runs = (s.kind == "doorbell" and not pre.need_reset and not s.reset
                and pre.control & (regs.CTRL_ENABLE | regs.CTRL_RESET) == regs.CTRL_ENABLE)
        if over and runs:
            assert avail_errors, f"AVAIL_IDX {pre.avail}, fetched {pre.fetched}, held " \
                f"{[sum(h.values()) for h in pre.held]}: no AVAIL_IDX error"
            if post.err_code == regs.ERR_AVAIL_IDX:
                assert post.err_addr in {pre.avail[q] for q in over}, post.err_addr

    def check_wakeups(self, s: Step) -> None:
        """Delayed completions of a READY device have a tick asked for; a tick that moved
        nothing asks for no other at once (no busy loop)."""
        g = self.g
        if g.dev.enabled and any(g.dev.delayed(q) for q in QUEUES):
            assert g.timer is not None, "delayed completions, and no tick asked for"
        if s.kind == "tick" and g.timer is not None and g.timer <= g.now:
            pre, post = s.pre, s.post
            moved = (s.n_used or s.dtx or s.drx or s.errs or s.reset
                     or any(s.fetched.values()) or post.held != pre.held
                     or post.rx_level != pre.rx_level or post.tx_space != pre.tx_space)
            assert moved, "a tick that moved nothing asked for another tick at once"

    @invariant()
    def held_within_the_ring(self):
        if self.g is not None:
            for q in QUEUES:
                assert len(self.g.dev.pending(q)) + len(self.g.dev.delayed(q)) <= QS

    def doorbell_step(self):
        self.step("doorbell", self.g.dev.doorbell)
        self.rung_avail = tuple(self.g.avail_idx(q) for q in QUEUES)
        if self.recovers and not self.g.dev.enabled:
            self.recovers = False
            try:
                self.bring_up()
            finally:
                self.recovers = True

    def tick_step(self):
        self.g.timer = None
        self.step("tick", self.g.dev.tick)

    # ---- the driver's bring-up (datasheet 3) ----

    @rule()
    def bring_up(self):
        g = self.g
        for q in QUEUES:
            g.w32(regs.qctl(q, regs.QCTL_AVAIL_IDX), 0)
        g.w32(regs.REG_CONTROL, regs.CTRL_RESET)
        self.doorbell_step()
        g.w32(regs.REG_INT_ACKED, g.r32(regs.REG_INT_RAISED))
        g.w32(regs.REG_INT_ENABLE, regs.INT_ALL)
        g.w32(regs.REG_CONTROL, regs.CTRL_ENABLE)
        self.doorbell_step()

    # ---- a hostile guest's writes ----

    @rule(q=queues, idx=indices, seg=segments, flags=flag_values, nxt=heads,
          post=st.booleans())
    def write_desc(self, q, idx, seg, flags, nxt, post):
        """One descriptor, maybe posted as a head (and rung) at once."""
        self.g.write_desc(q, idx, *seg, flags, nxt)
        if post:
            self.g.post(q, [idx])
            self.doorbell_step()

    @rule(q=queues, start=indices,
          n=st.one_of(st.integers(1, 16),
                      st.sampled_from([regs.MAX_SEGS - 1, regs.MAX_SEGS, regs.MAX_SEGS + 1])),
          seg=segments, end=st.sampled_from(["last", "loop", "out", "nowait"]))
    def write_chain(self, q, start, n, seg, end):
        """n descriptors from ``start`` naming the same RAM: long chains, loops, bad ends."""
        for i in range(n):
            idx = (start + i) % QS
            last = i == n - 1
            if not last:
                flags, nxt = regs.DESC_F_NEXT, (idx + 1) % QS
            elif end == "loop":
                flags, nxt = regs.DESC_F_NEXT, start
            elif end == "out":
                flags, nxt = regs.DESC_F_NEXT, QS
            else:
                flags, nxt = 0, 0
            if i == 0 and end == "nowait":
                flags |= regs.DESC_F_NOWAIT
            self.g.write_desc(q, idx, *seg, flags, nxt)

    @rule(q=queues, offset=st.one_of(st.integers(-2, 3), st.integers(0, QS - 1)), head=heads)
    def write_avail_slot(self, q, offset, head):
        g = self.g
        g.set_avail_slot(q, g.avail_idx(q) + offset, head)

    @rule(q=queues, head=heads,
          count=st.one_of(st.integers(1, 8), st.sampled_from([QS - 1, QS, QS + 1])),
          same=st.booleans(), ring=st.booleans())
    def post_many(self, q, head, count, same, ring):
        """Post ``count`` heads at once (one head many times, or consecutive ones)."""
        self.g.post(q, [head if same else (head + i) & 0xFFFF for i in range(count)])
        if ring:
            self.doorbell_step()

    @rule(q=queues, delta=deltas)
    def move_avail_idx(self, q, delta):
        g = self.g
        g.w32(regs.qctl(q, regs.QCTL_AVAIL_IDX), g.avail_idx(q) + delta)

    @rule(reg=st.sampled_from([regs.REG_CONTROL, regs.REG_INT_ACKED, regs.REG_INT_ENABLE]),
          value=st.one_of(st.sampled_from([0, regs.CTRL_ENABLE, regs.CTRL_RESET, 3,
                                           regs.INT_ALL, "INT_RAISED"]), u32s),
          ring=st.booleans())
    def write_register(self, reg, value, ring):
        """CONTROL, INT_ACKED or INT_ENABLE: a good value, a copy of INT_RAISED (an ack), or
        any u32; maybe rung."""
        g = self.g
        g.w32(reg, g.r32(regs.REG_INT_RAISED) if value == "INT_RAISED" else value)
        if ring:
            self.doorbell_step()

    @rule(q=queues, pick=st.integers(0, QS), ring=st.booleans())
    def cancel(self, q, pick, ring):
        """Set CANCEL on a request the device holds (or on any descriptor)."""
        g = self.g
        held = g.dev.pending(q)
        idx = held[pick % len(held)] if held else pick % QS
        addr, length, flags, nxt = g.desc(q, idx)
        g.write_desc(q, idx, addr, length, flags | regs.DESC_F_CANCEL, nxt)
        if ring:
            self.doorbell_step()

    # ---- a well-behaved poster: valid chains into RAM ----

    def room(self, q: int) -> int:
        """Heads a driver may still post on ``q`` (datasheet 4): QUEUE_SIZE minus the requests
        the device holds minus those posted and not fetched yet."""
        r = self.g.regs()
        return QS - sum(r.held[q].values()) - ((r.avail[q] - r.fetched[q]) & U32)

    @rule(q=queues, start=st.integers(0, QS - 1),
          segs=st.lists(st.tuples(st.booleans(), st.integers(0, RAM_SIZE),
                                  st.integers(1, 8192)), min_size=1, max_size=4),
          nowait=st.booleans(), ring=st.booleans())
    def post_good(self, q, start, segs, nowait, ring):
        g = self.g
        idxs = [(start + i) % QS for i in range(len(segs))]
        for i, (high, off, n) in enumerate(segs):
            base, size = (FOUR_GIB, HIGH) if high else (0, LOW)
            n = min(n, size)
            addr = base + off % (size - n + 1)
            last = i == len(segs) - 1
            flags = (0 if last else regs.DESC_F_NEXT) | (regs.DESC_F_NOWAIT if nowait and
                                                         i == 0 else 0)
            g.write_desc(q, idxs[i], addr, n, flags, 0 if last else idxs[i + 1])
        g.post(q, [idxs[0]])
        if ring:
            self.doorbell_step()

    @rule(tx=st.integers(1, 3 * 4096), rx=st.integers(1, 3 * 4096), first=queues)
    def post_pair(self, tx, rx, first):
        """A write and a read (wired: each on its own, the host is the other end), rung."""
        g = self.g
        for q in (first, 1 - first):
            n = tx if q == TX else rx
            start = self.next_desc
            self.next_desc = (start + 1) % QS
            g.write_desc(q, start, 0x1000 * (1 + q) + n % 4096, n, 0, 0)
            g.post(q, [start])
        self.doorbell_step()

    @rule(which=st.sampled_from([(TX,), (RX,), (TX, RX), (TX, RX)]),
          nsegs=st.one_of(st.integers(1, 8), st.just(regs.MAX_SEGS)),
          seglen=st.one_of(st.integers(1, LOW), st.just(LOW)),
          copies=st.one_of(st.integers(1, 3), st.just(40)),
          ring=st.sampled_from([True, True, False]))
    def post_big(self, which, nsegs, seglen, copies, ring):
        """A valid request of up to MAX_SEGS segments naming the same RAM (~200 MiB), posted
        ``copies`` times (as many as fit) on one queue or both: work enough to reach the
        step's bounds."""
        g = self.g
        for q in which:
            copies = min(copies, self.room(q))
            if copies <= 0:
                continue
            start = self.next_desc
            self.next_desc = (start + nsegs) % QS
            for i in range(nsegs):
                idx = (start + i) % QS
                last = i == nsegs - 1
                g.write_desc(q, idx, 0, seglen, 0 if last else regs.DESC_F_NEXT,
                             (idx + 1) % QS)
            g.post(q, [start] * copies)
        if ring:
            self.doorbell_step()

    @rule(seglen=st.one_of(st.integers(1 << 16, LOW), st.just(LOW)))
    def post_big_pair(self, seglen):
        """A writer and a reader of MAX_SEGS segments each (up to ~200 MiB), rung: more than
        STEP_BYTES moves writer to reader (cut-through in loopback)."""
        self.post_big((TX, RX), regs.MAX_SEGS, seglen, 1, True)

    @rule(q=queues, region=st.sampled_from(REGIONS), n=st.integers(1, 8192),
          by=st.sampled_from([0, 1]))
    def post_at_ram_end(self, q, region, n, by):
        """A one-segment request ending at a RAM region's end (by = 0) or one byte past it:
        the edge of DMA_RANGE."""
        head = self.next_desc
        self.next_desc = (head + 1) % QS
        self.g.write_desc(q, head, *edge_segment(region, n, by, True), 0, 0)
        self.g.post(q, [head])
        self.doorbell_step()

    @rule(q=queues, extra=st.sampled_from([0, 1]), ring=st.booleans())
    def post_to_the_limit(self, q, extra, ring):
        """Post as many heads as the ring holds beside the requests the device holds (one
        good request, reposted) -- or one more: the edge of the AVAIL_IDX error."""
        g = self.g
        room = self.room(q)
        if room + extra <= 0:
            return
        head = self.next_desc
        self.next_desc = (head + 1) % QS
        g.write_desc(q, head, 0x1000, 1 + q, 0, 0)
        g.post(q, [head] * (room + extra))
        if ring:
            self.doorbell_step()

    # ---- doorbells, time, faults ----

    @rule()
    def doorbell(self):
        self.doorbell_step()

    @rule(dt=st.sampled_from([0.0, 1e-6, 1e-4, 1e-3, 0.01, 1.0, 100.0]))
    def advance_clock(self, dt):
        g = self.g
        g.now += dt
        if g.timer is not None and g.timer <= g.now:
            self.tick_step()

    @precondition(lambda self: self.g is not None and self.g.timer is not None)
    @rule()
    def tick_when_due(self):
        g = self.g
        g.now = max(g.now, g.timer)
        self.tick_step()

    @rule(queue=st.sampled_from(["any", "tx", "rx"]),
          latency_us=st.one_of(st.sampled_from([1, 1000]), st.integers(0, 5000)),
          per_byte_ns=st.sampled_from([0, 1, 100]), count=st.integers(0, 5),
          probability=st.sampled_from([1.0, 0.5]), seed=st.integers(0, 1 << 16))
    def arm_slow(self, queue, latency_us, per_byte_ns, count, probability, seed):
        if not (latency_us or per_byte_ns):
            latency_us = 1
        self.g.dev.faults.arm(Kind.SLOW, queue=queue, latency_us=latency_us,
                              per_byte_ns=per_byte_ns, count=count, probability=probability,
                              seed=seed)

    @rule(kind=st.sampled_from([Kind.DMA_ERROR, Kind.CORRUPT, Kind.LOST_IRQ, Kind.SPURIOUS_IRQ,
                                Kind.RESET, None]),
          count=st.integers(1, 3), seed=st.integers(0, 1 << 16))
    def arm_fault(self, kind, count, seed):
        """Another fault (never ``hostile``), or None: clear them all."""
        if kind is None:
            self.g.dev.faults.clear()
        else:
            self.g.dev.faults.arm(kind, count=count, probability=0.5, seed=seed)

    @rule()
    def settle(self):
        """Tick whenever asked (up to a few times), then ring and do it again.  A READY device
        that stops asking has written every delayed completion and left nothing that could
        move; after the doorbell it has fetched every post too."""
        if self.ticks_as_asked():
            self.check_quiescent(rung=False)
        self.doorbell_step()
        if self.ticks_as_asked():
            self.check_quiescent(rung=True)

    def ticks_as_asked(self, most: int = 8) -> bool:
        """Advance the clock to each tick asked for and tick; True if the device stopped
        asking (False: still busy within its bounds -- fine)."""
        g = self.g
        for _ in range(most):
            if g.timer is None:
                return True
            g.now = max(g.now, g.timer)
            self.tick_step()
        return g.timer is None

    def check_quiescent(self, rung: bool) -> None:
        g = self.g
        if not g.dev.enabled:
            return
        assert not any(g.dev.delayed(q) for q in QUEUES), "delayed completions left behind"
        r = g.regs()
        if rung or r.avail == self.rung_avail:      # every post was rung for
            assert r.fetched == r.avail, f"a READY device stopped with posts unfetched: " \
                f"AVAIL_IDX {r.avail}, fetched {r.fetched}"
        # nothing left that could move (datasheet 4): a write waits only for space, a read
        # only for data (loopback: and for no writer to take from)
        tx, rx = g.dev.pending(TX), g.dev.pending(RX)
        assert not tx or r.tx_space == 0, f"a READY device stopped: TX {brief(tx)} " \
            f"waits, TX_SPACE {r.tx_space}"
        assert not rx or (r.rx_level == 0 and (g.dev.host_wire or not tx)), \
            f"a READY device stopped: RX {brief(rx)} waits, RX_LEVEL {r.rx_level}, " \
            f"TX {brief(tx)}"

    # ---- the host wire (wired mode) ----

    def wired(self) -> bool:
        return self.g is not None and self.g.dev.host_wire

    @precondition(wired)
    @rule(n=st.one_of(st.integers(1, 64), st.sampled_from([1 << 12, 1 << 14])))
    def host_write(self, n):
        data = (bytes(range(256)) * (n // 256 + 1))[:n]
        taken = self.step("host", self.g.dev.host_write, data)
        assert 0 <= taken <= n

    @precondition(wired)
    @rule(n=st.one_of(st.integers(1, 64), st.sampled_from([1 << 12, 1 << 14])))
    def host_read(self, n):
        got = self.step("host", self.g.dev.host_read_into, bytearray(n))
        assert 0 <= got <= n

    @precondition(wired)
    @rule(n=st.integers(0, 1 << 13))
    def host_take(self, n):
        g = self.g
        view = g.dev.host_tx_peek(n)
        k = len(view)
        view.release()
        assert self.step("host", g.dev.host_tx_commit, k) == k


GuestInterface.TestCase.settings = settings(
    max_examples=EXAMPLES or 100, stateful_step_count=70, deadline=None, derandomize=True,
    report_multiple_bugs=False,
    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestGuestInterface = GuestInterface.TestCase


def test_datasheet_lists_every_error_code():
    """The codes these tests accept are the datasheet's, and those are regs' ERR_*."""
    assert ERR_CODES == {v for k, v in vars(regs).items()
                         if k.startswith("ERR_") and isinstance(v, int) and v}


# ---- the request-total limit: segments of 256 MiB over one mapping ----

BIG = 256 << 20


@pytest.fixture(scope="module")
def big_ram():
    ram = mmap.mmap(-1, BIG)            # anonymous, private: pages never touched cost nothing
    yield ram
    ram.close()


@settings(max_examples=EXAMPLES or 25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=queues,
       lens=st.lists(st.sampled_from([BIG, BIG - 1, 1, 4096, 1 << 20]), min_size=4, max_size=6),
       extra=st.sampled_from([0, 1, 4096]))
@example(q=TX, lens=[BIG] * 4, extra=0)            # exactly MAX_REQ_BYTES: taken
@example(q=TX, lens=[BIG] * 4, extra=1)            # one byte more: BAD_DESC
@example(q=RX, lens=[BIG] * 4, extra=0)
@example(q=RX, lens=[BIG] * 4, extra=1)
def test_request_total_over_the_limit_is_bad_desc(big_ram, q, lens, extra):
    """Datasheet 4 and 5: a request whose segments add up to more than MAX_REQ_BYTES completes
    with BAD_DESC (ERR_REQ_LEN at the head), len 0, moving nothing; up to the limit it is
    taken.  The FIFO holds 10 bytes from an earlier write when an RX request comes."""
    lens = lens + ([extra] if extra else [])
    total = sum(lens)
    depth = 4096
    g = Guest(depth=depth, ram=big_ram, ram_size=BIG, low_limit=BIG)
    try:
        g.w32(regs.REG_INT_ENABLE, regs.INT_ALL)
        g.w32(regs.REG_CONTROL, regs.CTRL_ENABLE)
        g.dev.doorbell()
        level = 0
        if q == RX:
            g.write_desc(TX, 0, 0x100, 10, 0, 0)
            g.post(TX, [0])
            g.dev.doorbell()
            level = 10
        head = 5
        for i, n in enumerate(lens):
            last = i == len(lens) - 1
            g.write_desc(q, head + i, 0, n, 0 if last else regs.DESC_F_NEXT, head + i + 1)
        g.post(q, [head])
        tx0 = g.r64(regs.REG_STAT_TX_BYTES)
        g.dev.doorbell()
        used = g.r32(regs.qctl(q, regs.QCTL_USED_IDX))
        entry = _USED.unpack_from(g.bar2, regs.queue_base(q) + regs.Q_USED_OFF)[:3]
        moved_in = g.r64(regs.REG_STAT_TX_BYTES) - tx0
        if total > regs.MAX_REQ_BYTES:
            assert used == 1 and entry == (head, 0, regs.ST_BAD_DESC)
            assert (g.r32(regs.REG_ERR_CODE), g.r64(regs.REG_ERR_ADDR)) == (regs.ERR_REQ_LEN,
                                                                            head)
            assert g.r32(regs.REG_ERR_COUNT) == 1
            assert g.r32(regs.REG_STATUS) & regs.STS_DMA_ERROR
            assert g.r32(regs.REG_INT_RAISED) & regs.INT_ERROR
            assert moved_in == g.r64(regs.REG_STAT_RX_BYTES) == 0
            assert g.r32(regs.REG_RX_LEVEL) == level and g.dev.pending(q) == []
        else:
            assert g.r32(regs.REG_ERR_COUNT) == 0
            if q == RX:                             # takes what the FIFO holds
                assert used == 1 and entry == (head, min(level, total), regs.ST_OK)
            elif total <= depth:                    # fits the FIFO: done
                assert used == 1 and entry == (head, total, regs.ST_OK)
            else:                                   # fills the FIFO, waits for readers
                assert used == 0 and g.dev.pending(q) == [head]
            assert moved_in == (min(total, depth) if q == TX else 0)
        assert g.mem.bad == []
    finally:
        g.close()

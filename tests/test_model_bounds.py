"""A hostile guest slows its own device, never the model: every step's work is bounded, and
every guest mistake is an error the guest can read (datasheet 5 and 6; issue 13).

Each test plays a guest that a real driver would never be, against the model in-process, and
asserts on what the contract says: error codes and addresses, used entries (or none), bytes
moved per step, requests held, and the wake-up the model asks for.
"""

from __future__ import annotations

import mmap

from device import regs
from device.core import STEP_BYTES, STEP_DESCS
from device.faults import Kind
from model_driver import Driver, Used, sha

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
OK, BAD = regs.ST_OK, regs.ST_BAD_DESC
MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rig(ram_size: int = 4 * MIB, **kw) -> tuple[Driver, list[float], Clock]:
    """A Driver over sparse RAM whose device asks for wake-ups into a list, on a fake clock."""
    ram = mmap.mmap(-1, ram_size) if ram_size > 4 * MIB else None
    d = Driver(ram_size=ram_size, low_limit=ram_size, ram=ram, **kw)
    wakeups: list[float] = []
    d.dev.schedule = wakeups.append
    d.dev.clock = clock = Clock()
    return d, wakeups, clock


def moved(d: Driver) -> int:
    return d.r64(regs.REG_STAT_TX_BYTES) + d.r64(regs.REG_STAT_RX_BYTES)


def stopped_with(d: Driver, code: int, addr: int) -> bool:
    """ERROR raised with ``code``/``addr``, DMA_ERROR set, READY clear."""
    status = d.r32(regs.REG_STATUS)
    return (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (code, addr) \
        and status & regs.STS_DMA_ERROR and not status & regs.STS_READY \
        and d.pending_causes() & regs.INT_ERROR and regs.VEC_EVENT in d.vectors


# ---- AVAIL_IDX ahead of what the ring can hold: an error, nothing replayed ----

def test_avail_idx_far_ahead_stops_the_device_until_the_driver_resets_it():
    d, _, _ = rig()
    data = bytes(range(256)) * 4
    head = d.tx(data)
    assert d.used(TX) == [Used(head, len(data), OK)]
    errors = d.r32(regs.REG_ERR_COUNT)
    bogus = d.r32(regs.qctl(TX, regs.QCTL_AVAIL_IDX)) + 2000     # stale slots behind it
    d.w32(regs.qctl(TX, regs.QCTL_AVAIL_IDX), bogus)
    d.ring()
    assert d.used(TX) == []                         # the 2000 stale slots were not replayed
    assert stopped_with(d, regs.ERR_AVAIL_IDX, bogus)
    assert d.r32(regs.REG_ERR_COUNT) == errors + 1
    assert d.dev.fifo_level == len(data)            # nothing moved, nothing lost
    d.w32(regs.REG_CONTROL, regs.CTRL_ENABLE)       # ENABLE alone does not restart it
    d.ring()
    assert not d.r32(regs.REG_STATUS) & regs.STS_READY
    d.bring_up()                                    # the driver's reset does
    d.tx(b"after")
    h, gpa = d.rx(16)
    assert d.used(RX) == [Used(h, 5, OK)] and d.peek(gpa, 5) == b"after"


def test_posting_more_than_the_ring_holds_beside_held_requests_is_an_error():
    d, _, _ = rig(depth=16)
    heads = [d.tx(b"x" * 64, ring=False) for _ in range(regs.QUEUE_SIZE)]   # every descriptor
    d.ring()
    assert len(d.dev.pending(TX)) == regs.QUEUE_SIZE and d.used(TX) == []
    d.post_head(TX, heads[5])                       # a head the device still holds
    d.ring()
    assert stopped_with(d, regs.ERR_AVAIL_IDX, regs.QUEUE_SIZE + 1)
    assert len(d.dev.pending(TX)) == regs.QUEUE_SIZE
    assert d.used(TX) == []


def test_delayed_completions_are_bounded_by_the_ring():
    """A slow fault holds completions; a guest reposting their heads gets an error, not an
    ever-growing list of delayed entries (300 doorbells once queued 307,200)."""
    d, _, clock = rig()
    d.dev.faults.arm(Kind.SLOW, queue="tx", count=1_000_000, latency_us=30_000_000)
    gpa = d.alloc(8)
    d.write_desc(TX, 0, gpa, 8)
    for ring in range(300):  # noqa: B007 (read after the loop)
        for _ in range(regs.QUEUE_SIZE):
            d.post_head(TX, 0)
        d.ring()
        held = len(d.dev.pending(TX)) + len(d.dev.delayed(TX))
        assert held <= regs.QUEUE_SIZE
        if not d.r32(regs.REG_STATUS) & regs.STS_READY:
            break
    assert ring == 1 and d.r32(regs.REG_ERR_CODE) == regs.ERR_AVAIL_IDX
    clock.now += 60
    d.dev.tick()
    assert d.used(TX) == []                         # stopped: nothing written until a reset


# ---- a request over MAX_REQ_BYTES ----

def test_request_over_max_req_bytes_fails_whole_and_moves_nothing():
    """Segments may name the same RAM: 5 x 256 MiB = 1.25 GiB over 256 MiB of RAM.  It used
    to complete with len = total mod 2^32 and status OK."""
    d, _, _ = rig(ram_size=256 * MIB + 4 * MIB)
    gpa = d.alloc(256 * MIB, align=4096)
    head = d.post(TX, [(gpa, 256 * MIB)] * 5)
    assert d.used(TX) == [Used(head, 0, BAD)]
    assert (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (regs.ERR_REQ_LEN, head)
    assert d.r32(regs.REG_STATUS) & regs.STS_READY          # only that request failed
    assert moved(d) == 0 and d.dev.fifo_level == 0
    head = d.post(TX, [(gpa, 256 * MIB)] * 4)               # exactly MAX_REQ_BYTES: fine
    assert regs.MAX_REQ_BYTES == 4 * 256 * MIB
    assert d.used(TX) == [] and d.dev.pending(TX) == [head]


# ---- bytes copied and descriptors walked per step ----

def test_cut_through_copies_at_most_step_bytes_per_step_and_loses_nothing():
    d, wakeups, clock = rig(ram_size=7 * STEP_BYTES)
    n = 3 * STEP_BYTES
    src = d.alloc(n, align=4096)
    pattern = bytes(range(251)) * (n // 251 + 1)
    d.poke(src, pattern[:n])
    dst = d.alloc(n, align=4096)
    reader = d.post(RX, [(dst, n)])
    writer = d.post(TX, [(src, n)])
    # one doorbell: the reader gets the step's worth, the writer waits for the rest
    assert moved(d) <= 2 * STEP_BYTES
    assert d.used(RX) == [Used(reader, STEP_BYTES, OK)] and d.used(TX) == []
    assert wakeups and wakeups[-1] <= clock.now     # a tick comes back at once
    got = STEP_BYTES
    readers = [(d.post(RX, [(dst + STEP_BYTES * i, STEP_BYTES)], ring=False), i)
               for i in (1, 2)]
    for _ in range(4):
        before = moved(d)
        d.dev.tick()
        assert moved(d) - before <= 2 * STEP_BYTES
    done = d.used(RX)
    assert [u.id for u in done] == [h for h, _ in readers]
    got += sum(u.len for u in done)
    assert got == n and d.used(TX) == [Used(writer, n, OK)]
    assert sha(d.peek(dst, n)) == sha(pattern[:n])


def test_one_doorbell_walks_a_bounded_number_of_descriptors():
    """1024 heads naming one MAX_SEGS-long chain: 266,240 descriptors in one doorbell used to
    take 275 ms.  Now a step walks at most STEP_DESCS (+ one chain), ticks fetch the rest in
    order, and every request is served."""
    d, wakeups, clock = rig()
    gpa = d.alloc(regs.MAX_SEGS)
    for i in range(regs.MAX_SEGS):
        last = i == regs.MAX_SEGS - 1
        d.write_desc(RX, i, gpa + i, 1, 0 if last else regs.DESC_F_NEXT, 0 if last else i + 1)
    for _ in range(regs.QUEUE_SIZE):
        d.post_head(RX, 0)
    d.ring()
    per_step = STEP_DESCS // regs.MAX_SEGS + 1
    fetched = len(d.dev.pending(RX))
    assert 0 < fetched <= per_step
    assert wakeups and wakeups[-1] <= clock.now
    steps = 1
    while len(d.dev.pending(RX)) < regs.QUEUE_SIZE:
        before = len(d.dev.pending(RX))
        d.dev.tick()
        assert 0 < len(d.dev.pending(RX)) - before <= per_step
        steps += 1
    assert steps >= regs.QUEUE_SIZE // per_step
    d.tx(b"y" * (regs.MAX_SEGS * 3))                # three readers get a whole chain each
    assert [u.len for u in d.used(RX)] == [regs.MAX_SEGS] * 3


def test_a_continuation_is_not_pushed_back_by_a_slow_completion():
    """One timer serves delayed completions and "come back for the rest": a completion due in
    30 s must not move the continuation 30 s away (a post then waited 30 s instead of 0)."""
    d, wakeups, clock = rig()
    d.dev.faults.arm(Kind.SLOW, queue="tx", latency_us=30_000_000)
    d.tx(b"slow")
    assert wakeups == [clock.now + 30]
    gpa = d.alloc(regs.MAX_SEGS)
    for i in range(regs.MAX_SEGS):
        last = i == regs.MAX_SEGS - 1
        d.write_desc(RX, i, gpa + i, 1, 0 if last else regs.DESC_F_NEXT, 0 if last else i + 1)
    for _ in range(200):
        d.post_head(RX, 0)
    d.ring()
    def fetched() -> int:
        return d.dev.snapshot()["queues"]["rx"]["fetched"]

    assert fetched() < 200
    assert wakeups[-1] <= clock.now                 # the continuation, not the slow one
    while fetched() < 200:
        d.dev.tick()
        assert wakeups[-1] <= clock.now or fetched() == 200
    assert wakeups[-1] == clock.now + 30            # and then the slow one again
    assert len(d.dev.pending(RX)) == 199            # the first reader got "slow"'s bytes


# ---- device-owned registers a guest wrote ----

def test_stray_int_raised_bits_last_one_step_at_most():
    """A guest that writes INT_RAISED (the device's register) must not make the next driver
    see causes that were never raised: found by the hostile guest, where a stray RESET bit made
    the rebound driver recover and fail its first requests with EIO."""
    d, _, _ = rig()
    d.w32(regs.REG_INT_RAISED, regs.INT_RESET | regs.INT_ERROR)
    d.w32(regs.REG_INT_ENABLE, 0)
    d.w32(regs.REG_CONTROL, regs.CTRL_RESET)         # the next driver's bring-up, causes off
    d.ring()
    d.ack()                                         # acks what INT_RAISED says now
    d.w32(regs.REG_INT_ENABLE, regs.INT_ALL)
    d.w32(regs.REG_CONTROL, regs.CTRL_ENABLE)
    d.ring()
    assert d.pending_causes() == 0                  # no phantom RESET or ERROR
    d.tx(b"data")
    assert d.pending_causes() == regs.INT_TX_DONE | regs.INT_DATA_AVAIL

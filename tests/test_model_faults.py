"""Fault injection in the device core, with fake guest memory: each fault's effect on registers,
used entries, interrupts and data; one-shot vs count vs probability with a seed.  No sockets
(except the flood test, which needs the host wire's event loop)."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from device import regs
from device.errors import FaultError
from device.faults import FaultSet, Flood, Hook, Kind
from model_driver import Driver, Used, split

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
OK, DMA_ERR = regs.ST_OK, regs.ST_DMA_ERROR


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rig(**kw) -> tuple[Driver, list, list]:
    """A Driver whose device reports events into a list and asks for wake-ups into another."""
    d = Driver(**kw)
    events: list[tuple[str, dict]] = []
    wakeups: list[float] = []
    d.dev.emit = lambda name, data: events.append((name, data))
    d.dev.schedule = wakeups.append
    return d, events, wakeups


def named(events, name) -> list[dict]:
    return [data for n, data in events if n == name]


def bits_between(a: bytes, b: bytes) -> list[int]:
    """Bit positions (byte * 8 + bit) where a and b differ."""
    out = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        for bit in range(8):
            if (x ^ y) >> bit & 1:
                out.append(i * 8 + bit)
    return out


# ---- dma-error ----

def test_dma_error_one_shot_is_a_real_range_error():
    d, events, _ = rig()
    f = d.dev.faults.arm(Kind.DMA_ERROR)
    gpa = d.alloc(64)
    d.poke(gpa, b"x" * 64)
    head = d.post(TX, [(gpa, 64)])
    assert d.used(TX) == [Used(head, 0, DMA_ERR)]
    assert d.r32(regs.REG_ERR_CODE) == regs.ERR_DMA_RANGE
    assert d.r64(regs.REG_ERR_ADDR) == gpa
    assert d.r32(regs.REG_STATUS) & regs.STS_DMA_ERROR
    assert d.r32(regs.REG_ERR_COUNT) == 1
    assert d.pending_causes() & regs.INT_ERROR
    assert regs.VEC_EVENT in d.vectors
    assert d.dev.fifo_level == 0 and d.r64(regs.REG_STAT_TX_BYTES) == 0
    assert named(events, "DMA_ERROR") == [{"queue": "tx", "head": head, "addr": gpa,
                                           "code": regs.ERR_DMA_RANGE, "injected": True}]
    [fired] = named(events, "FAULT_FIRED")
    assert (fired["id"], fired["kind"], fired["remaining"]) == (f.id, "dma-error", 0)
    assert len(d.dev.faults) == 0                   # one-shot: disarmed
    d.ack()
    head = d.tx(b"fine")
    assert d.used(TX) == [Used(head, 4, OK)]


def test_dma_error_scoped_to_a_queue_and_counted():
    d, events, _ = rig()
    d.dev.faults.arm("dma-error", queue="rx", count=3)
    head = d.tx(b"abc")
    assert d.used(TX) == [Used(head, 3, OK)]        # TX is out of scope
    statuses = []
    for _ in range(4):
        h, _ = d.rx(3)
        [u] = d.used(RX)
        assert u.id == h
        statuses.append(u.status)
    assert statuses == [DMA_ERR, DMA_ERR, DMA_ERR, OK]
    assert d.r32(regs.REG_ERR_COUNT) == 3
    assert len(named(events, "DMA_ERROR")) == 3 and len(d.dev.faults) == 0


def test_probability_with_seed_replays_and_count_zero_means_until_cleared():
    def run(seed: int) -> list[int]:
        d, _, _ = rig()
        f = d.dev.faults.arm(Kind.DMA_ERROR, queue="tx", count=0, probability=0.3,
                             seed=seed)
        out = []
        for _ in range(60):
            d.tx(b"z")
            [u] = d.used(TX)
            out.append(u.status)
            d.rx(1)
            d.used(RX)
        assert f.seen == 60 and f.fired == out.count(DMA_ERR)
        assert f.id in d.dev.faults                 # unlimited: still armed
        return out

    a, b, c = run(7), run(7), run(8)
    assert a == b and a != c
    rng = random.Random(7)
    assert a == [DMA_ERR if rng.random() < 0.3 else OK for _ in range(60)]
    assert 5 < a.count(DMA_ERR) < 35


# ---- interrupts ----

def test_lost_irq_updates_int_raised_but_sends_nothing():
    d, events, _ = rig()
    d.dev.faults.arm(Kind.LOST_IRQ)
    irqs = d.r64(regs.REG_STAT_IRQS)
    head = d.tx(b"hi")
    assert d.used(TX) == [Used(head, 2, OK)]
    assert d.pending_causes() & regs.INT_TX_DONE       # the cause bit flipped
    assert d.vectors == []                              # ... the message never arrived
    assert d.r64(regs.REG_STAT_IRQS) == irqs + 1        # the device thinks it sent it
    assert named(events, "FAULT_FIRED")[0]["vector"] == regs.VEC_QUEUE
    d.ack()
    d.tx(b"again")
    assert d.vectors == [regs.VEC_QUEUE]


def test_lost_irq_scoped_to_a_vector():
    d, _, _ = rig()
    d.dev.faults.arm(Kind.LOST_IRQ, vector=regs.VEC_EVENT)
    d.post(TX, [(0x7FFF_0000_0000, 16)])              # a real DMA error: TX_DONE + ERROR
    assert d.vectors == [regs.VEC_QUEUE]                # vector 1 lost, vector 0 sent
    assert d.pending_causes() == regs.INT_TX_DONE | regs.INT_ERROR


def test_spurious_irq_now_and_at_doorbells():
    d, events, _ = rig()
    raised = d.r32(regs.REG_INT_RAISED)
    irqs = d.r64(regs.REG_STAT_IRQS)
    assert d.dev.send_spurious(regs.VEC_EVENT, 3) == 3
    assert d.vectors == [1, 1, 1]
    assert d.r32(regs.REG_INT_RAISED) == raised and d.pending_causes() == 0
    assert d.r64(regs.REG_STAT_IRQS) == irqs + 3
    d.vectors.clear()
    d.dev.faults.arm(Kind.SPURIOUS_IRQ, vector=0, count=2)
    for _ in range(3):
        d.ring()
    assert d.vectors == [0, 0]
    assert d.pending_causes() == 0
    assert [e["vector"] for e in named(events, "FAULT_FIRED")] == [0, 0]


# ---- stall / resume ----

def test_stall_remembers_doorbells_and_resume_processes_them():
    d, events, _ = rig()
    bells = d.r64(regs.REG_STAT_DOORBELLS)
    assert d.dev.stall() and not d.dev.stall()
    h_tx = d.tx(b"stalled")
    h_rx, gpa = d.rx(16)
    d.ring()
    assert d.used(TX) == [] and d.used(RX) == []
    assert d.r64(regs.REG_STAT_DOORBELLS) == bells
    assert d.dev.snapshot()["stalled_doorbells"] == 3
    assert named(events, "STATE_CHANGE")[-1]["stalled"] is True
    assert d.dev.resume() == 3
    assert d.used(TX) == [Used(h_tx, 7, OK)] and d.used(RX) == [Used(h_rx, 7, OK)]
    assert d.peek(gpa, 7) == b"stalled"
    assert d.r64(regs.REG_STAT_DOORBELLS) == bells + 3
    assert named(events, "STATE_CHANGE")[-1] == {"state": "ready", "ready": True,
                                                 "stalled": False, "need_reset": False}
    assert d.dev.resume() == 0


def test_stalled_wired_device_moves_no_host_bytes():
    d, _, _ = rig(host_wire=True)
    d.tx(b"out")
    assert d.dev.host_tx_pending() == 3
    d.dev.stall()
    assert d.dev.host_rx_space() == 0 and d.dev.host_tx_pending() == 0
    assert d.dev.host_write(b"in") == 0
    assert d.dev.host_read_into(bytearray(8)) == 0
    d.dev.resume()
    assert d.dev.host_write(b"in") == 2 and d.dev.host_tx_pending() == 3


# ---- slow ----

def test_slow_delays_the_used_entry_by_latency_and_bytes():
    d, events, wakeups = rig()
    clock = d.dev.clock = Clock()
    d.dev.faults.arm(Kind.SLOW, queue="tx", latency_us=500, per_byte_ns=1000)
    head = d.tx(b"x" * 1000)                # due: 500 us + 1000 B * 1 us = 1.5 ms
    assert d.used(TX) == []
    assert d.dev.delayed(TX) == [head]
    assert d.dev.fifo_level == 1000         # the data moved; only the completion waits
    assert wakeups == [pytest.approx(clock.now + 0.0015)]
    assert named(events, "FAULT_FIRED")[0]["delay_us"] == 1500
    clock.now += 0.001
    d.dev.tick()
    assert d.used(TX) == []
    clock.now += 0.0006
    d.vectors.clear()
    d.dev.tick()
    assert d.used(TX) == [Used(head, 1000, OK)] and d.vectors == [regs.VEC_QUEUE]
    assert d.dev.delayed(TX) == []


def test_slow_keeps_queue_order():
    d, _, wakeups = rig()
    clock = d.dev.clock = Clock()
    d.dev.faults.arm(Kind.SLOW, latency_us=2000)        # one-shot: only the first request
    a = d.tx(b"first")
    b = d.tx(b"second")                                 # not hit, but behind a
    c, _ = d.rx(64)                                     # other queue: not held back
    assert d.used(TX) == [] and d.used(RX) == [Used(c, 11, OK)]
    clock.now += 0.003
    d.dev.tick()
    assert d.used(TX) == [Used(a, 5, OK), Used(b, 6, OK)]
    assert len(wakeups) == 1


def test_reset_drops_delayed_completions():
    d, _, _ = rig()
    d.dev.clock = Clock()
    d.dev.faults.arm(Kind.SLOW, latency_us=10)
    d.tx(b"abc")
    d.bring_up()
    d.dev.clock.now += 1
    d.dev.tick()
    assert d.r32(regs.qctl(TX, regs.QCTL_USED_IDX)) == 0


# ---- corrupt ----

def test_corrupt_tx_flips_payload_on_the_way_into_the_fifo():
    d, events, _ = rig()
    data = bytes(range(256)) * 4
    d.dev.faults.arm(Kind.CORRUPT, queue="tx", bits=5, seed=1)
    gpa = d.alloc(len(data))
    d.poke(gpa, data)
    head = d.post(TX, split(gpa, len(data), 100))      # across several segments
    assert d.used(TX) == [Used(head, len(data), OK)]
    assert d.peek(gpa, len(data)) == data               # the guest's buffer is untouched
    h, rgpa = d.rx(len(data))
    assert d.used(RX) == [Used(h, len(data), OK)]
    got = d.peek(rgpa, len(data))
    [fired] = named(events, "FAULT_FIRED")
    assert len(fired["bits"]) == 5 and fired["queue"] == "tx"
    assert bits_between(got, data) == fired["bits"]


def test_corrupt_rx_flips_what_lands_in_guest_memory():
    d, events, _ = rig()
    data = b"\x00" * 300
    d.dev.faults.arm(Kind.CORRUPT, queue="rx", bits=7, count=2, seed=3)
    d.tx(data)
    h, gpa = d.rx(500, seg=64)
    assert d.used(RX) == [Used(h, 300, OK)]
    got = d.peek(gpa, 300)
    fired = named(events, "FAULT_FIRED")
    assert len(fired) == 1 and fired[0]["queue"] == "rx"
    assert bits_between(got, data) == fired[0]["bits"] and len(fired[0]["bits"]) == 7
    assert d.peek(gpa + 300, 200) == b"\xEE" * 200      # nothing beyond what moved


# ---- device-initiated reset ----

def test_device_reset_drops_requests_and_needs_a_driver_reset():
    d, events, _ = rig()
    count = d.r32(regs.REG_RESET_COUNT)
    d.rx(16)                                            # waits: the FIFO is empty
    d.tx(b"q" * 10, ring=False)
    d.ack()
    d.vectors.clear()
    d.dev.device_reset()
    assert d.dev.pending(RX) == [] and d.dev.fifo_level == 0
    assert d.r32(regs.REG_STATUS) == regs.STS_RESET_DONE
    assert d.r32(regs.REG_RESET_COUNT) == count + 1
    assert d.r32(regs.qctl(RX, regs.QCTL_USED_IDX)) == 0
    assert d.pending_causes() == regs.INT_RESET and d.vectors == [regs.VEC_EVENT]
    assert named(events, "DEVICE_RESET") == [{"initiator": "device", "dropped": 1,
                                              "reset_count": count + 1}]
    assert d.dev.need_reset and d.dev.state == "need-reset"
    d.ring()                                            # CONTROL still ENABLE: ignored
    assert not d.dev.enabled and d.used(TX) == []
    assert not d.r32(regs.REG_STATUS) & regs.STS_READY
    d.bring_up()                                        # the driver re-initialises
    assert d.dev.enabled and not d.dev.need_reset
    head = d.tx(b"back")
    assert d.used(TX) == [Used(head, 4, OK)]
    assert named(events, "DEVICE_RESET")[-1]["initiator"] == "driver"


def test_reset_armed_for_the_next_doorbell():
    d, events, _ = rig()
    d.dev.faults.arm(Kind.RESET)
    count = d.r32(regs.REG_RESET_COUNT)
    d.tx(b"lost")                                       # the doorbell that carries it
    assert d.r32(regs.REG_RESET_COUNT) == count + 1
    assert d.used(TX) == [] and d.dev.need_reset
    assert [n for n, _ in events if n in ("FAULT_FIRED", "DEVICE_RESET")] == \
        ["FAULT_FIRED", "DEVICE_RESET"]


# ---- hostile completions ----

def raw_used(d: Driver, q: int, n: int) -> list[Used]:
    out = []
    for i in range(n):
        off = regs.queue_base(q) + regs.Q_USED_OFF + i * regs.USED_SIZE
        uid, ulen, st = (int.from_bytes(d.bar2[off + k:off + k + 4], "little")
                         for k in (0, 4, 8))
        out.append(Used(uid, ulen, st))
    return out


def test_hostile_long():
    d, _, _ = rig()
    d.dev.faults.arm(Kind.HOSTILE, kind="long", queue="rx")
    d.tx(b"12345")
    h, _ = d.rx(8)
    assert d.used(RX) == [Used(h, 8 + 4096, OK)]        # more than the 8 bytes posted


def test_hostile_duplicate():
    d, _, _ = rig()
    d.dev.faults.arm(Kind.HOSTILE, kind="duplicate")
    head = d.tx(b"dup")
    assert d.r32(regs.qctl(TX, regs.QCTL_USED_IDX)) == 2
    assert raw_used(d, TX, 2) == [Used(head, 3, OK)] * 2
    assert d.r64(regs.REG_STAT_COMPLETIONS) == 2


def test_hostile_unknown_id():
    d, events, _ = rig()
    waiting, _ = d.rx(4)                                # in flight on RX
    d.dev.faults.arm(Kind.HOSTILE, kind="unknown-id", queue="rx", seed=5)
    d.tx(b"ab", ring=False)
    second, _ = d.rx(4, ring=False)
    d.ring()
    entries = raw_used(d, RX, d.r32(regs.qctl(RX, regs.QCTL_USED_IDX)))
    bogus = named(events, "FAULT_FIRED")[0]["id"]
    assert entries == [Used(bogus, 2, OK), Used(waiting, 2, OK)]
    assert bogus not in (waiting, second) and 0 <= bogus < regs.QUEUE_SIZE


def test_hostile_index_jumps_beyond_the_ring():
    d, _, _ = rig()
    d.dev.faults.arm(Kind.HOSTILE, kind="index", queue="tx")
    head = d.tx(b"i")
    used_idx = d.r32(regs.qctl(TX, regs.QCTL_USED_IDX))
    assert used_idx == 1 + regs.QUEUE_SIZE + 1          # more than a ring ahead of 0
    assert raw_used(d, TX, 1) == [Used(head, 1, OK)]


# ---- the fault set ----

def test_fault_set_arm_list_clear():
    fs = FaultSet()
    a = fs.arm(Kind.DMA_ERROR, queue="tx", count=2, seed=9)
    b = fs.arm("lost-irq", probability=0.5)
    assert [f["id"] for f in fs.describe()] == [a.id, b.id]
    assert fs.describe()[0] == {"id": a.id, "kind": "dma-error", "hook": "fetch",
                                "queue": "tx", "remaining": 2, "probability": 1.0, "seed": 9,
                                "seen": 0, "fired": 0}
    assert isinstance(fs.describe()[1]["seed"], int)    # chosen, reported for replay
    assert fs.armed_at(Hook.FETCH) and fs.armed_at(Hook.VECTOR)
    assert not list(fs.fire(Hook.FETCH, queue="rx"))    # out of scope: not even drawn
    assert a.seen == 0
    assert fs.clear(a.id) == [a] and not fs.armed_at(Hook.FETCH)
    with pytest.raises(FaultError, match="no armed fault"):
        fs.clear(a.id)
    assert fs.clear() == [b] and len(fs) == 0


@pytest.mark.parametrize("kind,params,match", [
    ("dma-error", {"queue": "sideways"}, "does not accept"),
    ("dma-error", {"count": -1}, r"\[0, 1000000\]"),
    ("dma-error", {"probability": 1.5}, r"\[0, 1\]"),
    ("slow", {}, "latency_us or per_byte_ns"),
    ("hostile", {}, "'kind' is missing"),
    ("hostile", {"kind": "rude"}, "does not accept"),
    ("corrupt", {"colour": 1}, "unknown parameter"),
    ("teleport", {}, "unknown fault kind"),
])
def test_fault_set_rejects_bad_parameters(kind, params, match):
    with pytest.raises(FaultError, match=match):
        FaultSet().arm(kind, **params)


def test_faults_in_one_hook_stop_at_the_first_decision():
    d, events, _ = rig()
    d.dev.faults.arm(Kind.DMA_ERROR)
    corrupt = d.dev.faults.arm(Kind.CORRUPT)
    d.tx(b"x")
    assert d.used(TX)[0].status == DMA_ERR
    assert corrupt.seen == 0 and corrupt.id in d.dev.faults     # not drawn
    assert [e["kind"] for e in named(events, "FAULT_FIRED")] == ["dma-error"]


# ---- flood (host wire) ----

def test_flood_counter_pattern_and_commit():
    fl = Flood(1, 600, "counter")
    assert fl.peek(300) == bytes(range(256)) + bytes(range(44))
    fl.commit(250)
    assert fl.peek(10) == bytes(range(250, 256)) + bytes(range(4))
    fl.commit(0)
    assert (fl.accepted, fl.refused, fl.remaining) == (250, 1, 350)
    r1, r2 = Flood(2, 100, "random", seed=4), Flood(3, 100, "random", seed=4)
    a = r1.peek(60)
    r1.commit(10)
    assert r1.peek(50) == a[10:] and r2.peek(100)[:60] == a


def test_flood_feeds_the_rx_fifo_as_it_frees_and_loses_nothing(tmp_path):
    from device.wire import HostWire

    async def scenario():
        d, events, _ = rig(host_wire=True, depth=4096)
        wire = HostWire(str(tmp_path / "w.sock"), d.dev)
        wire.emit = lambda name, data: events.append((name, data))
        d.dev.wake_host = wire.kick
        await wire.start()
        try:
            total = 4 * 4096 + 123
            flood = Flood(7, total, "counter")
            wire.start_flood(flood)
            await asyncio.sleep(0)
            assert flood.accepted == 4096                   # the FIFO's worth, no more
            assert d.r32(regs.REG_RX_LEVEL) == 4096
            got = bytearray()
            while len(got) < total:
                h, gpa = d.rx(1000)
                [u] = d.used(RX)
                assert u.id == h and u.status == OK and 0 < u.len <= 1000
                got += d.peek(gpa, u.len)
                await asyncio.sleep(0)                      # the wire refills
                assert d.dev.fifo_level <= 4096
            assert bytes(got) == flood.expected(0, total)
            assert flood.done and flood.accepted == total and flood.refused > 0
            assert named(events, "FLOOD_DONE") == [{"id": 7, "offered": total,
                                                    "accepted": total,
                                                    "refused": flood.refused}]
            with socket.socket(socket.AF_UNIX) as s:        # a client sees HOST_WIRE
                s.connect(wire.path)
                for _ in range(100):
                    await asyncio.sleep(0.001)
                    if named(events, "HOST_WIRE"):
                        break
            assert named(events, "HOST_WIRE")[0]["connected"] is True
        finally:
            wire.close()
            d.dev.close()

    asyncio.run(scenario())


def test_flood_waits_for_ready_and_can_be_cancelled(tmp_path):
    from device.wire import HostWire

    async def scenario():
        d, _, _ = rig(host_wire=True, depth=1024, enable=False)
        wire = HostWire(str(tmp_path / "w.sock"), d.dev)
        d.dev.wake_host = wire.kick
        await wire.start()
        try:
            flood = Flood(1, 5000)
            wire.start_flood(flood)
            await asyncio.sleep(0)
            assert flood.accepted == 0 and flood.refused == 1   # not READY: nothing taken
            with pytest.raises(FaultError, match="still running"):
                wire.start_flood(Flood(2, 10))
            d.bring_up()
            await asyncio.sleep(0)
            assert flood.accepted == 1024
            assert wire.stop_flood() is flood and flood.done and flood.remaining == 0
            d.rx(1024)
            await asyncio.sleep(0)
            assert flood.accepted == 1024                       # nothing more after cancel
        finally:
            wire.close()
            d.dev.close()

    asyncio.run(scenario())

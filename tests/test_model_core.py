"""FifoDevice against a bytearray BAR2 and bytearray guest RAM: data, statuses, errors,
interrupts, counters.  No VM, no sockets."""

from __future__ import annotations

import random

import pytest

from device import regs
from device.core import FEATURES, FifoDevice
from device.guestmem import FOUR_GIB, GuestMemory
from model_driver import Driver, Used, sha, split

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
OK = regs.ST_OK


def drain(d: Driver, total: int, chunk: int, rx_seg: int | None = None) -> bytes:
    """Read ``total`` bytes with RX requests of ``chunk`` bytes; return what came."""
    out = bytearray()
    buf = d.alloc(chunk)
    while len(out) < total:
        head = d.post(RX, split(buf, chunk, rx_seg))
        [u] = d.used(RX)
        assert u == Used(head, min(chunk, u.len), OK) and u.len > 0
        out += d.peek(buf, u.len)
    assert len(out) == total
    return bytes(out)


# ---- identification and bring-up ----

def test_power_on_registers():
    d = Driver(depth=12345, enable=False)
    expect = {regs.REG_MAGIC: regs.MAGIC_VALUE, regs.REG_VERSION: regs.VERSION_VALUE,
              regs.REG_FEATURES: FEATURES, regs.REG_DEVICE_PEER: 0,
              regs.REG_FIFO_DEPTH: 12345, regs.REG_QUEUE_SIZE: regs.QUEUE_SIZE,
              regs.REG_NUM_VECTORS: regs.NUM_VECTORS, regs.REG_MAX_SEGS: regs.MAX_SEGS,
              regs.REG_TX_SPACE: 12345, regs.REG_RX_LEVEL: 0, regs.REG_STATUS: 0,
              regs.REG_CONTROL: 0, regs.REG_RESET_COUNT: 0}
    assert {r: d.r32(r) for r in expect} == expect
    assert FEATURES == (regs.FEAT_LOOPBACK | regs.FEAT_NOWAIT | regs.FEAT_CANCEL
                        | regs.FEAT_NO_NOTIFY)
    assert d.bar2[:4] == b"FILB"


def test_power_on_zeroes_bar2_and_state():
    d = Driver()
    d.tx(b"abc")
    d.bar2[0x30000:0x30010] = b"\xff" * 16
    d.dev.power_on()
    assert d.r32(regs.qctl(TX, regs.QCTL_USED_IDX)) == 0
    assert d.r64(regs.REG_STAT_TX_BYTES) == 0
    assert d.bar2[0x30000:0x30010] == bytes(16)
    assert d.r32(regs.REG_RX_LEVEL) == 0 and d.dev.fifo_level == 0


def test_bring_up_reset_then_enable():
    d = Driver(enable=False)
    d.w32(regs.REG_INT_ENABLE, regs.INT_ALL)
    d.w32(regs.REG_CONTROL, regs.CTRL_RESET)
    d.ring()
    assert d.r32(regs.REG_RESET_COUNT) == 1
    assert d.r32(regs.REG_STATUS) == regs.STS_RESET_DONE
    assert d.pending_causes() == regs.INT_RESET and d.vectors == [regs.VEC_EVENT]
    d.ring()                                        # RESET still set: another reset
    assert d.r32(regs.REG_RESET_COUNT) == 2
    assert d.vectors == [regs.VEC_EVENT]            # RESET pending: not raised again
    d.ack()
    d.w32(regs.REG_CONTROL, regs.CTRL_ENABLE)
    d.ring()
    assert d.r32(regs.REG_STATUS) == regs.STS_READY and d.dev.enabled
    assert d.r32(regs.REG_RESET_COUNT) == 2
    d.w32(regs.REG_CONTROL, 0)
    d.ring()
    assert d.r32(regs.REG_STATUS) == 0 and not d.dev.enabled


# ---- loopback data integrity ----

@pytest.mark.parametrize("size,tx_seg,rx_chunk,rx_seg", [
    (1, None, 1, None),
    (7, None, 100, None),
    (4096, 4096, 4096, 4096),
    (5000, 4096, 8192, 4096),           # segments cross page boundaries
    (65536, 4096, 65536, 4096),         # exactly the FIFO depth
    (65537, 1000, 777, 100),            # odd segment sizes, FIFO wraps
    (1 << 20, 4096, 65536, 4096),       # 1 MiB through a 64 KiB FIFO, 257 segments
    (1 << 20, None, 30000, 7000),
])
def test_loopback_integrity(size, tx_seg, rx_chunk, rx_seg):
    d = Driver(ram_size=4 << 20)
    data = random.Random(size).randbytes(size)
    d.alloc(123, align=1)                           # misalign what follows
    head = d.tx(data, tx_seg)
    got = drain(d, size, rx_chunk, rx_seg)
    assert sha(got) == sha(data)
    assert d.used(TX) == [Used(head, size, OK)]
    assert d.r64(regs.REG_STAT_TX_BYTES) == size
    assert d.r64(regs.REG_STAT_RX_BYTES) == size
    assert d.r32(regs.REG_RX_LEVEL) == 0 and d.r32(regs.REG_TX_SPACE) == 65536


def test_chain_across_low_and_high_ram():
    d = Driver(ram_size=1 << 20, low_limit=0x80000)
    lo = d.alloc(3000)
    hi = FOUR_GIB + 0x100
    data = bytes(range(256)) * 20
    d.poke(lo, data[:3000])
    d.poke(hi, data[3000:])
    head = d.post(TX, [(lo, 3000), (hi, len(data) - 3000)])
    rx_lo, rx_hi = 0x7FF00, FOUR_GIB + 0x8000   # RX chain: end of low RAM, then high RAM
    rhead = d.post(RX, [(rx_lo, 0x100), (rx_hi, len(data) - 0x100)])
    assert d.used(TX) == [Used(head, len(data), OK)]
    assert d.used(RX) == [Used(rhead, len(data), OK)]
    assert d.peek(rx_lo, 0x100) + d.peek(rx_hi, len(data) - 0x100) == data


def test_max_segs_chain_ok():
    d = Driver()
    data = random.Random(1).randbytes(regs.MAX_SEGS * 3)
    gpa = d.alloc(len(data))
    d.poke(gpa, data)
    head = d.post(TX, [(gpa + 3 * i, 3) for i in range(regs.MAX_SEGS)])
    assert d.used(TX) == [Used(head, len(data), OK)]
    assert drain(d, len(data), 4096) == data


# ---- FIFO semantics ----

def test_fifo_bounded_tx_completes_after_drain():
    d = Driver(depth=4096)
    data = random.Random(2).randbytes(10000)
    head = d.tx(data, 4096)
    assert d.used(TX) == []
    assert d.r32(regs.REG_TX_SPACE) == 0 and d.r32(regs.REG_RX_LEVEL) == 4096
    assert d.r64(regs.REG_STAT_TX_BYTES) == 4096
    got = bytearray()
    buf = d.alloc(4096)
    for expect_tx_done in (False, True):
        h = d.post(RX, [(buf, 4096)])
        [u] = d.used(RX)
        got += d.peek(buf, u.len)
        assert u.id == h
        assert (d.used(TX) == [Used(head, 10000, OK)]) == expect_tx_done
    got += drain(d, 10000 - len(got), 4096)
    assert got == data


def test_tx_waits_behind_tx():
    d = Driver(depth=100)
    a = d.tx(b"a" * 150)
    b = d.tx(b"b" * 10)
    assert d.used(TX) == [] and d.dev.pending(TX) == [a, b]
    assert drain(d, 160, 100) == b"a" * 150 + b"b" * 10
    assert [u.id for u in d.used(TX)] == [a, b]


def test_rx_waits_while_empty_then_gets_data():
    d = Driver()
    head, buf = d.rx(100)
    d.ring()
    d.ring()
    assert d.used(RX) == [] and d.dev.pending(RX) == [head]
    d.tx(b"hello")
    assert d.used(RX) == [Used(head, 5, OK)]
    assert d.peek(buf, 6) == b"hello\xee"
    assert d.r32(regs.REG_RX_LEVEL) == 0


def test_rx_returns_min_level_len():
    d = Driver()
    data = bytes(range(256)) + bytes(44)
    d.tx(data)
    h1, b1 = d.rx(100)
    h2, b2 = d.rx(1000, seg=64)
    assert d.used(RX) == [Used(h1, 100, OK), Used(h2, 200, OK)]
    assert d.peek(b1, 100) + d.peek(b2, 200) == data
    assert d.peek(b2 + 200, 1) == b"\xee"


def test_order_of_tx_and_rx():
    d = Driver()
    heads = [d.tx(bytes([i]) * (i + 1)) for i in range(10)]
    assert [u.id for u in d.used(TX)] == heads
    assert drain(d, 55, 1000) == b"".join(bytes([i]) * (i + 1) for i in range(10))
    r1, b1 = d.rx(10)
    r2, b2 = d.rx(10)
    d.tx(b"x" * 3)
    assert d.used(RX) == [Used(r1, 3, OK)] and d.dev.pending(RX) == [r2]
    d.tx(b"y" * 4)
    assert d.used(RX) == [Used(r2, 4, OK)]
    assert d.peek(b2, 4) == b"yyyy"


def test_tx_and_rx_posted_in_one_doorbell():
    d = Driver()
    rh, buf = d.rx(64, ring=False)
    th = d.tx(b"z" * 64, ring=False)
    d.ring()
    assert d.used(TX) == [Used(th, 64, OK)] and d.used(RX) == [Used(rh, 64, OK)]
    assert d.r64(regs.REG_STAT_DOORBELLS) == 3      # bring-up rang twice


# ---- NOWAIT and CANCEL ----

def test_nowait_rx_empty_completes_zero():
    d = Driver()
    h, buf = d.rx(10, flags=regs.DESC_F_NOWAIT)
    assert d.used(RX) == [Used(h, 0, OK)]
    assert d.peek(buf, 10) == b"\xee" * 10


def test_nowait_tx_partial_and_full():
    d = Driver(depth=100)
    d.tx(b"a" * 60)
    d.used(TX)
    h = d.tx(b"b" * 100, flags=regs.DESC_F_NOWAIT)
    assert d.used(TX) == [Used(h, 40, OK)]
    h = d.tx(b"c" * 5, flags=regs.DESC_F_NOWAIT)
    assert d.used(TX) == [Used(h, 0, OK)]
    assert drain(d, 100, 100) == b"a" * 60 + b"b" * 40


def test_nowait_behind_waiting_request_completes_now():
    d = Driver()
    r1, _ = d.rx(10)
    r2, _ = d.rx(10, flags=regs.DESC_F_NOWAIT)
    assert d.used(RX) == [Used(r2, 0, OK)] and d.dev.pending(RX) == [r1]
    d.tx(b"q")
    assert d.used(RX) == [Used(r1, 1, OK)]


def test_cancel_pending_rx():
    d = Driver()
    h, buf = d.rx(10)
    keep, _ = d.rx(10)
    d.set_flags(RX, h, regs.DESC_F_CANCEL)
    d.ring()
    assert d.used(RX) == [Used(h, 0, regs.ST_CANCELLED)]
    d.tx(b"after")
    assert d.used(RX) == [Used(keep, 5, OK)]
    assert d.peek(buf, 5) == b"\xee" * 5


def test_cancel_partial_tx_reports_bytes_taken():
    d = Driver(depth=100)
    data = bytes(range(250))
    h = d.tx(data, seg=64)
    assert d.used(TX) == []
    d.set_flags(TX, h, regs.DESC_F_NEXT | regs.DESC_F_CANCEL)
    d.ring()
    assert d.used(TX) == [Used(h, 100, regs.ST_CANCELLED)]
    assert drain(d, 100, 1000) == data[:100]        # what the FIFO took stays in it
    h2 = d.tx(b"next")
    assert d.used(TX) == [Used(h2, 4, OK)]


def test_cancel_after_completion_has_no_effect():
    d = Driver()
    h = d.tx(b"done")
    assert d.used(TX) == [Used(h, 4, OK)]
    d.set_flags(TX, h, regs.DESC_F_CANCEL)
    d.ring()
    assert d.used(TX) == []
    assert d.r64(regs.REG_STAT_COMPLETIONS) == 1


def test_posted_with_cancel_set_is_cancelled():
    d = Driver()
    h = d.tx(b"never", flags=regs.DESC_F_CANCEL)
    assert d.used(TX) == [Used(h, 0, regs.ST_CANCELLED)]
    assert d.r32(regs.REG_RX_LEVEL) == 0


# ---- reset and disable ----

def test_reset_drops_requests_and_fifo():
    d = Driver(depth=100)
    d.tx(b"t" * 150)
    d.rx(10)
    d.post_head(TX, 5000)                           # an error: sets STS_DMA_ERROR
    d.ring()
    d.used(TX)
    d.used(RX)
    assert d.r32(regs.REG_STATUS) & regs.STS_DMA_ERROR
    used_before = d.r64(regs.REG_STAT_COMPLETIONS)
    d.ack()
    d.vectors.clear()
    d.bring_up()
    assert d.r64(regs.REG_STAT_COMPLETIONS) == used_before     # dropped, not completed
    assert d.r32(regs.REG_RX_LEVEL) == 0 and d.r32(regs.REG_TX_SPACE) == 100
    assert d.r32(regs.qctl(TX, regs.QCTL_USED_IDX)) == 0
    assert d.r32(regs.REG_STATUS) == regs.STS_READY
    assert d.dev.pending(TX) == [] and d.dev.pending(RX) == []
    h = d.tx(b"fresh")
    assert d.used(TX) == [Used(h, 5, OK)]
    assert drain(d, 5, 10) == b"fresh"


def test_reset_raises_reset_cause():
    d = Driver()
    d.ack()
    d.w32(regs.REG_CONTROL, regs.CTRL_RESET)
    d.ring()
    assert d.pending_causes() == regs.INT_RESET
    assert d.vectors == [regs.VEC_EVENT]
    assert d.r32(regs.REG_STATUS) == regs.STS_RESET_DONE


def test_disabled_device_does_not_process():
    d = Driver()
    d.w32(regs.REG_CONTROL, 0)
    d.ring()
    h = d.tx(b"wait")
    assert d.used(TX) == [] and d.r32(regs.REG_RX_LEVEL) == 0
    d.w32(regs.REG_CONTROL, regs.CTRL_ENABLE)
    d.ring()
    assert d.used(TX) == [Used(h, 4, OK)]


def test_reset_wins_over_enable():
    d = Driver()
    d.w32(regs.REG_CONTROL, regs.CTRL_RESET | regs.CTRL_ENABLE)
    d.ring()
    assert not d.dev.enabled and d.r32(regs.REG_STATUS) == regs.STS_RESET_DONE


# ---- DMA bounds ----

RAM = 1 << 20
LOW = 0x80000           # low RAM 0..512 KiB, high RAM 4 GiB..4 GiB+512 KiB
HIGH_END = FOUR_GIB + RAM - LOW


@pytest.mark.parametrize("addr,length", [
    (HIGH_END, 16),                     # just past the end of RAM
    (HIGH_END - 8, 16),                 # straddling the end of RAM
    (HIGH_END + (1 << 30), 1),          # far past
    (0x1000, 0xFFFFFFFF),               # huge length
    (LOW, 16),                          # first byte of the hole
    (LOW - 8, 16),                      # straddling low RAM into the hole
    (0xC0000000, 4096),                 # in the hole (where PCI BARs live)
    (FOUR_GIB - 8, 16),                 # straddling the hole into high RAM
    ((1 << 64) - 8, 16),                # wraps the address space
], ids=["past-end", "straddle-end", "far", "huge-len", "hole-start", "straddle-low",
        "hole", "straddle-4g", "wrap"])
@pytest.mark.parametrize("q", [TX, RX])
def test_dma_out_of_range(q, addr, length):
    d = Driver(ram_size=RAM, low_limit=LOW)
    good = d.alloc(16)
    d.poke(good, b"G" * 16)
    ram_before = bytes(d.ram)
    h = d.post(q, [(good, 16), (addr, length)])
    assert d.used(q) == [Used(h, 0, regs.ST_DMA_ERROR)]
    assert d.r32(regs.REG_ERR_CODE) == regs.ERR_DMA_RANGE
    assert d.r64(regs.REG_ERR_ADDR) == addr
    assert d.r32(regs.REG_STATUS) & regs.STS_DMA_ERROR
    assert d.r32(regs.REG_ERR_COUNT) == 1
    assert d.pending_causes() & regs.INT_ERROR and regs.VEC_EVENT in d.vectors
    assert d.r64(regs.REG_STAT_TX_BYTES) == 0 and d.r32(regs.REG_RX_LEVEL) == 0
    assert bytes(d.ram) == ram_before               # nothing moved
    # ... and the device carries on
    th = d.tx(b"still works")
    assert d.used(TX) == [Used(th, 11, OK)]
    assert drain(d, 11, 64) == b"still works"
    assert d.r32(regs.REG_STATUS) & regs.STS_DMA_ERROR     # sticky until reset


def test_error_completes_ahead_of_waiting_request():
    d = Driver()
    r1, _ = d.rx(10)
    bad = d.post(RX, [(0xF0000000, 4)])
    assert d.used(RX) == [Used(bad, 0, regs.ST_DMA_ERROR)]
    assert d.dev.pending(RX) == [r1]


# ---- bad descriptors ----

def test_head_index_out_of_range():
    d = Driver()
    d.post_head(TX, 0xFFFF)
    d.ring()
    assert d.used(TX) == [Used(0xFFFF, 0, regs.ST_BAD_DESC)]
    assert (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (regs.ERR_DESC_INDEX, 0xFFFF)


def test_next_index_out_of_range():
    d = Driver()
    gpa = d.alloc(8)
    d.write_desc(TX, 3, gpa, 8, regs.DESC_F_NEXT, 1024)
    d.post_head(TX, 3)
    d.ring()
    assert d.used(TX) == [Used(3, 0, regs.ST_BAD_DESC)]
    assert (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (regs.ERR_DESC_INDEX, 1024)


def test_loop_is_a_chain_error():
    d = Driver()
    gpa = d.alloc(8)
    d.write_desc(RX, 5, gpa, 8, regs.DESC_F_NEXT, 6)
    d.write_desc(RX, 6, gpa, 8, regs.DESC_F_NEXT, 5)
    d.post_head(RX, 5)
    d.ring()
    assert d.used(RX) == [Used(5, 0, regs.ST_BAD_DESC)]
    assert (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (regs.ERR_DESC_CHAIN, 5)


def test_too_many_segments():
    d = Driver()
    gpa = d.alloc(regs.MAX_SEGS + 1)
    h = d.post(TX, [(gpa + i, 1) for i in range(regs.MAX_SEGS + 1)])
    assert d.used(TX) == [Used(h, 0, regs.ST_BAD_DESC)]
    assert (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (regs.ERR_DESC_CHAIN, h)


def test_zero_length_segment():
    d = Driver()
    gpa = d.alloc(16)
    d.write_desc(TX, 7, gpa, 8, regs.DESC_F_NEXT, 9)
    d.write_desc(TX, 9, gpa, 0, 0, 0)
    d.post_head(TX, 7)
    d.ring()
    assert d.used(TX) == [Used(7, 0, regs.ST_BAD_DESC)]
    assert (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (regs.ERR_DESC_LEN, 9)
    assert d.r32(regs.REG_ERR_COUNT) == 1 and d.r32(regs.REG_RX_LEVEL) == 0


def test_runaway_avail_idx_is_an_error_and_replays_nothing():
    """Datasheet 5: AVAIL_IDX far ahead -> AVAIL_IDX error, READY clear, nothing fetched."""
    d = Driver()
    d.w32(regs.qctl(TX, regs.QCTL_AVAIL_IDX), 0x80000000)
    d.ring()
    assert d.r32(regs.qctl(TX, regs.QCTL_USED_IDX)) == 0
    assert (d.r32(regs.REG_ERR_CODE), d.r64(regs.REG_ERR_ADDR)) == (regs.ERR_AVAIL_IDX,
                                                                      0x80000000)
    assert d.r32(regs.REG_ERR_COUNT) == 1
    assert not d.r32(regs.REG_STATUS) & regs.STS_READY


# ---- interrupts ----

def test_interrupt_coalescing_and_ack():
    d = Driver()
    d.tx(b"1")
    assert d.vectors == [regs.VEC_QUEUE]
    assert d.pending_causes() == regs.INT_TX_DONE | regs.INT_DATA_AVAIL
    d.tx(b"2")                                      # still pending: no second message
    assert d.vectors == [regs.VEC_QUEUE]
    raised = d.ack()
    assert raised == regs.INT_TX_DONE | regs.INT_DATA_AVAIL
    d.tx(b"3")
    assert d.vectors == [regs.VEC_QUEUE] * 2
    assert d.r32(regs.REG_INT_RAISED) == 0         # flipped twice
    assert d.r64(regs.REG_STAT_IRQS) == 2
    d.ack()
    drain(d, 3, 10)
    assert d.pending_causes() == regs.INT_RX_DONE | regs.INT_SPACE_AVAIL
    assert d.r64(regs.REG_STAT_IRQS) == 3


def test_masked_causes_never_raised():
    d = Driver(int_enable=regs.INT_ERROR)
    d.tx(b"abc")
    drain(d, 3, 10)
    assert d.vectors == [] and d.pending_causes() == 0
    d.post_head(TX, 4000)
    d.ring()
    assert d.vectors == [regs.VEC_EVENT] and d.pending_causes() == regs.INT_ERROR
    d.w32(regs.REG_INT_ENABLE, regs.INT_RX_DONE)    # enabling later raises only new causes
    d.ack()
    d.tx(b"x")
    assert d.vectors == [regs.VEC_EVENT]
    drain(d, 1, 10)
    assert d.vectors == [regs.VEC_EVENT, regs.VEC_QUEUE]
    assert d.r64(regs.REG_STAT_IRQS) == 2


def test_each_vector_once_per_doorbell():
    d = Driver()
    d.post_head(TX, 2000)
    d.tx(b"ok", ring=False)
    d.rx(2, ring=False)
    d.ring()
    assert sorted(d.vectors) == [regs.VEC_QUEUE, regs.VEC_EVENT]
    assert d.pending_causes() == (regs.INT_ERROR | regs.INT_TX_DONE | regs.INT_RX_DONE)
    assert d.r64(regs.REG_STAT_IRQS) == 2


def test_data_and_space_avail():
    d = Driver(depth=10)
    d.tx(b"0123456789abc")
    assert d.pending_causes() == regs.INT_DATA_AVAIL            # TX not done: FIFO full
    d.ack()
    d.rx(4)                         # takes 4, the TX puts its last 3 in: level 10 -> 9
    assert d.pending_causes() == (regs.INT_RX_DONE | regs.INT_TX_DONE | regs.INT_SPACE_AVAIL)
    assert d.r32(regs.REG_RX_LEVEL) == 9 and d.r32(regs.REG_TX_SPACE) == 1
    d.ack()
    d.rx(9)
    assert d.pending_causes() == regs.INT_RX_DONE | regs.INT_SPACE_AVAIL
    d.ack()
    d.rx(1)                         # waits; a TX that it drains leaves the level at 0
    d.tx(b"z")
    assert d.pending_causes() == regs.INT_RX_DONE | regs.INT_TX_DONE
    d.ack()
    d.tx(b"zz")
    assert d.pending_causes() == regs.INT_TX_DONE | regs.INT_DATA_AVAIL


# ---- counters ----

def test_statistics_counters():
    d = Driver()
    base_db = d.r64(regs.REG_STAT_DOORBELLS)
    for n in (10, 20, 30):
        d.tx(b"s" * n)
    drain(d, 60, 25)
    d.post_head(RX, 9999)
    d.ring()
    d.dev.doorbell(rings=5)
    assert d.r64(regs.REG_STAT_TX_BYTES) == 60
    assert d.r64(regs.REG_STAT_RX_BYTES) == 60
    assert d.r64(regs.REG_STAT_COMPLETIONS) == 3 + 3 + 1
    assert d.r64(regs.REG_STAT_DOORBELLS) == base_db + 3 + 3 + 1 + 5
    assert d.r32(regs.REG_ERR_COUNT) == 1
    assert d.r64(regs.REG_STAT_IRQS) == len(d.vectors)


def test_used_ring_wraps():
    d = Driver()
    buf = d.alloc(8)
    for i in range(regs.QUEUE_SIZE * 2 + 5):
        d.tx(i.to_bytes(4, "little"))
        h = d.post(RX, [(buf, 8)])
        assert d.used(RX) == [Used(h, 4, OK)] and d.peek(buf, 4) == i.to_bytes(4, "little")
        assert len(d.used(TX)) == 1
        d._next = buf + 8                           # reuse RAM
    assert d.r32(regs.qctl(RX, regs.QCTL_USED_IDX)) == regs.QUEUE_SIZE * 2 + 5


# ---- robustness ----

def test_garbage_never_raises():
    rng = random.Random(1234)
    d = Driver(ram_size=1 << 20, low_limit=0x80000)
    for _ in range(400):
        q = rng.choice((TX, RX))
        base = regs.queue_base(q)
        for _ in range(rng.randrange(1, 40)):
            off = base + rng.randrange(0, 0xC000, 2)
            d.bar2[off:off + 2] = rng.randbytes(2)
        for _ in range(rng.randrange(0, 6)):        # plausible descriptors too
            idx = rng.randrange(regs.QUEUE_SIZE)
            d.write_desc(q, idx, rng.choice((rng.randrange(1 << 20), FOUR_GIB + 0x100,
                                             rng.getrandbits(64))),
                         rng.choice((0, 1, 4096, rng.getrandbits(32))),
                         rng.getrandbits(16), rng.choice((idx + 1, rng.getrandbits(16))))
        d.w32(regs.qctl(q, regs.QCTL_AVAIL_IDX), rng.choice((
            d.r32(regs.qctl(q, regs.QCTL_AVAIL_IDX)) + rng.randrange(4),
            rng.getrandbits(32))))
        d.w32(regs.REG_CONTROL, rng.choice((regs.CTRL_ENABLE,) * 8 + (0, 2, 3, 0xFFFFFFFF)))
        for reg in (regs.REG_INT_ACKED, regs.REG_INT_ENABLE):
            if rng.random() < 0.2:
                d.w32(reg, rng.getrandbits(32))
        d.ring()
    d.bring_up()
    h = d.tx(b"alive")
    assert d.used(TX) == [Used(h, 5, OK)]
    assert drain(d, 5, 5) == b"alive"


def test_constructor_checks():
    mem = GuestMemory(bytearray(4096))
    with pytest.raises(ValueError):
        FifoDevice(bytearray(100), mem)
    with pytest.raises(ValueError):
        FifoDevice(bytearray(regs.BAR2_SIZE), mem, fifo_depth=0)


# ---- doorbell suppression (REG_NO_NOTIFY) ----

def test_no_notify_is_clear_between_doorbells():
    d = Driver()
    assert d.r32(regs.REG_FEATURES) & regs.FEAT_NO_NOTIFY
    assert d.r32(regs.REG_NO_NOTIFY) == 0
    d.tx(b"abc")
    assert d.r32(regs.REG_NO_NOTIFY) == 0


def test_a_post_seen_no_notify_needs_no_doorbell():
    """A driver posting while the device handles a doorbell sees NO_NOTIFY = 1 and does not
    ring; the device finds the post before it stops (datasheet 4, "Doorbell suppression")."""
    d = Driver()
    seen = []
    later = d.alloc(4)
    d.poke(later, b"more")
    real_view = d.mem.view

    def view(gpa, n):
        # the device is moving the first request's bytes: the "driver" posts another now
        if not seen:
            seen.append(d.r32(regs.REG_NO_NOTIFY))
            d.post(regs.QUEUE_TX, [(later, 4)], ring=False)
        return real_view(gpa, n)

    d.mem.view = view
    d.tx(b"first")                                   # one doorbell
    assert seen == [1]
    assert [u.len for u in d.used(regs.QUEUE_TX)] == [5, 4]
    assert d.r32(regs.REG_NO_NOTIFY) == 0
    assert d.r64(regs.REG_STAT_DOORBELLS) == 2 + 1  # bring-up's two, then one
    head, gpa = d.rx(9)
    assert d.peek(gpa, 9) == b"firstmore"


def test_a_runaway_avail_idx_is_not_rechecked():
    d = Driver()
    d.w32(regs.qctl(TX, regs.QCTL_AVAIL_IDX), 0x80000000)
    d.ring()
    assert d.r32(regs.REG_ERR_COUNT) == 1           # reported once: the device stopped
    assert d.r32(regs.REG_NO_NOTIFY) == 0


def test_coalescing_off_sends_a_message_per_used_entry():
    d = Driver()
    d.dev.coalesce = False
    d.tx(b"1")
    d.tx(b"2")                                      # TX_DONE still pending: sent anyway
    assert d.vectors == [regs.VEC_QUEUE] * 2
    assert d.pending_causes() == regs.INT_TX_DONE | regs.INT_DATA_AVAIL   # flipped once
    d.vectors.clear()
    d.rx(1, ring=False)
    d.rx(1, ring=False)
    d.ring()                                        # two used entries in one step
    assert d.vectors == [regs.VEC_QUEUE] * 2
    assert d.r64(regs.REG_STAT_IRQS) == 4
    d.ack()
    d.dev.coalesce = True
    d.vectors.clear()
    d.tx(b"3", ring=False)
    d.tx(b"4", ring=False)
    d.ring()                                        # one step, one message
    assert d.vectors == [regs.VEC_QUEUE]


# ---- cut-through (loopback): a waiting reader takes a waiting writer's bytes directly ----

def test_cut_through_reader_takes_writers_bytes_beyond_the_fifo_depth():
    d = Driver(depth=16)
    head, gpa = d.rx(100)
    data = bytes(range(100))
    t = d.tx(data)
    assert d.used(regs.QUEUE_RX) == [Used(head, 100, regs.ST_OK)]
    assert d.used(regs.QUEUE_TX) == [Used(t, 100, regs.ST_OK)]
    assert d.peek(gpa, 100) == data
    assert d.r32(regs.REG_RX_LEVEL) == 0 and d.r32(regs.REG_TX_SPACE) == 16
    assert d.r64(regs.REG_STAT_TX_BYTES) == d.r64(regs.REG_STAT_RX_BYTES) == 100


def test_cut_through_spans_writers_in_order():
    d = Driver(depth=16)
    h1, g1 = d.rx(50, seg=7)
    t1 = d.tx(b"a" * 30, seg=11, ring=False)
    t2 = d.tx(b"b" * 30, ring=False)
    d.ring()
    assert d.used(regs.QUEUE_RX) == [Used(h1, 50, regs.ST_OK)]
    assert d.peek(g1, 50) == b"a" * 30 + b"b" * 20
    # t2's last 10 bytes went into the FIFO in the same step
    assert d.used(regs.QUEUE_TX) == [Used(t1, 30, regs.ST_OK), Used(t2, 30, regs.ST_OK)]
    assert d.r32(regs.REG_RX_LEVEL) == 10
    h2, g2 = d.rx(64)
    assert d.used(regs.QUEUE_RX) == [Used(h2, 10, regs.ST_OK)]
    assert d.peek(g2, 10) == b"b" * 10

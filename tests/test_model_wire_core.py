"""FifoDevice wired to the host (FEAT_HOST_WIRE), with fake memory: host bytes into the RX FIFO,
guest TX out of the TX FIFO, flow control both ways, interrupts and counters.  No sockets."""

from __future__ import annotations

import random

import pytest

from device import regs
from device.core import FEATURES, WIRED_FEATURES
from model_driver import Driver, Used, sha, split

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
OK = regs.ST_OK
DEPTH = 4096


def wired(depth: int = DEPTH, **kw) -> Driver:
    return Driver(depth=depth, host_wire=True, **kw)


def host_read(d: Driver, n: int) -> bytes:
    buf = bytearray(n)
    got = d.dev.host_read_into(buf)
    return bytes(buf[:got])


def test_features_and_registers():
    d = wired()
    assert d.r32(regs.REG_FEATURES) == WIRED_FEATURES
    assert WIRED_FEATURES & regs.FEAT_HOST_WIRE and not WIRED_FEATURES & regs.FEAT_LOOPBACK
    assert not FEATURES & regs.FEAT_HOST_WIRE
    assert d.r32(regs.REG_FIFO_DEPTH) == DEPTH
    assert (d.r32(regs.REG_RX_LEVEL), d.r32(regs.REG_TX_SPACE)) == (0, DEPTH)
    assert d.dev.host_rx_space() == DEPTH and d.dev.host_tx_pending() == 0


def test_loopback_device_refuses_host_calls():
    d = Driver(depth=DEPTH)
    assert d.r32(regs.REG_FEATURES) == FEATURES
    for call in (lambda: d.dev.host_write(b"x"), d.dev.host_rx_space, d.dev.host_tx_pending,
                 lambda: d.dev.host_read_into(bytearray(1)), lambda: d.dev.host_tx_commit(1)):
        with pytest.raises(RuntimeError, match="loopback"):
            call()
    d.ring()
    assert d.wakes == 0                                 # never woken: no wire


def test_host_bytes_complete_a_pending_read():
    d = wired()
    head, gpa = d.rx(100, seg=32)
    assert d.used(RX) == [] and d.dev.pending(RX) == [head]
    d.ack()
    d.vectors.clear()
    assert d.dev.host_write(b"hello, guest") == 12
    assert d.used(RX) == [Used(head, 12, OK)]
    assert d.peek(gpa, 12) == b"hello, guest" and d.peek(gpa + 12, 1) == b"\xEE"
    assert d.pending_causes() == regs.INT_RX_DONE       # taken at once: no DATA_AVAIL
    assert d.vectors == [regs.VEC_QUEUE]
    assert d.r32(regs.REG_RX_LEVEL) == 0
    assert d.r64(regs.REG_STAT_RX_BYTES) == 12 and d.dev.host_bytes_in == 12


def test_host_bytes_without_a_read_raise_data_avail():
    d = wired()
    d.ack()
    assert d.dev.host_write(b"abc") == 3
    assert d.r32(regs.REG_RX_LEVEL) == 3 and d.r32(regs.REG_TX_SPACE) == DEPTH
    assert d.pending_causes() == regs.INT_DATA_AVAIL and d.vectors == [regs.VEC_QUEUE]
    assert d.dev.host_write(b"de") == 2                 # still pending: not raised again
    assert d.vectors == [regs.VEC_QUEUE] and d.r32(regs.REG_RX_LEVEL) == 5
    head, gpa = d.rx(64)
    assert d.used(RX) == [Used(head, 5, OK)] and d.peek(gpa, 5) == b"abcde"
    # RX never sees the guest's own TX in wired mode
    d.tx(b"out")
    head, _ = d.rx(8, flags=regs.DESC_F_NOWAIT)
    assert d.used(RX) == [Used(head, 0, OK)]
    assert d.r32(regs.REG_RX_LEVEL) == 0 and d.r32(regs.REG_TX_SPACE) == DEPTH - 3


def test_host_write_stops_when_rx_fifo_full_and_resumes_after_reads():
    d = wired()
    rng = random.Random(7)
    stream = rng.randbytes(5 * DEPTH + 123)             # several times the depth
    sent = 0
    got = bytearray()
    buf = d.alloc(3000)
    while len(got) < len(stream):
        if sent < len(stream):
            n = d.dev.host_write(stream[sent:sent + rng.randint(1, 3 * DEPTH)])
            sent += n
            assert d.r32(regs.REG_RX_LEVEL) == d.dev.fifo_level <= DEPTH
            # full: nothing more is taken, nothing is lost
            if d.dev.fifo_level == DEPTH:
                assert d.dev.host_rx_space() == 0
                assert d.dev.host_write(stream[sent:sent + 10]) == 0
        head = d.post(RX, split(buf, rng.randint(1, 3000), 512))
        [u] = d.used(RX)
        assert u.id == head and u.status == OK and u.len > 0
        got += d.peek(buf, u.len)
        assert d.dev.host_rx_space() == DEPTH - d.dev.fifo_level
    assert sha(got) == sha(stream) and sent == len(stream)
    assert d.dev.host_bytes_in == len(stream) == d.r64(regs.REG_STAT_RX_BYTES)


def test_host_write_fills_pending_reads_beyond_the_depth():
    """Pending RX requests take host bytes as they come: one host_write may take more than
    the depth when reads are waiting."""
    d = wired()
    reqs = [d.rx(DEPTH) for _ in range(3)]
    data = bytes(range(256)) * (4 * DEPTH // 256)
    n = d.dev.host_write(data)
    assert n == 4 * DEPTH                               # 3 reads + a full FIFO
    used = d.used(RX)
    assert used == [Used(h, DEPTH, OK) for h, _ in reqs]
    assert b"".join(d.peek(g, DEPTH) for _, g in reqs) == data[:3 * DEPTH]
    assert d.r32(regs.REG_RX_LEVEL) == DEPTH and d.dev.host_rx_space() == 0


def test_host_write_refused_until_ready_and_reset_empties_both_fifos():
    d = wired(enable=False)
    assert d.dev.host_rx_space() == 0 and d.dev.host_write(b"early") == 0
    d.bring_up()
    assert d.dev.host_write(b"in") == 2
    d.tx(b"out")
    assert (d.dev.fifo_level, d.dev.tx_fifo_level) == (2, 3)
    d.w32(regs.REG_CONTROL, 0)
    d.ring()                                            # disabled: host bytes refused again
    assert d.dev.host_write(b"x") == 0 and d.dev.host_rx_space() == 0
    assert host_read(d, 10) == b"out"                   # the TX FIFO still drains
    d.bring_up()
    assert (d.dev.fifo_level, d.dev.tx_fifo_level) == (0, 0)
    assert (d.r32(regs.REG_RX_LEVEL), d.r32(regs.REG_TX_SPACE)) == (0, DEPTH)


def test_guest_tx_comes_out_to_the_host_in_order():
    d = wired()
    d.ack()
    chunks = [bytes([i]) * (100 + i) for i in range(20)]
    heads = [d.tx(c, seg=64) for c in chunks]
    total = sum(map(len, chunks))
    assert d.used(TX) == [Used(h, len(c), OK) for h, c in zip(heads, chunks, strict=True)]
    assert d.r32(regs.REG_TX_SPACE) == DEPTH - total and d.r32(regs.REG_RX_LEVEL) == 0
    assert d.dev.host_tx_pending() == total
    d.vectors.clear()
    d.ack()
    out = host_read(d, 1000) + host_read(d, 10 ** 6)
    assert out == b"".join(chunks)
    assert d.r32(regs.REG_TX_SPACE) == DEPTH and d.dev.host_bytes_out == total
    assert d.pending_causes() == regs.INT_SPACE_AVAIL and d.vectors == [regs.VEC_QUEUE]
    assert host_read(d, 10) == b""


def test_peek_and_commit_take_only_what_the_host_took():
    d = wired(depth=16)
    d.tx(b"0123456789")
    assert d.dev.host_tx_commit(0) == 0
    d.dev.host_tx_commit(8)
    d.tx(b"abcdefghij")                                 # wraps around the 16-byte ring
    out = bytearray()
    while d.dev.host_tx_pending():
        with d.dev.host_tx_peek(5) as view:
            assert 0 < len(view) <= 5 and view.readonly
            take = max(1, len(view) - 1)                # a short send: keep the rest
            out += view[:take]
        assert d.dev.host_tx_commit(take) == take
    assert bytes(out) == b"89abcdefghij"


def test_tx_larger_than_depth_completes_only_after_host_drains():
    d = wired(depth=1024)
    data = random.Random(3).randbytes(5000)
    head = d.tx(data, seg=300)
    assert d.used(TX) == [] and d.dev.pending(TX) == [head]
    assert d.r32(regs.REG_TX_SPACE) == 0 and d.dev.host_tx_pending() == 1024
    d.ring()                                            # nothing drains: still waiting
    assert d.used(TX) == []
    tail = d.tx(b"behind", ring=True)                   # waits behind it
    assert d.dev.pending(TX) == [head, tail]
    out = bytearray()
    while len(out) + 700 < 5000 - 1024:                 # the request is not all in yet
        out += host_read(d, 700)
        assert d.used(TX) == []                         # TX FIFO refilled from the request
        assert d.r32(regs.REG_TX_SPACE) == 0
    out += host_read(d, 700)                            # now all 5000 fit: it completes
    assert d.used(TX) == [Used(head, 5000, OK), Used(tail, 6, OK)]   # the tail fits at once
    assert d.dev.pending(TX) == []
    out += host_read(d, 10 ** 6)
    assert bytes(out) == data + b"behind"
    assert d.r64(regs.REG_STAT_TX_BYTES) == 5006 == d.dev.host_bytes_out
    assert d.r32(regs.REG_TX_SPACE) == 1024


def test_nowait_tx_with_full_tx_fifo_moves_nothing():
    d = wired(depth=8)
    d.tx(b"12345678")
    head = d.tx(b"x", flags=regs.DESC_F_NOWAIT)
    assert d.used(TX)[-1] == Used(head, 0, OK)
    assert host_read(d, 100) == b"12345678"


def test_wake_host_after_every_wired_doorbell():
    d = wired()
    before = d.wakes
    d.ring()
    d.ring()
    assert d.wakes == before + 2


def test_loopback_unchanged_with_the_same_api():
    d = Driver(depth=DEPTH)
    head = d.tx(b"loop")
    assert d.used(TX) == [Used(head, 4, OK)]
    assert d.r32(regs.REG_RX_LEVEL) == 4 and d.r32(regs.REG_TX_SPACE) == DEPTH - 4
    assert d.dev.fifo_level == d.dev.tx_fifo_level == 4
    h, gpa = d.rx(10)
    assert d.used(RX) == [Used(h, 4, OK)] and d.peek(gpa, 4) == b"loop"

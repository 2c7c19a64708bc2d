"""The host wire over real sockets: ``python -m device --socket PATH:WIREPATH`` with a fake QEMU
(ivshmem handshake, BAR2 from the shared-memory fd, doorbells through the eventfd) and a wire
client.  1 MiB each way through a 64 KiB FIFO, with flow control and nothing lost."""

from __future__ import annotations

import mmap
import os
import random
import select
import signal
import socket
import threading
import time

import pytest

from conftest import MODEL_RAM
from device import regs
from model_driver import RemoteDriver, Used, sha, split
from test_model_cli import model, wait_ready
from test_model_ivshmem import FakeQemu

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
DEPTH = 64 << 10
STREAM = 1 << 20
RAM = MODEL_RAM          # the size of the ram_file fixture (conftest.py)


class WireClient:
    """The host program on the wire, in threads: sends a whole stream at once, reads at its
    own pace.  Socket timeouts keep a failed test from hanging."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.sent_all = threading.Event()
        self.received = bytearray()
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def _run(self, fn, *args) -> None:
        def body():
            try:
                fn(*args)
            except BaseException as err:        # reported by join()
                self.error = err
        t = threading.Thread(target=body, daemon=True)
        t.start()
        self._threads.append(t)

    def send_all(self, data: bytes) -> None:
        def body():
            self.sock.sendall(data)
            self.sent_all.set()
        self._run(body)

    def read(self, n: int, chunk: int = 4096, pause_every: int = 16) -> None:
        """Read ``n`` bytes slowly: ``chunk`` at a time, a short pause every few reads."""
        def body():
            i = 0
            while len(self.received) < n:
                data = self.sock.recv(min(chunk, n - len(self.received)))
                assert data, "wire closed early"
                self.received += data
                i += 1
                if i % pause_every == 0:
                    time.sleep(0.002)
        self._run(body)

    def join(self, timeout: float = 30) -> None:
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), "wire client thread hung"
        self._threads.clear()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wired_model(tmp_path, ram_file):
    """A model with a loopback device and a wired one, a fake QEMU on the wired one, and a
    driver on its BAR2.  Yields (driver, vector fds, wire path, model log, fixture dict)."""
    lb, dev, wire = (str(tmp_path / n) for n in ("lb.sock", "dev.sock", "dev.wire"))
    log = tmp_path / "model.log"
    with model("--socket", lb, "--socket", f"{dev}:{wire}", "--ram-path", ram_file,
               "--ram-size", "64M", "--fifo-depth", "64K", "--debug", "--log",
               str(log)) as proc:
        assert wait_ready(proc) == "READY\n"
        assert all(os.path.exists(p) for p in (lb, dev, wire))
        qemu = FakeQemu(dev)
        hs = qemu.handshake()
        bar2 = mmap.mmap(hs["shm"], regs.BAR2_SIZE)
        fd = os.open(ram_file, os.O_RDWR)
        ram = mmap.mmap(fd, RAM)
        os.close(fd)
        try:
            d = RemoteDriver(bar2, ram, hs["peer0"][regs.DOORBELL_VECTOR])
            yield {"d": d, "own": hs["own"], "wire": wire, "log": log, "proc": proc}
        finally:
            qemu.close()
            bar2.close()
            ram.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr.read()
    assert not any(os.path.exists(p) for p in (lb, dev, wire))


def test_loopback_and_wired_features(tmp_path, ram_file):
    lb, dev, wire = (str(tmp_path / n) for n in ("lb.sock", "dev.sock", "dev.wire"))
    with model("--socket", lb, "--socket", f"{dev}:{wire}", "--ram-path", ram_file,
               "--ram-size", "64M") as proc:
        assert wait_ready(proc) == "READY\n"
        feats = {}
        for path in (lb, dev):
            q = FakeQemu(path)
            try:
                with mmap.mmap(q.handshake()["shm"], regs.BAR2_SIZE) as bar2:
                    feats[path] = int.from_bytes(bar2[regs.REG_FEATURES:][:4], "little")
            finally:
                q.close()
        assert feats[lb] & regs.FEAT_LOOPBACK and not feats[lb] & regs.FEAT_HOST_WIRE
        assert feats[dev] & regs.FEAT_HOST_WIRE and not feats[dev] & regs.FEAT_LOOPBACK
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not any(os.path.exists(p) for p in (lb, dev, wire))


def test_host_to_guest_stream_with_flow_control(wired_model):
    d, own = wired_model["d"], wired_model["own"]
    data = random.Random(1).randbytes(STREAM)
    for fd in own:                                      # forget bring-up's interrupts
        while select.select([fd], [], [], 0)[0]:
            os.eventfd_read(fd)
    d.ack()
    client = WireClient(wired_model["wire"])
    try:
        client.send_all(data)                           # everything at once
        # no read posted: the RX FIFO fills, DATA_AVAIL is raised with no doorbell, and the
        # wire stops taking bytes -- the client's sendall() blocks, nothing is dropped
        d.wait(lambda: d.r32(regs.REG_RX_LEVEL) == DEPTH, "RX FIFO full")
        assert select.select([own[regs.VEC_QUEUE]], [], [], 5)[0]
        assert d.pending_causes() & regs.INT_DATA_AVAIL
        time.sleep(0.2)
        assert d.r32(regs.REG_RX_LEVEL) == DEPTH and not client.sent_all.is_set()
        # the guest reads slowly, 8 KiB at a time in 4 KiB pages
        got = bytearray()
        buf = d.alloc(8192, align=4096)
        reads = 0
        while len(got) < STREAM:
            head = d.post(RX, split(buf, 8192, 4096))
            [u] = d.wait_used(RX)
            assert u.id == head and u.status == regs.ST_OK and 0 < u.len <= 8192
            got += d.peek(buf, u.len)
            reads += 1
            if reads % 32 == 0:
                time.sleep(0.01)
        assert len(got) == STREAM and sha(got) == sha(data)
        assert client.sent_all.wait(5)
        client.join()
        assert d.r32(regs.REG_RX_LEVEL) == 0
        assert d.r64(regs.REG_STAT_RX_BYTES) == STREAM
    finally:
        client.close()
    log = wired_model["log"].read_text()
    assert "wire in:" in log and "host wire listening on" in log


def test_guest_to_host_stream_with_backpressure_and_reconnect(wired_model):
    d = wired_model["d"]
    data = random.Random(2).randbytes(STREAM)
    req = 256 << 10                                     # each request 4x the FIFO depth
    # no client yet: TX bytes wait in the TX FIFO, TX requests wait behind them
    buf = d.alloc(STREAM, align=4096)
    d.poke(buf, data)
    heads = [d.post(TX, split(buf + i, req, 4096)) for i in range(0, STREAM, req)]
    d.wait(lambda: d.r32(regs.REG_TX_SPACE) == 0, "TX FIFO full")
    time.sleep(0.2)
    assert d.used(TX) == [] and d.r32(regs.REG_TX_SPACE) == 0
    assert d.r64(regs.REG_STAT_TX_BYTES) == DEPTH
    # a client that reads slowly gets all of it, in order; the requests complete as it drains
    client = WireClient(wired_model["wire"])
    try:
        # the socket holds only so much: with nobody reading, TX still waits
        time.sleep(0.2)
        used = d.used(TX)
        assert len(used) < len(heads) and d.r32(regs.REG_TX_SPACE) == 0
        client.read(STREAM)
        used += d.wait_used(TX, len(heads) - len(used))
        assert used == [Used(h, req, regs.ST_OK) for h in heads]
        client.join()
        assert sha(client.received) == sha(data)
        assert d.r32(regs.REG_TX_SPACE) == DEPTH
    finally:
        client.close()
    # client gone: new TX bytes stay queued for the next client
    d.wait(lambda: "wire client #1 gone" in wired_model["log"].read_text(), "disconnect")
    tail = b"for the next client " * 500
    d.poke(buf, tail)
    head = d.post(TX, [(buf, len(tail))])
    assert d.wait_used(TX) == [Used(head, len(tail), regs.ST_OK)]
    time.sleep(0.1)
    assert d.r32(regs.REG_TX_SPACE) == DEPTH - len(tail)
    second = WireClient(wired_model["wire"])
    try:
        # one client at a time: a third is refused while the second is connected
        second.read(len(tail))
        second.join()
        assert bytes(second.received) == tail
        third = socket.socket(socket.AF_UNIX)
        third.settimeout(5)
        third.connect(wired_model["wire"])
        assert third.recv(10) == b""
        third.close()
        d.wait(lambda: d.r32(regs.REG_TX_SPACE) == DEPTH, "TX FIFO drained")
    finally:
        second.close()
    log = wired_model["log"].read_text()
    assert "refusing a second host wire client" in log and "wire out:" in log


def test_cli_rejects_bad_wire_specs(tmp_path, ram_file):
    for spec in (f"{tmp_path}/a.sock:", f":{tmp_path}/a.wire"):
        with model("--socket", spec, "--ram-path", ram_file,
                   "--ram-size", "64M") as proc:
            assert proc.wait(10) == 2
            assert "PATH:WIREPATH" in proc.stderr.read()
    same = str(tmp_path / "x.sock")
    with model("--socket", f"{same}:{same}", "--ram-path", ram_file,
               "--ram-size", "64M") as proc:
        assert proc.wait(10) == 2
        assert "given twice" in proc.stderr.read()

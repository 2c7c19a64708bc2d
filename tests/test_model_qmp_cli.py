"""``python -m device ... --qmp Q`` as the harness will run it: QMPClient and qmp-shell against
the real process; faults fired through a fake QEMU's doorbells; peers vanishing at any point."""

from __future__ import annotations

import asyncio
import mmap
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from conftest import MODEL_RAM
from device import regs
from device.qmp import package
from model_driver import RemoteDriver, Used
from test_model_cli import ROOT, model, wait_ready
from test_model_ivshmem import FakeQemu, readable

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
RAM = MODEL_RAM          # the size of the ram_file fixture (conftest.py)


def stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    return err


def test_cli_qmp_query_arm_list_clear(tmp_path, ram_file):
    sock, wired, wire, q = (str(tmp_path / n) for n in ("a.sock", "b.sock", "b.wire", "q.sock"))
    with model("--socket", sock, "--socket", f"{wired}:{wire}", "--ram-path", ram_file,
               "--ram-size", "64M", "--fifo-depth", "4K", "--qmp", q) as proc:
        assert wait_ready(proc) == "READY\n"

        async def session():
            c = QMPClient("cli-test")
            await c.connect(q)
            try:
                names = {x["name"] for x in await c.execute("query-commands")}
                assert {"fault-dma-error", "fault-lost-irq", "fault-spurious-irq",
                        "fault-stall", "fault-resume", "fault-slow", "fault-corrupt",
                        "fault-reset", "fault-hostile", "fault-flood", "fault-list",
                        "fault-clear", "query-fifolab", "query-status",
                        "query-version"} <= names
                st = await c.execute("query-status")
                assert [(d["device"], d["socket"], d["peer"]) for d in st["devices"]] == \
                    [(0, sock, None), (1, wired, None)]
                f = await c.execute("fault-dma-error", {"queue": "rx", "count": 3,
                                                        "probability": 0.5, "seed": 42})
                g = await c.execute("fault-hostile", {"kind": "duplicate", "device": 1})
                listed = await c.execute("fault-list")
                assert listed == [{"id": f["id"], "kind": "dma-error", "hook": "fetch",
                                   "queue": "rx", "remaining": 3, "probability": 0.5,
                                   "seed": 42, "seen": 0, "fired": 0}]
                assert g["id"] != f["id"]
                assert await c.execute("fault-clear", {"id": f["id"]}) == \
                    {"cleared": [f["id"]]}
                assert await c.execute("fault-list") == []
                with pytest.raises(ExecuteError, match="no armed fault"):
                    await c.execute("fault-clear", {"id": f["id"]})
                # a flood on the wired device waits for READY, is listed, can be cleared
                fl = await c.execute("fault-flood", {"device": 1})
                assert (fl["offered"], fl["accepted"]) == (4 * 4096, 0)
                info = await c.execute("query-fifolab", {"device": 1})
                assert info["mode"] == "wired" and info["host_wire"]["flood"]["id"] == fl["id"]
                assert info["host_wire"]["connected"] is False
                assert [x["id"] for x in await c.execute("fault-list", {"device": 1})] == \
                    [g["id"], fl["id"]]
                assert await c.execute("fault-clear", {"device": 1}) == \
                    {"cleared": [g["id"], fl["id"]]}
                with pytest.raises(ExecuteError) as info:
                    await c.execute("fault-list", {"device": 2})
                assert info.value.error_class == "DeviceNotFound"
            finally:
                await c.disconnect()

        asyncio.run(asyncio.wait_for(session(), 20))
        with socket.socket(socket.AF_UNIX) as lingering:    # still connected at SIGTERM
            lingering.settimeout(5)
            lingering.connect(q)
            assert lingering.recv(4096).startswith(b'{"QMP"')
            lingering.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-')
            assert lingering.recv(4096) == b'{"return": {}}\r\n'
            stop(proc)
            assert lingering.recv(4096) == b""
    assert not any(os.path.exists(p) for p in (sock, wired, wire, q))


def test_qmp_shell_interoperates(tmp_path, ram_file):
    sock, q = str(tmp_path / "a.sock"), str(tmp_path / "q.sock")
    with model("--socket", sock, "--ram-path", ram_file, "--ram-size", "64M",
               "--qmp", q) as proc:
        assert wait_ready(proc) == "READY\n"
        shell = subprocess.run(
            [sys.executable, "-m", "qemu.qmp.qmp_shell", q], cwd=ROOT, timeout=30,
            input="query-version\nfault-corrupt queue=tx bits=4 probability=0.25 seed=3\n"
                  "fault-list\nfault-nope\nfault-clear\n",
            capture_output=True, text=True)
        out = shell.stdout
        assert shell.returncode == 0, shell.stderr
        assert "Connected to QEMU 1.0.0" in out
        assert f'"package": "{package()}"' in out and package().startswith("fifolab-model ")
        assert '"kind": "corrupt"' in out and '"probability": 0.25' in out and \
            '"bits": 4' in out
        assert '"class": "CommandNotFound"' in out
        assert '"cleared": [1]' in out
        stop(proc)


class Monitor:
    """qemu.qmp's synchronous client, with QEMUMachine-style event_wait."""

    def __init__(self, path: str) -> None:
        self.qmp = QEMUMonitorProtocol(path)
        self.qmp.connect()

    def __call__(self, cmd: str, **args):
        reply = self.qmp.cmd_raw(cmd, args)
        assert "return" in reply, reply
        return reply["return"]

    def event_wait(self, name: str, timeout: float = 5.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {name} {match}"
            ev = self.qmp.pull_event(wait=left)
            if ev and ev["event"] == name and all(ev["data"].get(k) == v
                                                  for k, v in match.items()):
                return ev

    def close(self) -> None:
        self.qmp.close()


def test_faults_through_a_fake_qemu(tmp_path, ram_file):
    """The model process, a fake QEMU with a driver on its BAR2, and the monitor: DMA error,
    stall/resume with remembered doorbells, slow completions on real timers, lost and spurious
    interrupts on the client's eventfds, a device reset."""
    sock, q = str(tmp_path / "a.sock"), str(tmp_path / "q.sock")
    with model("--socket", sock, "--ram-path", ram_file, "--ram-size", "64M",
               "--qmp", q) as proc:
        assert wait_ready(proc) == "READY\n"
        qemu = FakeQemu(sock)
        hs = qemu.handshake()
        bar2 = mmap.mmap(hs["shm"], regs.BAR2_SIZE)
        fd = os.open(ram_file, os.O_RDWR)
        ram = mmap.mmap(fd, RAM)
        os.close(fd)
        mon = Monitor(q)
        irq0 = hs["own"][regs.VEC_QUEUE]
        try:
            d = RemoteDriver(bar2, ram, hs["peer0"][regs.DOORBELL_VECTOR])
            assert mon("query-status")["devices"][0]["peer"] == 1
            mon.event_wait("STATE_CHANGE", state="ready")

            # DMA error on the next TX
            f = mon("fault-dma-error", queue="tx")
            gpa = d.alloc(32)
            head = d.post(TX, [(gpa, 32)])
            assert d.wait_used(TX) == [Used(head, 0, regs.ST_DMA_ERROR)]
            assert d.r32(regs.REG_ERR_CODE) == regs.ERR_DMA_RANGE
            assert d.r64(regs.REG_ERR_ADDR) == gpa
            assert mon.event_wait("FAULT_FIRED")["data"]["id"] == f["id"]
            ev = mon.event_wait("DMA_ERROR")
            assert ev["data"] == {"device": 0, "queue": "tx", "head": head, "addr": gpa,
                                  "code": regs.ERR_DMA_RANGE, "injected": True}
            d.ack()

            # stall: doorbells are remembered, processed at resume
            mon("fault-stall")
            d.tx(b"while stalled", ring=False)
            for _ in range(3):
                os.eventfd_write(hs["peer0"][0], 1)
            time.sleep(0.05)
            assert d.used(TX) == []
            assert mon("query-fifolab")["stalled_doorbells"] >= 1
            assert mon("fault-resume")["doorbells"] == 3
            assert len(d.wait_used(TX)) == 1
            d._rings = d.r64(regs.REG_STAT_DOORBELLS)

            # slow: 50 ms per request, on the service's timers
            mon("fault-slow", latency_us=50_000, queue="tx")
            t0 = time.monotonic()
            head = d.tx(b"slowly")
            assert d.wait_used(TX) == [Used(head, 6, regs.ST_OK)]
            assert time.monotonic() - t0 >= 0.045

            # lost interrupt: INT_RAISED flips, the eventfd stays quiet; then a spurious one
            while readable(irq0):
                os.eventfd_read(irq0)
            d.ack()
            mon("fault-lost-irq", vector=0)
            d.tx(b"quiet")
            d.wait_used(TX)
            assert d.pending_causes() & regs.INT_TX_DONE
            assert not readable(irq0, 0.1)
            mon("fault-spurious-irq", vector=0)
            assert readable(irq0, 2.0) and os.eventfd_read(irq0) == 1

            # device-initiated reset
            count = d.r32(regs.REG_RESET_COUNT)
            mon("fault-reset")
            assert mon.event_wait("DEVICE_RESET")["data"]["initiator"] == "device"
            assert d.r32(regs.REG_RESET_COUNT) == count + 1
            assert mon("query-fifolab")["state"] == "need-reset"
            d.bring_up()
            assert mon("query-fifolab")["state"] == "ready"
        finally:
            mon.close()
            qemu.close()
            bar2.close()
            ram.close()
        stop(proc)


def test_model_survives_peers_vanishing_at_any_point(tmp_path, ram_file):
    sock, wired, wire, q = (str(tmp_path / n) for n in ("a.sock", "b.sock", "b.wire", "q.sock"))
    log = tmp_path / "model.log"
    with model("--socket", sock, "--socket", f"{wired}:{wire}", "--ram-path", ram_file,
               "--ram-size", "64M", "--qmp", q, "--log", str(log)) as proc:
        assert wait_ready(proc) == "READY\n"
        # ivshmem: gone before reading anything, after a few messages, after sending junk
        for path in (sock, wired):
            for step in range(4):
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(path)
                    try:                    # (a refused second client reads EOF here)
                        for _ in range(step * 2):
                            _, fds, _, _ = socket.recv_fds(s, 8, 1)
                            for fd in fds:
                                os.close(fd)
                        if step == 3:
                            s.sendall(os.urandom(1000))
                    except (BrokenPipeError, ConnectionResetError):
                        pass
        # the wire: junk in, gone; QMP: junk, half a message, gone without a word
        for _ in range(3):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(wire)
                s.sendall(b"junk")
        for greet, data in ((False, b"{}"), (True, b""), (True, b"\x00\xff garbage {{{"),
                            (True, b'{"execute": "qmp_capa'),
                            (True, b'{"execute": "qmp_capabilities"}{"execute": "query-st')):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(q)
                if greet:
                    assert s.recv(4096).startswith(b'{"QMP"')
                s.sendall(data)
                if data.startswith(b"\x00"):
                    assert b"JSON parse error" in s.recv(4096)
        # still serving everything
        qemu = FakeQemu(sock)
        try:
            hs = qemu.handshake()
            assert hs["id"] >= 2
            mon = Monitor(q)
            try:
                st = mon("query-status")
                assert st["running"] and st["devices"][0]["peer"] == hs["id"]
            finally:
                mon.close()
        finally:
            qemu.close()
        assert proc.poll() is None
        stop(proc)
    text = log.read_text()
    assert "gone" in text and "disconnected" in text and "Traceback" not in text
    assert "bad input: JSON parse error" in text

"""The ivshmem transport, against a fake QEMU client on a plain socket (no VM)."""

from __future__ import annotations

import asyncio
import mmap
import os
import select
import socket
import struct
import time
from contextlib import contextmanager

import pytest

from device import regs
from device.core import FifoDevice
from device.errors import SocketInUseError
from device.guestmem import GuestMemory
from device.ivshmem import IvshmemServer, State
from model_driver import Used

N = regs.NUM_VECTORS
_Q = struct.Struct("<q")


class FakeQemu:
    """Plays QEMU's side of the protocol: reads the connect sequence, keeps the fds."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.fds: list[int] = []

    def recv_msg(self) -> tuple[int, int | None]:
        data, fds, _, _ = socket.recv_fds(self.sock, 8, 1)
        while data and len(data) < 8:           # a stream: tolerate a split message
            more, more_fds, _, _ = socket.recv_fds(self.sock, 8 - len(data), 1)
            assert more, "EOF inside a message"
            data += more
            fds += more_fds
        if not data:
            raise EOFError
        assert len(fds) <= 1
        self.fds += fds
        return _Q.unpack(data)[0], (fds[0] if fds else None)

    def handshake(self) -> dict:
        msgs = [self.recv_msg() for _ in range(3 + 2 * N)]
        return {"msgs": msgs, "id": msgs[1][0], "shm": msgs[2][1],
                "peer0": [fd for _, fd in msgs[3:3 + N]],
                "own": [fd for _, fd in msgs[3 + N:]]}

    def close(self) -> None:
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


async def until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@contextmanager
def device_on(path: str, ram: bytearray):
    """An IvshmemServer + FifoDevice wired as in device.service (not started)."""
    mem = GuestMemory(ram)
    srv = IvshmemServer(path, shm_size=regs.BAR2_SIZE, num_vectors=N)
    dev = FifoDevice(srv.shm, mem, 4096, peer_id=0, raise_vector=srv.raise_vector)
    srv.on_doorbell = dev.doorbell
    srv.on_connect = lambda peer: dev.power_on()
    dev.power_on()
    try:
        yield srv, dev
    finally:
        dev.close()
        srv.close()
        mem.close()


def r32(buf, off):
    return struct.unpack_from("<I", buf, off)[0]


def r64(buf, off):
    return struct.unpack_from("<Q", buf, off)[0]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_protocol_sequence_doorbell_and_vectors(tmp_path):
    path = str(tmp_path / "dev.sock")
    fds_before = open_fds()

    async def scenario():
        ram = bytearray(1 << 16)
        with device_on(path, ram) as (srv, dev):
            await srv.start()
            assert srv.state is State.LISTENING and os.path.exists(path)
            q = await asyncio.to_thread(FakeQemu, path)
            try:
                hs = await asyncio.to_thread(q.handshake)
                values = [v for v, _ in hs["msgs"]]
                assert values == [0, 1, -1] + [0] * N + [1] * N
                assert [fd is None for _, fd in hs["msgs"]] == [True, True] + [False] * (1 + 2 * N)
                assert srv.client_id == 1
                shm_fd = hs["shm"]
                assert os.fstat(shm_fd).st_size == regs.BAR2_SIZE
                bar2 = mmap.mmap(shm_fd, regs.BAR2_SIZE)
                try:
                    assert r32(bar2, regs.REG_MAGIC) == regs.MAGIC_VALUE
                    assert r32(bar2, regs.REG_DEVICE_PEER) == 0
                    # ring on each of our vectors: each is a doorbell
                    for v, fd in enumerate(hs["peer0"]):
                        os.eventfd_write(fd, 1)
                        await until(lambda v=v: r64(bar2, regs.REG_STAT_DOORBELLS) == v + 1)
                    # raise_vector reaches exactly the client's eventfd v
                    for v in range(N):
                        srv.raise_vector(v)
                        assert readable(hs["own"][v], 1.0)
                        assert [readable(fd) for fd in hs["own"]] == [i == v for i in range(N)]
                        assert os.eventfd_read(hs["own"][v]) == 1
                    await loopback_via_eventfds(bar2, hs, ram)
                finally:
                    bar2.close()
            finally:
                q.close()
            await until(lambda: srv.client_id is None)
        assert not os.path.exists(path)

    asyncio.run(scenario())
    assert open_fds() == fds_before


async def loopback_via_eventfds(bar2, hs, ram: bytearray):
    """A TX and an RX posted through the shared mapping, rung through the eventfd."""
    ram[0x100:0x105] = b"hello"
    for q, addr in ((regs.QUEUE_TX, 0x100), (regs.QUEUE_RX, 0x200)):
        regs.desc_layout.pack_into(bar2, regs.desc_offset(q, 0), addr, 5, 0, 0)
        struct.pack_into("<H", bar2, regs.avail_offset(q, 0), 0)
        struct.pack_into("<I", bar2, regs.qctl(q, regs.QCTL_AVAIL_IDX), 1)
    struct.pack_into("<I", bar2, regs.REG_INT_ENABLE, regs.INT_ALL)
    struct.pack_into("<I", bar2, regs.REG_CONTROL, regs.CTRL_ENABLE)
    os.eventfd_write(hs["peer0"][regs.DOORBELL_VECTOR], 1)
    own = hs["own"][regs.VEC_QUEUE]
    await until(lambda: readable(own))
    assert os.eventfd_read(own) == 1
    for q in (regs.QUEUE_TX, regs.QUEUE_RX):
        assert r32(bar2, regs.qctl(q, regs.QCTL_USED_IDX)) == 1
        uid, ulen, st, _ = regs.used_layout.unpack_from(bar2, regs.used_offset(q, 0))
        assert Used(uid, ulen, st) == Used(0, 5, regs.ST_OK)
    assert ram[0x200:0x205] == b"hello"
    assert r64(bar2, regs.REG_STAT_IRQS) == 1


def test_disconnect_reconnect_and_second_client_refused(tmp_path):
    path = str(tmp_path / "dev.sock")

    async def scenario():
        with device_on(path, bytearray(4096)) as (srv, dev):
            await srv.start()
            q1 = await asyncio.to_thread(FakeQemu, path)
            hs1 = await asyncio.to_thread(q1.handshake)
            assert hs1["id"] == 1
            os.eventfd_write(hs1["peer0"][0], 1)
            await until(lambda: r64(srv.shm, regs.REG_STAT_DOORBELLS) == 1)
            # a second client while one is live: closed at once
            q2 = await asyncio.to_thread(FakeQemu, path)
            with pytest.raises(EOFError):
                await asyncio.to_thread(q2.recv_msg)
            q2.close()
            assert srv.client_id == 1
            q1.close()
            await until(lambda: srv.client_id is None)
            srv.raise_vector(0)                 # no client: dropped, no error
            q3 = await asyncio.to_thread(FakeQemu, path)
            try:
                hs3 = await asyncio.to_thread(q3.handshake)
                assert hs3["id"] == 2 and [v for v, _ in hs3["msgs"][-N:]] == [2] * N
                # a new machine finds the device at power-on
                assert r64(srv.shm, regs.REG_STAT_DOORBELLS) == 0
                assert r32(srv.shm, regs.REG_MAGIC) == regs.MAGIC_VALUE
                os.eventfd_write(hs3["peer0"][1], 1)
                await until(lambda: r64(srv.shm, regs.REG_STAT_DOORBELLS) == 1)
                srv.raise_vector(1)
                assert readable(hs3["own"][1], 1.0)
            finally:
                q3.close()
            await until(lambda: srv.client_id is None)

    asyncio.run(scenario())


def test_socket_in_use_and_stale_socket(tmp_path):
    path = str(tmp_path / "dev.sock")

    async def scenario():
        with device_on(path, bytearray(4096)) as (srv, _):
            await srv.start()
            with device_on(path, bytearray(4096)) as (other, _):
                with pytest.raises(SocketInUseError, match="in use"):
                    await other.start()
            assert os.path.exists(path)         # the loser did not unlink it
        assert not os.path.exists(path)
        # a stale socket file (nobody listening) is replaced
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        with device_on(path, bytearray(4096)) as (srv, _):
            await srv.start()
            q = await asyncio.to_thread(FakeQemu, path)
            try:
                hs = await asyncio.to_thread(q.handshake)
                assert hs["id"] == 1
            finally:
                q.close()
        # a regular file is not taken over
        with open(path, "w"):
            pass
        with device_on(path, bytearray(4096)) as (srv, _):
            with pytest.raises(SocketInUseError, match="not a socket"):
                await srv.start()
        assert os.path.isfile(path)

    asyncio.run(scenario())

"""Glue: one FIFO peripheral = an :class:`IvshmemServer` + a :class:`FifoDevice` over its BAR2
(+ a :class:`HostWire` when the device is wired to the host).

:func:`serve` runs any number of them in one event loop, all sharing one guest RAM mapping,
prints ``READY`` once every socket (wire sockets included) listens, and returns when ``stop``
is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TextIO

from . import regs
from .core import FifoDevice
from .guestmem import GuestMemory, open_ram_file
from .ivshmem import SERVER_PEER_ID, IvshmemServer
from .wire import HostWire

__all__ = ["DeviceService", "serve", "LOGGER_NAME"]

LOGGER_NAME = "fifolab.device"


class DeviceService:
    """One device on one socket; wired to the host on ``wire_path`` if given."""

    def __init__(self, path: str, mem: GuestMemory, fifo_depth: int,
                 logger: logging.Logger | None = None, wire_path: str | None = None) -> None:
        self.path = path
        self.wire_path = wire_path
        self.wire: HostWire | None = None
        self.log = logger or logging.getLogger(LOGGER_NAME).getChild(
            os.path.basename(path).replace(".", "_"))
        self.server = IvshmemServer(path, shm_size=regs.BAR2_SIZE,
                                    num_vectors=regs.NUM_VECTORS, logger=self.log)
        try:
            self.core = FifoDevice(self.server.shm, mem, fifo_depth, peer_id=SERVER_PEER_ID,
                                   raise_vector=self.server.raise_vector, logger=self.log,
                                   host_wire=wire_path is not None)
            if wire_path is not None:
                self.wire = HostWire(wire_path, self.core, self.log.getChild("wire"))
                self.core.wake_host = self.wire.kick
        except Exception:
            if getattr(self, "core", None) is not None:
                self.core.close()
            self.server.close()
            raise
        self.server.on_doorbell = self.core.doorbell
        self.server.on_connect = self._on_connect
        self.core.power_on()

    def _on_connect(self, peer_id: int) -> None:
        # A new QEMU is a new machine: it finds the device as at power-on.
        self.core.power_on()

    async def start(self) -> None:
        await self.server.start()
        if self.wire is not None:
            await self.wire.start()

    def close(self) -> None:
        if self.wire is not None:
            self.wire.close()
        self.core.close()
        self.server.close()


async def serve(sockets: list, ram_path: str, ram_size: int, fifo_depth: int,
                stop: asyncio.Event, ready_out: TextIO = sys.stdout) -> None:
    """Serve a device on each socket until ``stop`` is set; clean up everything after.

    Each item of ``sockets`` is a path (a loopback device) or ``(path, wire_path)`` (a device
    wired to the host on ``wire_path``; ``None`` for loopback).
    """
    ram = open_ram_file(ram_path, ram_size)
    mem = GuestMemory(ram, ram_size)
    services: list[DeviceService] = []
    try:
        for spec in sockets:
            path, wire_path = (spec, None) if isinstance(spec, str) else spec
            svc = DeviceService(path, mem, fifo_depth, wire_path=wire_path)
            services.append(svc)
            await svc.start()
        ready_out.write("READY\n")
        ready_out.flush()
        await stop.wait()
    finally:
        for svc in reversed(services):
            svc.close()
        mem.close()
        try:
            ram.close()
        except BufferError:
            logging.getLogger(LOGGER_NAME).warning("guest RAM mapping still in use at exit")

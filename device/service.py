"""Glue: one FIFO peripheral = an :class:`IvshmemServer` + a :class:`FifoDevice` over its BAR2
(+ a :class:`HostWire` when the device is wired to the host).

:func:`serve` runs any number of them in one event loop, all sharing one guest RAM mapping,
with at most one QMP monitor (:class:`~device.qmp.QmpServer` + :class:`~device.monitor.Monitor`)
for all of them; prints ``READY`` once every socket (wire and QMP sockets included) listens, and
returns when ``stop`` is set.

The loop's own error reports (asyncio's "socket.accept() out of system resource" when the
QMP listener meets EMFILE: asyncio then retries every second) go to the model's log, without a
traceback and rate limited.

The service gives the core what it must not own itself: a timer (``schedule`` -> ``tick`` via
``loop.call_later``, for delayed completions) and an event sink (``emit`` -> the monitor's
events, with the device's index added).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from . import regs
from .core import FifoDevice
from .faults import FaultSet
from .guestmem import GuestMemory, open_ram_file
from .ivshmem import SERVER_PEER_ID, IvshmemServer
from .listener import OUT_OF_RESOURCES
from .monitor import Monitor
from .qmp import QmpServer
from .ratelimit import LogLimiter
from .wire import HostWire

__all__ = ["DeviceService", "serve", "LOGGER_NAME"]

LOGGER_NAME = "fifolab.device"


class DeviceService:
    """One device on one socket; wired to the host on ``wire_path`` if given."""

    def __init__(self, path: str, mem: GuestMemory, fifo_depth: int,
                 logger: logging.Logger | None = None, wire_path: str | None = None,
                 index: int = 0, fault_ids: Iterator[int] | None = None) -> None:
        self.path = path
        self.wire_path = wire_path
        self.index = index
        self.events: Callable[[str, dict], None] | None = None    # the monitor's emit
        self.wire: HostWire | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.log = logger or logging.getLogger(LOGGER_NAME).getChild(
            os.path.basename(path).replace(".", "_"))
        self.server = IvshmemServer(path, shm_size=regs.BAR2_SIZE,
                                    num_vectors=regs.NUM_VECTORS, logger=self.log)
        try:
            self.core = FifoDevice(self.server.shm, mem, fifo_depth, peer_id=SERVER_PEER_ID,
                                   raise_vector=self.server.raise_vector, logger=self.log,
                                   host_wire=wire_path is not None,
                                   faults=FaultSet(fault_ids), clock=time.monotonic,
                                   schedule=self._schedule, emit=self._emit)
            if wire_path is not None:
                self.wire = HostWire(wire_path, self.core, self.log.getChild("wire"))
                self.core.wake_host = self.wire.kick
                self.wire.emit = self._emit
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

    def _emit(self, name: str, data: dict) -> None:
        if self.events is not None:
            self.events(name, {"device": self.index, **data})

    def _schedule(self, when: float) -> None:
        """The core wants :meth:`FifoDevice.tick` at ``time.monotonic() >= when``."""
        loop = self._loop or asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(max(0.0, when - time.monotonic()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.core.tick()
        except Exception:                       # the device must outlive a model bug
            self.log.exception("delayed completion failed")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.server.start()
        if self.wire is not None:
            await self.wire.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.wire is not None:
            self.wire.close()
        self.core.close()
        self.server.close()


async def serve(sockets: list, ram_path: str, ram_size: int, fifo_depth: int,
                stop: asyncio.Event, ready_out: TextIO = sys.stdout,
                qmp_path: str | None = None) -> None:
    """Serve a device on each socket until ``stop`` is set; clean up everything after.

    Each item of ``sockets`` is a path (a loopback device) or ``(path, wire_path)`` (a device
    wired to the host on ``wire_path``; ``None`` for loopback).  With ``qmp_path``, a QMP
    monitor for all of them listens there.
    """
    ram = open_ram_file(ram_path, ram_size)
    mem = GuestMemory(ram, ram_size)
    services: list[DeviceService] = []
    qmp: QmpServer | None = None
    ids = itertools.count(1)
    loop = asyncio.get_running_loop()
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(_loop_errors(LogLimiter(logging.getLogger(LOGGER_NAME))))
    try:
        for index, spec in enumerate(sockets):
            path, wire_path = (spec, None) if isinstance(spec, str) else spec
            svc = DeviceService(path, mem, fifo_depth, wire_path=wire_path, index=index,
                                fault_ids=ids)
            services.append(svc)
            await svc.start()
        if qmp_path is not None:
            log = logging.getLogger(LOGGER_NAME).getChild("qmp")
            monitor = Monitor(services, ids=ids.__next__, logger=log)
            qmp = QmpServer(qmp_path, monitor.table, logger=log)
            await qmp.start()
            monitor.emit = qmp.emit
            for svc in services:
                svc.events = qmp.emit
        ready_out.write("READY\n")
        ready_out.flush()
        await stop.wait()
    finally:
        if qmp is not None:
            await qmp.close()
        for svc in reversed(services):
            svc.close()
        mem.close()
        loop.set_exception_handler(old_handler)
        try:
            ram.close()
        except BufferError:
            logging.getLogger(LOGGER_NAME).warning("guest RAM mapping still in use at exit")


def _loop_errors(limiter: LogLimiter):
    """A loop exception handler: lack of resources is a rate-limited line, the rest as
    asyncio reports it."""
    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        err = context.get("exception")
        if isinstance(err, OSError) and err.errno in OUT_OF_RESOURCES:
            limiter.warning("loop resources", "%s: %s", context.get("message"), err)
        else:
            loop.default_exception_handler(context)
    return handler

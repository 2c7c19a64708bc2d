"""The model's QMP commands: queries and fault injection over the devices of one process.

A :class:`Monitor` builds a :class:`~device.commands.CommandTable` for a list of devices
(:class:`~device.service.DeviceService` or anything with ``core``, ``wire``, ``server``,
``path``, ``wire_path``); :class:`~device.qmp.QmpServer` serves it.  Every device command takes
an optional ``device`` (index in ``--socket`` order, default 0).

The fault commands are built from :data:`device.faults.SPECS` -- one generic handler, the
arguments of each kind from its spec -- plus a few actions that are not armed faults::

    fault-dma-error fault-corrupt fault-slow fault-hostile fault-lost-irq   armed (count,
    fault-reset fault-spurious-irq (when=doorbell)                           probability,
                                                                             seed)
    fault-reset fault-spurious-irq (when=now, the default)                  at once
    fault-stall, fault-resume (alias resume), fault-flood                   actions
    fault-list, fault-clear                                                 bookkeeping

Every integer and number argument has a maximum (a request is bounded work: a count of
10**12 spurious messages would loop inside the event loop for ever).  The fault schemas in
``device/faults.py`` bound what is a size or a duration; the rest is bounded here, where the
arguments are validated against their maxima, and :meth:`Monitor._register` refuses a
command with an unbounded one.  ``query-commands`` lists ``min`` and ``max``.

``docs/faults.md`` has the user's view.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from . import regs
from .commands import ERR_DEVICE_NOT_FOUND, Arg, CommandTable
from .errors import CommandError, FaultError
from .faults import COMMON_ARGS, FLOOD_PATTERNS, MAX_COUNT, MAX_SEED, SPECS, Flood, Hook, Kind
from .qmp import package

__all__ = ["Monitor", "EVENTS", "MAX_NOW"]

MAX_NOW = 1000              # spurious messages sent at once (when=now): ~2 ms of the loop
MAX_DEVICE = 255
MAX_ID = (1 << 63) - 1

EVENTS = ("FAULT_FIRED", "DMA_ERROR", "DEVICE_RESET", "STATE_CHANGE", "HOST_WIRE",
          "FLOOD_DONE")

_DEVICE = Arg("device", "int", default=0, min=0, max=MAX_DEVICE,
              doc="device index (--socket order)")
_WHEN = Arg("when", "str", default="now", choices=("now", "doorbell"),
            doc="now: at once; doorbell: armed, at the start of the next doorbell(s)")


class Monitor:
    """Commands over ``devices``; ``emit(name, data)`` sends an event (set by the service)."""

    def __init__(self, devices: Sequence[Any], ids: Callable[[], int] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.devices = devices
        self.log = logger or logging.getLogger("fifolab.monitor")
        self._ids = ids or itertools.count(1000).__next__
        self.emit: Callable[[str, dict], None] = lambda name, data: None
        self.table = CommandTable()
        self._register()

    # ---- helpers ----

    def _device(self, args: dict) -> Any:
        i = args["device"]
        if i >= len(self.devices):
            raise CommandError(f"Device {i} not found: this model serves {len(self.devices)} "
                               f"device(s), 0..{len(self.devices) - 1}", ERR_DEVICE_NOT_FOUND)
        return self.devices[i]

    def _fired_now(self, index: int, kind: str, **details: Any) -> int:
        fid = self._ids()
        self.emit("FAULT_FIRED", {"device": index, "id": fid, "kind": kind, "remaining": 0,
                                  **details})
        return fid

    # ---- the table ----

    def _register(self) -> None:
        def command(name: str, *args: Arg, **kw: Any):
            return self.table.command(name, *self._bounded(args), **kw)

        command("qmp_capabilities", Arg("enable", "array", doc="capabilities to enable"),
                negotiation=True)(self.qmp_capabilities)
        command("query-version")(self.query_version)
        command("query-commands")(self.query_commands)
        command("query-events")(self.query_events)
        command("query-status")(self.query_status)
        command("query-fifolab", _DEVICE)(self.query_fifolab)
        command("fault-list", _DEVICE)(self.fault_list)
        command("fault-clear", _DEVICE,
                Arg("id", "int", min=0, max=MAX_ID,
                    doc="the fault to disarm (default: all)"))(
                    self.fault_clear)
        for spec in SPECS.values():
            extra = (_WHEN,) if spec.hook is Hook.DOORBELL else ()
            command(f"fault-{spec.kind.value}", _DEVICE,
                    *spec.params, *COMMON_ARGS, *extra,
                    doc=spec.doc)(self._arm_handler(spec.kind))
        command("set-coalescing", _DEVICE,
                Arg("enabled", "bool", required=True,
                    doc="false: a message after every used entry, pending or not, as a "
                        "device without batching or coalescing would send (to measure what "
                        "they save)"))(
                    self.set_coalescing)
        command("fault-stall", _DEVICE)(self.fault_stall)
        command("fault-resume", _DEVICE)(self.fault_resume)
        command("resume", _DEVICE, doc="alias of fault-resume")(self.fault_resume)
        command("fault-flood", _DEVICE,
                Arg("bytes", "int", min=1, max=1 << 32,
                    doc="bytes to push (default: 4 x FIFO depth)"),
                Arg("pattern", "str", default="counter", choices=FLOOD_PATTERNS),
                Arg("seed", "int", min=0, max=MAX_SEED))(self.fault_flood)

    @staticmethod
    def _bounded(args: tuple[Arg, ...]) -> tuple[Arg, ...]:
        """``args``, or a ValueError for a numeric argument without a maximum."""
        for a in args:
            if a.type in ("int", "number") and a.max is None:
                raise ValueError(f"argument {a.name} has no maximum: give it one")
        return args

    # ---- handlers: QMP basics ----

    def qmp_capabilities(self, a: dict) -> dict:
        for cap in a["enable"] or ():
            raise CommandError(f"Capability '{cap}' not available")
        return {}

    def query_version(self, a: dict) -> dict:
        return {"qemu": {"major": regs.VERSION_VALUE >> 16,
                         "minor": regs.VERSION_VALUE & 0xFFFF, "micro": 0},
                "package": package()}

    def query_commands(self, a: dict) -> list:
        return [c.describe() for c in self.table]

    def query_events(self, a: dict) -> list:
        return [{"name": name} for name in EVENTS]

    def query_status(self, a: dict) -> dict:
        """QEMU's shape (running/status), plus one line per device."""
        devs = [{"device": i, "socket": d.path, "state": d.core.state,
                 "ready": d.core.enabled, "stalled": d.core.stalled,
                 "peer": d.server.client_id} for i, d in enumerate(self.devices)]
        stalled = any(d["stalled"] for d in devs)
        return {"running": not stalled, "singlestep": False,
                "status": "paused" if stalled else "running", "devices": devs}

    def query_fifolab(self, a: dict) -> dict:
        d = self._device(a)
        out = {"device": a["device"], "socket": d.path, "peer": d.server.client_id,
               **d.core.snapshot()}
        w = d.wire
        out["host_wire"] = None if w is None else {
            "path": d.wire_path, "connected": w.connected, "bytes_in": w.bytes_in,
            "bytes_out": w.bytes_out, "held": w.held,
            "tx_pending": d.core.tx_fifo_level,
            "flood": w.flood.describe() if w.flood is not None else None}
        return out

    # ---- handlers: faults ----

    def fault_list(self, a: dict) -> list:
        d = self._device(a)
        out = d.core.faults.describe()
        if d.wire is not None and d.wire.flood is not None and not d.wire.flood.done:
            out.append(d.wire.flood.describe())
        return out

    def fault_clear(self, a: dict) -> dict:
        d = self._device(a)
        fid = a["id"]
        cleared = []
        flood = d.wire.flood if d.wire is not None else None
        if flood is not None and not flood.done and fid in (None, flood.id):
            d.wire.stop_flood()
            cleared.append(flood.id)
            if fid is not None:
                return {"cleared": cleared}
        try:
            cleared[:0] = [f.id for f in d.core.faults.clear(fid)]
        except FaultError as err:
            raise CommandError(str(err)) from None
        return {"cleared": cleared}

    def _arm_handler(self, kind: Kind) -> Callable[[dict], dict]:
        spec = SPECS[kind]

        def arm(a: dict) -> dict:
            d = self._device(a)
            params = {p.name: a[p.name] for p in spec.params}
            if spec.hook is Hook.DOORBELL and a["when"] == "now":
                return self._now(a["device"], d, kind, params, a["count"])
            try:
                f = d.core.faults.arm(kind, count=a["count"], probability=a["probability"],
                                      seed=a["seed"], **params)
            except FaultError as err:
                raise CommandError(str(err)) from None
            self.log.info("device %d: fault %d armed: %s", a["device"], f.id, f.describe())
            return f.describe()
        return arm

    def _now(self, index: int, d: Any, kind: Kind, params: dict, count: int) -> dict:
        """fault-reset / fault-spurious-irq with when=now: act at once."""
        if kind is Kind.RESET:
            fid = self._fired_now(index, kind.value)
            d.core.device_reset()
            return {"id": fid, "kind": kind.value, "fired": 1}
        if count < 1:
            raise CommandError("count=0 (until cleared) needs when=doorbell")
        if count > MAX_NOW:
            raise CommandError(f"Parameter 'count' expects a value in [1, {MAX_NOW}] with "
                               f"when=now (sent at once; when=doorbell takes up to "
                               f"{MAX_COUNT})")
        vector = params.get("vector") or 0
        fid = self._fired_now(index, kind.value, vector=vector, count=count)
        d.core.send_spurious(vector, count)
        return {"id": fid, "kind": kind.value, "fired": count}

    def set_coalescing(self, a: dict) -> dict:
        d = self._device(a)
        was = d.core.coalesce
        d.core.coalesce = a["enabled"]
        return {"enabled": d.core.coalesce, "changed": was != d.core.coalesce}

    def fault_stall(self, a: dict) -> dict:
        d = self._device(a)
        return {"stalled": True, "changed": d.core.stall()}

    def fault_resume(self, a: dict) -> dict:
        d = self._device(a)
        was = d.core.stalled
        rings = d.core.resume()
        return {"stalled": False, "changed": was, "doorbells": rings}

    def fault_flood(self, a: dict) -> dict:
        d = self._device(a)
        if d.wire is None:
            raise CommandError(f"device {a['device']} is not wired to the host (serve it "
                               "with --socket PATH:WIREPATH)")
        total = a["bytes"] or 4 * d.core.fifo_depth
        try:
            flood = Flood(self._ids(), total, a["pattern"], a["seed"])
            d.wire.start_flood(flood)
        except FaultError as err:
            raise CommandError(str(err)) from None
        self.emit("FAULT_FIRED", {"device": a["device"], "id": flood.id, "kind": "flood",
                                  "remaining": 0, "bytes": total})
        return flood.describe()

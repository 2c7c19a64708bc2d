"""The guest command channel: qemu-guest-agent on a virtio-serial port.  ``guest-exec`` with
captured output runs a shell command, ``guest-file-*`` copies files in.  qemu.qmp's QMPClient
talks to it with the greeting and negotiation off (the agent has neither).

``GuestAgent`` holds the connection and the asynchronous operations; the lab runs them on its
event loop and bounds them (a wedged guest stops answering).  ``alive`` raises if the lab died,
``console`` is the kernel log's tail for a timeout's message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import shlex
import time
from collections.abc import Callable
from typing import Any

from qemu.qmp import QMPClient

from .errors import GuestTimeout, LabError


@dataclasses.dataclass
class GuestJob:
    cmd: str
    pid: int
    started: float


@dataclasses.dataclass
class ExecResult:
    cmd: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> ExecResult:
        if self.returncode != 0:
            raise LabError(f"guest command failed (exit {self.returncode}): {self.cmd}\n"
                           f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")
        return self


class GuestAgent:
    """One connection to the guest agent; see the module docstring."""

    def __init__(self, alive: Callable[[], None], console: Callable[[], str]):
        self._alive = alive
        self._console = console
        self.client: QMPClient | None = None

    def new_client(self) -> QMPClient:
        """A fresh client (after a reboot the old connection is gone); connect it."""
        self.client = QMPClient("fifolab-qga")
        self.client.await_greeting = False
        self.client.negotiate = False
        return self.client

    async def _execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """One command to the agent; its reply is whatever JSON the command returns."""
        assert self.client is not None, "the guest agent is not connected"
        return await self.client.execute(cmd, args)

    async def sync(self, token: int, within: float) -> bool:
        """Whether the agent echoes ``token`` within ``within`` seconds (it answers once the
        guest has booted; replies to earlier, timed-out syncs are told apart by token)."""
        try:
            got = await asyncio.wait_for(self._execute("guest-sync", {"id": token}), within)
        except TimeoutError:
            return False
        return got == token

    async def status(self, job: GuestJob) -> dict[str, Any]:
        return await self._execute("guest-exec-status", {"pid": job.pid})

    async def exec(self, cmd: str, timeout: float, input: bytes | None) -> ExecResult:
        job = await self.start(cmd, input)
        return await self.wait(job, timeout)

    async def start(self, cmd: str, input: bytes | None) -> GuestJob:
        args: dict[str, Any] = {"path": "/bin/sh", "arg": ["-c", cmd], "capture-output": True}
        if input is not None:
            args["input-data"] = base64.b64encode(input).decode()
        pid = (await self._execute("guest-exec", args))["pid"]
        return GuestJob(cmd, pid, time.monotonic())

    async def wait(self, job: GuestJob, timeout: float) -> ExecResult:
        delay = 0.005
        while True:
            st = await self.status(job)
            if st.get("exited"):
                break
            self._alive()
            if time.monotonic() - job.started > timeout:
                with contextlib.suppress(Exception):
                    await self._execute("guest-exec", {
                        "path": "/bin/kill", "arg": ["-9", str(job.pid)]})
                raise GuestTimeout(f"guest command did not finish in {timeout:.0f} s: "
                                   f"{job.cmd}\n--- console (last lines)\n{self._console()}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
        err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
        rc = st.get("exitcode")
        if rc is None:
            rc = 128 + st.get("signal", 0)
        return ExecResult(job.cmd, rc, out, err, time.monotonic() - job.started)

    async def put(self, data: bytes, guest: str) -> None:
        d = os.path.dirname(guest)
        if d:
            await self.exec(f"mkdir -p {shlex.quote(d)}", 30, None)
        handle = await self._execute("guest-file-open", {"path": guest, "mode": "w"})
        try:
            chunk = 1 << 20
            for off in range(0, len(data), chunk):
                await self._execute("guest-file-write", {
                    "handle": handle,
                    "buf-b64": base64.b64encode(data[off:off + chunk]).decode()})
        finally:
            await self._execute("guest-file-close", {"handle": handle})

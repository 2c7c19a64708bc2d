"""The device model's side of a lab: its process (``python -m device``: one ivshmem socket per
device, wired devices with a host socket too, the guest RAM file it maps for DMA, its log) and
a client of its own QMP monitor (faults, queries, events).

The model prints READY on stdout once every socket listens; QEMU may connect from then on.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemu.qmp import EventListener, QMPClient

from images import build as images
from .errors import LabError
from .machine import die_with_parent

if TYPE_CHECKING:                        # pragma: no cover
    from .lab import LabConfig


def model_command(cfg: LabConfig, run_dir: Path, ram: Path, sockets: list[Path]) -> list[str]:
    """The model's command line: device N listens on ``sockets[N]``, a wired one also on
    ``run_dir/wireN.sock``; the log and monitor live in ``run_dir``."""
    cmd = [sys.executable, "-m", "device", "--ram-path", str(ram),
           "--ram-size", str(cfg.memory_mb << 20),
           "--fifo-depth", str(cfg.fifo_depth),
           "--log", str(run_dir / "model.log"),
           "--qmp", str(run_dir / "model-qmp.sock")]
    if cfg.model_debug:
        cmd.append("--debug")
    for i, sock in enumerate(sockets):
        cmd += ["--socket", f"{sock}:{run_dir / f'wire{i}.sock'}" if i in cfg.wired
                else str(sock)]
    return cmd


def start_model(cmd: list[str], log_path: Path, timeout: float = 20.0) -> subprocess.Popen:
    """Start the model and wait for its READY; raise (with its output and log) if it exits or
    is not ready within ``timeout``.  The process dies with the harness, and with a start that
    fails or is interrupted."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=images.REPO,
                            start_new_session=True, preexec_fn=die_with_parent)
    try:
        _wait_ready(proc, log_path, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        raise
    return proc


def _wait_ready(proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    assert proc.stdout
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
            if b"READY" in buf:
                return
        if proc.poll() is not None:
            raise LabError(f"the device model exited (status {proc.returncode}) "
                           f"before it was ready:\n{buf.decode(errors='replace')}"
                           f"{log_tail(log_path)}")
        time.sleep(0.02)
    raise LabError(f"the device model was not ready within {timeout:.0f} s:\n"
                   f"{buf.decode(errors='replace')}{log_tail(log_path)}")


def log_tail(log_path: Path | None, n: int = 30) -> str:
    """The model log's last ``n`` lines, headed for an error message ("" if there is none)."""
    if log_path is None:
        return ""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except (OSError, AttributeError):
        return ""
    return "\n--- device model log (last lines)\n" + "\n".join(lines[-n:])


class ModelMonitor:
    """A client of the model's QMP monitor, connected on first use.  Every event that arrives
    from then on is kept until ``wait_event`` consumes it or ``drain`` returns it."""

    def __init__(self, sock: Path):
        self.sock = sock
        self.client: QMPClient | None = None
        self._events = EventListener()

    async def execute(self, cmd: str, args: dict | None = None) -> Any:
        if self.client is None:
            self.client = QMPClient("fifolab-model")
            self.client.register_listener(self._events)
            await self.client.connect(str(self.sock))
        return await self.client.execute(cmd, args)

    async def wait_event(self, name: str, match: dict[str, Any]) -> dict:
        """The data of the next event ``name`` whose data contains ``match``."""
        if self.client is None:
            await self.execute("query-version")
        while True:
            ev = await self._events.get()
            # ignored: an event's data is a JSON object (qemu.qmp types the value object)
            data: dict[str, Any] = ev.get("data", {})  # type: ignore[assignment]
            if ev["event"] == name and all(data.get(k) == v for k, v in match.items()):
                return data

    async def drain(self, wait: float = 0.0) -> list[dict]:
        """Every event kept so far, oldest first, after ``wait`` seconds in which more may
        arrive."""
        if self.client is None:
            await self.execute("query-version")
        await asyncio.sleep(wait)
        return [dict(ev) for ev in self._events.clear()]

    async def disconnect(self) -> None:
        if self.client is not None:
            await self.client.disconnect()
            self.client = None
